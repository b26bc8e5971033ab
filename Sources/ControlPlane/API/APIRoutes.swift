import Foundation
import Hummingbird
import Shared

/// What a caller must be allowed to do to use a route. Every route declares
/// one when it is registered (`APIRouteBuilder.add`), so none can be added
/// without; `Authorizer` decides, in one place, who holds it.
public enum Permission: Sendable, Hashable, CustomStringConvertible {
    /// No authentication: liveness, readiness, the API document, login.
    case publicAccess
    /// Any authenticated user or service account (not agents).
    case authenticated
    /// Any authenticated principal, whatever its token's audience: who a token belongs to (`whoami`).
    case identity
    /// The instance role `admin`.
    case instanceAdmin
    /// The principal named by the path's `{principal}`, or an admin.
    case selfOrAdmin
    /// At least `role` in the path's `{workspace}` (admins hold every role).
    case workspace(WorkspaceRole)
    /// Admins; owners of the workspace named by the `workspace` query parameter.
    case auditRead
    /// Agents, for the agent protocol (`/v1/agent/…`): each acts for the workspace its token belongs to.
    case agentProtocol
    /// Admins, and tokens made for scraping (audience `metrics`): the control plane's `/metrics`.
    case metrics

    public var description: String {
        switch self {
        case .publicAccess: return "public"
        case .authenticated: return "authenticated"
        case .identity: return "identity"
        case .instanceAdmin: return "admin"
        case .selfOrAdmin: return "self-or-admin"
        case .workspace(let role): return "workspace:\(role.rawValue)"
        case .auditRead: return "audit"
        case .agentProtocol: return "agent"
        case .metrics: return "metrics"
        }
    }
}

/// A registered route: method, path in OpenAPI form, and the permission it needs.
public struct RouteDescriptor: Sendable, Hashable, CustomStringConvertible {
    /// The HTTP method, such as `GET`.
    public var method: String
    /// The path, with `{name}` parameters.
    public var path: String
    /// The permission required.
    public var permission: Permission

    public var description: String { "\(method) \(path)" }
}

/// Registers routes on a Hummingbird router and keeps the table of what was
/// registered, with each route's permission.
struct APIRouteBuilder {
    typealias Context = ControlPlaneRequestContext
    typealias Handler = @Sendable (Request, Context) async throws -> Response

    let router: Router<Context>
    private(set) var descriptors: [RouteDescriptor] = []

    init(router: Router<Context>) { self.router = router }

    /// Registers `handler` for `method path`; `path` uses `{name}` parameters.
    /// The handler runs only once `Authorizer` allows the caller `permission`.
    mutating func add(_ method: HTTPRequest.Method, _ path: String, permission: Permission, _ handler: @escaping Handler) {
        descriptors.append(RouteDescriptor(method: method.rawValue, path: path, permission: permission))
        let hummingbirdPath = path.split(separator: "/", omittingEmptySubsequences: false).map { segment in
            segment.hasPrefix("{") && segment.hasSuffix("}") ? ":" + segment.dropFirst().dropLast() : String(segment)
        }.joined(separator: "/")
        router.on(RouterPath(hummingbirdPath), method: method) { request, context in
            // Decode path parameters once, so authorization, handler and audit see the same names.
            var context = context
            var decoded = Parameters()
            for (key, value) in context.parameters {
                decoded[key] = Substring(String(value).removingPercentEncoding ?? String(value))
            }
            context.coreContext.parameters = decoded
            let fromQuery: String? = permission == .auditRead ? request.uri.queryParameters.get("workspace").map { String($0) } : nil
            let workspace = context.parameters.get("workspace") ?? fromQuery
            try Authorizer.require(
                permission, caller: context.caller, workspace: workspace, targetPrincipal: context.parameters.get("principal"))
            return try await handler(request, context)
        }
    }
}

/// Helpers shared by the route handlers.
enum APIResponse {
    /// A JSON response.
    static func json<Value: Encodable>(_ value: Value, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try APICoding.makeEncoder().encode(value)
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// An empty response.
    static func empty(_ status: HTTPResponse.Status) -> Response { Response(status: status) }
}

/// Reading and checking path and query parameters.
extension ControlPlaneRequestContext {
    func pathParameter(_ name: String) throws -> String {
        guard let value = parameters.get(name), !value.isEmpty else {
            throw APIProblem.badRequest(field: name, "missing path parameter '\(name)'")
        }
        return value
    }

    func collection() throws -> ObjectCollection {
        let text = try pathParameter("collection")
        guard let collection = ObjectCollection(rawValue: text) else {
            throw APIProblem(
                status: .notFound, code: "not-found", title: "Not found",
                detail: "unknown collection '\(text)'; collections are " + ObjectCollection.allCases.map(\.rawValue).joined(separator: ", "),
                field: "collection")
        }
        return collection
    }
}

extension Request {
    /// Decodes a JSON body, keeping decoding errors as they are so the
    /// problem names the offending field (Hummingbird's `decode(as:)` turns
    /// them into a bare 400).
    /// The body as `Body`, refusing (400, naming the field) what this API does not declare:
    /// every body is read as strictly as the agent protocol's (`decodeStrictBody`).
    func decodeBody<Body: Codable>(as type: Body.Type, context: ControlPlaneRequestContext) async throws -> Body {
        try await decodeStrictBody(as: type, context: context)
    }

    /// 400 for a body whose strings hold control characters (`\u0000`…): PostgreSQL refuses NUL in text.
    static func refuseControlCharacters(_ bytes: some Collection<UInt8>) throws {
        guard ControlCharacters.escaped(in: bytes) else { return }
        // Named by the field that holds one, when the body reads as JSON.
        let field = (try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]))
            .flatMap { ControlCharacters.firstField(in: $0, path: "") } ?? "body"
        throw APIProblem.badRequest(field: field, "'\(field)' holds control characters (such as \\u0000)")
    }

    func queryInteger(_ name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = uri.queryParameters.get(name) else { return value }
        guard let number = Int(text), range.contains(number) else {
            throw APIProblem.badRequest(field: name, "'\(name)' must be a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    func queryString(_ name: String) -> String? {
        guard let value = uri.queryParameters.get(name), !value.isEmpty else { return nil }
        return value
    }

    func queryBool(_ name: String) throws -> Bool {
        guard let text = queryString(name) else { return false }
        switch text.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw APIProblem.badRequest(field: name, "'\(name)' must be true or false")
        }
    }
}

extension Request {
    /// Decodes a JSON body that may hold only the fields `Body` declares: an
    /// unknown field anywhere is refused with a problem naming it. The agent
    /// protocol uses this, so nothing undeclared crosses the boundary.
    func decodeStrictBody<Body: Codable>(as type: Body.Type, context: ControlPlaneRequestContext) async throws -> Body {
        let buffer = try await body.collect(upTo: context.maxUploadSize)
        try Self.refuseControlCharacters(buffer.readableBytesView)
        let data = Data(buffer.readableBytesView)
        let value = try context.requestDecoder.decode(Body.self, from: data)
        let sent = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        let encoded = try JSONSerialization.jsonObject(with: APICoding.makeEncoder().encode(value), options: [.fragmentsAllowed])
        // Optional fields left empty are not encoded: they are put back as nulls, so a null is
        // accepted for a declared field and refused for any other.
        let understood = Self.withNulls(encoded, of: value)
        if let unknown = Self.firstUnknownField(sent: sent, understood: understood, path: "") {
            throw APIProblem.badRequest(field: unknown, "unknown field '\(unknown)': only the fields this API declares are accepted")
        }
        return value
    }

    /// `json` (a value as encoded) with a null for each of the value's optional
    /// properties that holds none (snake_case, as the API's encoder names them).
    static func withNulls(_ json: Any, of value: Any) -> Any {
        let mirror = Mirror(reflecting: value)
        if mirror.displayStyle == .optional {
            return mirror.children.first.map { withNulls(json, of: $0.value) } ?? json
        }
        if var object = json as? [String: Any], mirror.displayStyle == .struct || mirror.displayStyle == .class {
            for child in mirror.children {
                guard let label = child.label else { continue }
                let key = snakeCase(label.hasPrefix("_") ? String(label.dropFirst()) : label)
                let property = Mirror(reflecting: child.value)
                if property.displayStyle == .optional, property.children.isEmpty {
                    if object[key] == nil { object[key] = NSNull() }
                } else if let nested = object[key] {
                    object[key] = withNulls(nested, of: child.value)
                }
            }
            return object
        }
        if let array = json as? [Any], let values = value as? [Any], array.count == values.count {
            return zip(array, values).map { withNulls($0, of: $1) }
        }
        return json
    }

    /// `leaseToken` → `lease_token`, as `JSONEncoder.KeyEncodingStrategy.convertToSnakeCase` writes it.
    static func snakeCase(_ name: String) -> String {
        let characters = Array(name)
        var result = ""
        for (index, character) in characters.enumerated() {
            if character.isUppercase, index > 0 {
                // A word starts at an upper-case letter after a lower-case one, or at the last capital of a run before lower case (`URLPath`).
                let previous = characters[index - 1], next = index + 1 < characters.count ? characters[index + 1] : nil
                if !previous.isUppercase || (next?.isLowercase ?? false) { result.append("_") }
            }
            result.append(contentsOf: character.lowercased())
        }
        return result
    }

    /// The path of the first field of `sent` that decoding did not keep.
    static func firstUnknownField(sent: Any, understood: Any?, path: String) -> String? {
        switch sent {
        case let object as [String: Any]:
            let kept = understood as? [String: Any] ?? [:]
            for key in object.keys.sorted() {
                let child = path.isEmpty ? key : "\(path).\(key)"
                guard let value = object[key] else { continue }
                guard let keptValue = kept[key] else { return child }
                if value is NSNull { continue }
                if let unknown = firstUnknownField(sent: value, understood: keptValue, path: child) { return unknown }
            }
            return nil
        case let array as [Any]:
            let kept = understood as? [Any] ?? []
            for (index, element) in array.enumerated() {
                if let unknown = firstUnknownField(sent: element, understood: index < kept.count ? kept[index] : nil, path: "\(path)[\(index)]") {
                    return unknown
                }
            }
            return nil
        default:
            return nil
        }
    }
}

import Foundation
import Hummingbird
import HTTPTypes
import Shared
import Synchronization

/// The routes the router knows, by path template and method: filled once the
/// routes are registered, read by `RequestEdgeMiddleware` to tell a wrong
/// method (405, with `Allow`) from a path that does not exist (404).
final class RouteTable: Sendable {
    private let routes = Mutex<[(segments: [Substring], method: String)]>([])

    func set(_ descriptors: [RouteDescriptor]) {
        routes.withLock { $0 = descriptors.map { ($0.path.split(separator: "/"), $0.method) } }
    }

    /// The methods of the routes that would answer `path`, sorted: of the
    /// templates matching it, those the router prefers (a literal segment wins
    /// over a parameter, left to right).
    func methods(matching path: String) -> [String] {
        let segments = path.split(separator: "/")
        return routes.withLock { routes in
            let matching = routes.filter { route in
                route.segments.count == segments.count
                    && zip(route.segments, segments).allSatisfy { template, segment in template.hasPrefix("{") || template == segment }
            }
            func literals(_ route: (segments: [Substring], method: String)) -> [Bool] { route.segments.map { !$0.hasPrefix("{") } }
            guard let best = matching.map(literals).max(by: { $0.lexicographicallyPrecedes($1) { !$0 && $1 } }) else { return [] }
            return Set(matching.filter { literals($0) == best }.map(\.method)).sorted()
        }
    }
}

/// What every request must be before a route sees it: no control characters
/// (NUL included) in its path or query, a JSON body declared as JSON (415
/// otherwise), and a known path asked with one of its methods (405 with
/// `Allow` otherwise, rather than 404).
struct RequestEdgeMiddleware: RouterMiddleware {
    typealias Context = ControlPlaneRequestContext

    let routes: RouteTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if ControlCharacters.contains(path.removingPercentEncoding ?? path) || path.contains("%00") {
            throw APIProblem.badRequest(field: "path", "the path holds control characters")
        }
        if let query = request.uri.query, ControlCharacters.contains(query.removingPercentEncoding ?? query) || query.contains("%00") {
            throw APIProblem.badRequest(field: "query", "the query holds control characters")
        }
        for (name, value) in request.uri.queryParameters {
            if ControlCharacters.contains(String(name)) || ControlCharacters.contains(String(value)) {
                throw APIProblem.badRequest(field: String(name), "'\(name)' holds control characters")
            }
            // A filter given empty is a mistake, not "no filter": leave it out to mean none.
            if value.isEmpty {
                throw APIProblem.badRequest(field: String(name), "'\(name)' is empty; leave it out to mean no filter")
            }
        }
        if [.post, .put, .patch].contains(request.method), Self.hasBody(request), !Self.isJSON(request.headers[.contentType]) {
            throw APIProblem(
                status: .unsupportedMediaType, code: "unsupported-media-type", title: "Unsupported media type",
                detail: "this API takes JSON bodies: send Content-Type: application/json", field: "content-type")
        }
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound && (context.endpointPath ?? "NotFound") == "NotFound" {
            // No route matched (Hummingbird's not-found responder names the endpoint "NotFound").
            let allowed = routes.methods(matching: path)
            guard !allowed.isEmpty, !allowed.contains(request.method.rawValue) else { throw error }
            var problem = APIProblem(
                status: .methodNotAllowed, code: "method-not-allowed", title: "Method not allowed",
                detail: "\(request.method.rawValue) is not a method of \(path); it takes \(allowed.joined(separator: ", "))")
            problem.allow = allowed
            throw problem
        }
    }

    static func hasBody(_ request: Request) -> Bool {
        if let length = request.headers[.contentLength].flatMap(Int.init) { return length > 0 }
        return request.headers[.transferEncoding] != nil
    }

    static func isJSON(_ contentType: String?) -> Bool {
        guard let type = contentType?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased() else { return false }
        return type == "application/json" || (type.hasPrefix("application/") && type.hasSuffix("+json"))
    }
}

/// Control characters (C0 and DEL; tab, line feed and carriage return are
/// allowed in JSON strings), which PostgreSQL refuses in text (NUL) or which
/// no name, path or filter of this API holds.
enum ControlCharacters {
    static func contains(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
    }

    /// The path of the first field (`output.path`, `files[2].contents`) whose
    /// name or string value holds a control character other than tab, line
    /// feed or carriage return.
    static func firstField(in json: Any, path: String) -> String? {
        func bad(_ text: String) -> Bool {
            text.unicodeScalars.contains { ($0.value < 0x20 && ![0x09, 0x0A, 0x0D].contains($0.value)) || $0.value == 0x7F }
        }
        switch json {
        case let text as String:
            return bad(text) ? (path.isEmpty ? "body" : path) : nil
        case let object as [String: Any]:
            for key in object.keys.sorted() {
                let child = path.isEmpty ? key : "\(path).\(key)"
                if bad(key) { return path.isEmpty ? "body" : path }
                if let found = firstField(in: object[key]!, path: child) { return found }
            }
            return nil
        case let array as [Any]:
            for (index, element) in array.enumerated() {
                if let found = firstField(in: element, path: "\(path)[\(index)]") { return found }
            }
            return nil
        default:
            return nil
        }
    }

    /// Whether a JSON text escapes a control character other than tab, line
    /// feed or carriage return (`\u0000`): the one way one reaches a decoded string.
    static func escaped(in json: some Collection<UInt8>) -> Bool {
        let bytes = Array(json)
        var index = 0
        while index < bytes.count {
            guard bytes[index] == UInt8(ascii: "\\") else {
                index += 1
                continue
            }
            // `\b` and `\f` are control characters too (backspace, form feed).
            if index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "b") || bytes[index + 1] == UInt8(ascii: "f") { return true }
            if index + 5 < bytes.count, bytes[index + 1] == UInt8(ascii: "u"),
               let code = UInt32(String(decoding: bytes[(index + 2)...(index + 5)], as: UTF8.self), radix: 16) {
                if (code < 0x20 && code != 0x09 && code != 0x0A && code != 0x0D) || code == 0x7F { return true }
                index += 6
            } else {
                index += 2
            }
        }
        return false
    }
}

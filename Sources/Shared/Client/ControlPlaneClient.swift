import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// Why a call to the control plane failed, when the server did not answer
/// with a problem document.
public enum ControlPlaneClientError: Error, Sendable, CustomStringConvertible {
    /// The server could not be reached.
    case unreachable(url: String, reason: String)
    /// The server answered something that is not the API's (wrong URL?).
    case unexpectedResponse(status: Int, detail: String)

    public var description: String {
        switch self {
        case .unreachable(let url, let reason): return "cannot reach the control plane at \(url): \(reason)"
        case .unexpectedResponse(let status, let detail): return "unexpected answer from the control plane (HTTP \(status)): \(detail)"
        }
    }
}

/// The control plane's REST API, for the CLI and tests. API errors are
/// thrown as `ProblemDetails`.
public struct ControlPlaneClient: Sendable {
    /// The server's base URL, such as `http://127.0.0.1:7070`.
    public let baseURL: String
    /// The bearer token sent with every request, if any.
    public let token: String?
    /// Asked for the token before each request, when given (an agent whose token file may be rotated under it).
    let tokenProvider: (@Sendable () -> String?)?
    let http: HTTPClient
    let timeout: TimeAmount

    /// Creates a client.
    public init(
        baseURL: String, token: String? = nil, httpClient: HTTPClient = ControlPlaneConnection.sharedHTTPClient, timeout: TimeAmount = .seconds(60)
    ) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.tokenProvider = nil
        self.http = httpClient
        self.timeout = timeout
    }

    /// Creates a client that asks `tokenProvider` for the token before each request.
    public init(baseURL: String, tokenProvider: @escaping @Sendable () -> String?, httpClient: HTTPClient, timeout: TimeAmount = .seconds(60)) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = nil
        self.tokenProvider = tokenProvider
        self.http = httpClient
        self.timeout = timeout
    }

    /// The absent body of a request that sends none.
    public struct NoBody: Codable, Sendable {}

    /// Encodes one path segment.
    static func segment(_ text: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove("/")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    /// Sends a request and decodes the JSON answer.
    public func send<Response: Decodable>(
        _ method: HTTPMethod, _ path: String, query: [(String, String?)] = [], body: (some Encodable)? = NoBody?.none,
        as type: Response.Type = Response.self
    ) async throws -> Response {
        let data = try await sendRaw(method, path, query: query, body: body)
        do {
            return try APICoding.makeDecoder().decode(Response.self, from: data)
        } catch {
            throw ControlPlaneClientError.unexpectedResponse(status: 200, detail: "the body does not match the API: \(error)")
        }
    }

    /// Sends a request and returns the body of a successful answer.
    @discardableResult
    public func sendRaw(
        _ method: HTTPMethod, _ path: String, query: [(String, String?)] = [], body: (some Encodable)? = NoBody?.none
    ) async throws -> Data {
        var components = URLComponents(string: baseURL + path)
        // A filter left empty is no filter: the API refuses an empty one (400), so it is not sent.
        let items = query.compactMap { name, value in value.flatMap { $0.isEmpty ? nil : URLQueryItem(name: name, value: $0) } }
        if !items.isEmpty { components?.queryItems = items }
        guard let url = components?.string else {
            throw ControlPlaneClientError.unreachable(url: baseURL, reason: "not a valid URL")
        }
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "Accept", value: "application/json")
        if let token = tokenProvider?() ?? token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try APICoding.makeEncoder().encode(body)))
        }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: timeout)
        } catch {
            throw ControlPlaneClientError.unreachable(url: baseURL, reason: String(describing: error))
        }
        let buffer = try await response.body.collect(upTo: 256 * 1024 * 1024)
        let data = Data(buffer.readableBytesView)
        guard (200..<300).contains(response.status.code) else {
            if let problem = try? APICoding.makeDecoder().decode(ProblemDetails.self, from: data) { throw problem }
            throw ControlPlaneClientError.unexpectedResponse(
                status: Int(response.status.code), detail: String(decoding: data.prefix(200), as: UTF8.self))
        }
        return data
    }

    // MARK: Workspaces

    /// Creates a workspace.
    public func createWorkspace(_ name: String, description: String? = nil) async throws -> WorkspaceResource {
        try await send(.POST, "/v1/workspaces", body: CreateWorkspaceRequest(name: name, description: description))
    }

    /// Every workspace the caller can see, following pages.
    public func workspaces() async throws -> [WorkspaceResource] {
        try await allPages { cursor in
            try await send(.GET, "/v1/workspaces", query: [("cursor", cursor), ("limit", "500")], as: Page<WorkspaceResource>.self)
        }
    }

    /// One workspace.
    public func workspace(_ name: String) async throws -> WorkspaceResource {
        try await send(.GET, "/v1/workspaces/\(Self.segment(name))")
    }

    /// Deletes a workspace without current objects.
    public func deleteWorkspace(_ name: String) async throws {
        try await sendRaw(.DELETE, "/v1/workspaces/\(Self.segment(name))")
    }

    // MARK: Plans and applies

    /// Plans applying `files` to `workspace`.
    public func plan(workspace: String, files: [RepositoryFile]) async throws -> PlanResource {
        try await send(.POST, "/v1/workspaces/\(Self.segment(workspace))/plans", body: PlanRequest(files: files))
    }

    /// Applies a plan.
    public func apply(workspace: String, planID: UUID) async throws -> ApplyResource {
        try await send(.POST, "/v1/workspaces/\(Self.segment(workspace))/applies", body: ApplyRequest(planId: planID))
    }

    /// The workspace's applies, newest first (one page).
    public func applies(workspace: String, limit: Int = 50) async throws -> Page<ApplyResource> {
        try await send(.GET, "/v1/workspaces/\(Self.segment(workspace))/applies", query: [("limit", "\(limit)")])
    }

    // MARK: Registry

    /// Every object of a collection, following pages.
    public func objects(workspace: String, collection: ObjectCollection, includeRetired: Bool = false) async throws -> [ObjectResource] {
        try await allPages { cursor in
            try await send(
                .GET, "/v1/workspaces/\(Self.segment(workspace))/\(collection.rawValue)",
                query: [("cursor", cursor), ("limit", "500"), ("include_retired", includeRetired ? "true" : nil)],
                as: Page<ObjectResource>.self)
        }
    }

    /// One object.
    public func object(workspace: String, collection: ObjectCollection, name: String) async throws -> ObjectResource {
        try await send(.GET, "/v1/workspaces/\(Self.segment(workspace))/\(collection.rawValue)/\(Self.segment(name))")
    }

    /// Every version of an object.
    public func versions(workspace: String, collection: ObjectCollection, name: String) async throws -> [VersionResource] {
        try await send(.GET, "/v1/workspaces/\(Self.segment(workspace))/\(collection.rawValue)/\(Self.segment(name))/versions")
    }

    /// One version of an object.
    public func version(_ number: Int, workspace: String, collection: ObjectCollection, name: String) async throws -> VersionResource {
        try await send(.GET, "/v1/workspaces/\(Self.segment(workspace))/\(collection.rawValue)/\(Self.segment(name))/versions/\(number)")
    }

    /// An object's lineage.
    public func lineage(
        workspace: String, collection: ObjectCollection, name: String, direction: LineageDirection, depth: Int = 3
    ) async throws -> LineageGraph {
        try await send(
            .GET, "/v1/workspaces/\(Self.segment(workspace))/\(collection.rawValue)/\(Self.segment(name))/lineage",
            query: [("direction", direction.rawValue), ("depth", "\(depth)")])
    }

    /// Catalog search.
    public func search(
        workspace: String, text: String, kind: String? = nil, tag: String? = nil, owner: String? = nil
    ) async throws -> [SearchResult] {
        try await send(
            .GET, "/v1/workspaces/\(Self.segment(workspace))/search",
            query: [("q", text), ("kind", kind), ("tag", tag), ("owner", owner)])
    }

    private func allPages<Item>(_ fetch: (String?) async throws -> Page<Item>) async throws -> [Item] {
        var items: [Item] = []
        var cursor: String?
        repeat {
            let page = try await fetch(cursor)
            items += page.items
            cursor = page.nextCursor
        } while cursor != nil
        return items
    }
}

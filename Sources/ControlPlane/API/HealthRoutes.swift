import Foundation
import Hummingbird
import Logging
import PostgresNIO

/// Liveness, readiness and the API document.
struct HealthRoutes {
    let client: PostgresClient
    let migrations: MigrationRunner

    struct Status: Codable { var status: String }

    /// The probes' paths: never authenticated nor throttled.
    static let paths: Set<String> = ["/healthz", "/readyz"]

    func register(on routes: inout APIRouteBuilder) {
        let client = self.client
        let migrations = self.migrations
        routes.add(.get, "/healthz", permission: .publicAccess) { _, _ in
            try APIResponse.json(Status(status: "ok"))
        }
        routes.add(.get, "/readyz", permission: .publicAccess) { _, context in
            let pending: [Int]
            do {
                pending = try await withThrowingTaskGroup(of: [Int].self) { group in
                    group.addTask { try await migrations.pending(on: client, logger: context.logger) }
                    group.addTask {
                        try await Task.sleep(for: .seconds(5))
                        throw CancellationError()
                    }
                    defer { group.cancelAll() }
                    return try await group.next()!
                }
            } catch {
                throw APIProblem(status: .serviceUnavailable, code: "not-ready", title: "Not ready",
                                 detail: "the database is not reachable")
            }
            guard pending.isEmpty else {
                throw APIProblem(status: .serviceUnavailable, code: "not-ready", title: "Not ready",
                                 detail: "schema migrations \(pending.map(String.init).joined(separator: ", ")) are not applied yet")
            }
            return try APIResponse.json(Status(status: "ready"))
        }
        routes.add(.get, "/openapi.json", permission: .publicAccess) { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.json)))
        }
    }
}

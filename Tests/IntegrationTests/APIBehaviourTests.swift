import AsyncHTTPClient
import ControlPlane
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PostgresNIO
import ServiceLifecycle
import Shared
import Testing
import TestSupport

/// Raw HTTP against a running control plane: status, headers and body as sent.
struct RawResponse {
    var status: Int
    var headers: [String: String]
    var body: Data

    static func send(
        _ method: HTTPMethod, _ url: String, body: String? = nil, headers: [String: String] = [:], token: String? = nil
    ) async throws -> RawResponse {
        var headers = headers
        if let token { headers["Authorization"] = "Bearer \(token)" }
        // Bodies are JSON unless a test says otherwise (an empty Content-Type sends none).
        if body != nil, !headers.keys.contains(where: { $0.lowercased() == "content-type" }) { headers["Content-Type"] = "application/json" }
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers where !value.isEmpty { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 64 * 1024 * 1024)
        var collected: [String: String] = [:]
        for header in response.headers { collected[header.name.lowercased()] = header.value }
        return RawResponse(status: Int(response.status.code), headers: collected, body: Data(bytes.readableBytesView))
    }

    var problem: ProblemDetails? { try? APICoding.makeDecoder().decode(ProblemDetails.self, from: body) }
}

@Suite("API behaviour: problems, request ids, limits, pagination")
struct APIBehaviourTests {
    @Test("errors are problem+json with a stable type, a detail and the offending field")
    func problems() async throws {
        try await TestControlPlane.withControlPlane { server in
            let base = server.baseURL
            let missing = try await RawResponse.send(.GET, "\(base)/v1/workspaces/nope", token: server.adminToken)
            #expect(missing.status == 404)
            #expect(missing.headers["content-type"] == "application/problem+json")
            #expect(missing.problem?.type == "urn:larder:problem:workspace-not-found")
            #expect(missing.problem?.field == "workspace")

            let badJSON = try await RawResponse.send(.POST, "\(base)/v1/workspaces", body: "{not json", headers: ["Content-Type": "application/json"], token: server.adminToken)
            #expect(badJSON.status == 400 && badJSON.problem?.code == "invalid-request")
            let missingField = try await RawResponse.send(.POST, "\(base)/v1/workspaces", body: "{}", headers: ["Content-Type": "application/json"], token: server.adminToken)
            #expect(missingField.status == 400 && missingField.problem?.field == "name")
            let badName = try await RawResponse.send(.POST, "\(base)/v1/workspaces", body: #"{"name":"Bad Name"}"#, token: server.adminToken)
            #expect(badName.status == 400 && badName.problem?.field == "name")

            _ = try await server.client.createWorkspace("rides")
            let duplicate = try await RawResponse.send(.POST, "\(base)/v1/workspaces", body: #"{"name":"rides"}"#, token: server.adminToken)
            #expect(duplicate.status == 409 && duplicate.problem?.code == "workspace-exists")

            let broken = RepositoryFixture.example(workspace: "rides").replacing("type: int64\n", with: "type: integer\n", in: "features.yaml")
            await #expect { try await server.client.plan(workspace: "rides", files: broken.apiFiles) } throws: { error in
                guard let problem = error as? ProblemDetails else { return false }
                return problem.status == 422 && problem.code == "invalid-repository"
                    && problem.diagnostics?.first?.code == .unknownType && problem.diagnostics?.first?.location.file == "features.yaml"
            }
            let elsewhere = RepositoryFixture.example(workspace: "other")
            await #expect { try await server.client.plan(workspace: "rides", files: elsewhere.apiFiles) } throws: { error in
                (error as? ProblemDetails)?.code == "workspace-mismatch"
            }
            let unknownCollection = try await RawResponse.send(.GET, "\(base)/v1/workspaces/rides/widgets", token: server.adminToken)
            #expect(unknownCollection.status == 404 && unknownCollection.problem?.field == "collection")
            let badDepth = try await RawResponse.send(.GET, "\(base)/v1/workspaces/rides/sources/trips/lineage?depth=99", token: server.adminToken)
            #expect(badDepth.status == 400 && badDepth.problem?.field == "depth")
            let badPlan = try await RawResponse.send(
                .POST, "\(base)/v1/workspaces/rides/applies", body: #"{"plan_id":"6f1c8a52-8a77-4a57-9d51-0d3d1e0e0d11"}"#,
                token: server.adminToken)
            #expect(badPlan.status == 404 && badPlan.problem?.code == "plan-not-found")
        }
    }

    @Test("request ids are echoed, or generated when absent or unsafe")
    func requestIDs() async throws {
        try await TestControlPlane.withControlPlane { server in
            let echoed = try await RawResponse.send(.GET, "\(server.baseURL)/healthz", headers: ["X-Request-Id": "trace-123"], token: server.adminToken)
            #expect(echoed.headers["x-request-id"] == "trace-123")
            let generated = try await RawResponse.send(.GET, "\(server.baseURL)/v1/workspaces/nope", headers: ["X-Request-Id": "bad id with spaces"], token: server.adminToken)
            let id = try #require(generated.headers["x-request-id"])
            #expect(id != "bad id with spaces" && id.count == 36)
            #expect(generated.problem?.requestId == id)
        }
    }

    @Test("bodies over the size limit are refused with 413")
    func bodyLimit() async throws {
        try await TestControlPlane.withControlPlane { server in
            _ = try await server.client.createWorkspace("rides")
            let huge = String(repeating: "x", count: ControlPlaneRequestContext.maximumBodySize + 1024)
            let response = try await RawResponse.send(
                .POST, "\(server.baseURL)/v1/workspaces/rides/plans", body: #"{"files":[{"path":"a.yaml","contents":"\#(huge)"}]}"#,
                token: server.adminToken)
            #expect(response.status == 413 && response.problem?.code == "payload-too-large")
        }
    }

    @Test("lists page with cursors and nothing is lost or repeated")
    func pagination() async throws {
        try await TestControlPlane.withControlPlane { server in
            for index in 0..<7 { _ = try await server.client.createWorkspace("team-\(index)") }
            var seen: [String] = []
            var cursor: String?
            repeat {
                let page: Page<WorkspaceResource> = try await server.client.send(
                    .GET, "/v1/workspaces", query: [("limit", "3"), ("cursor", cursor)])
                #expect(page.items.count <= 3)
                seen += page.items.map(\.name)
                cursor = page.nextCursor
            } while cursor != nil
            #expect(seen == (0..<7).map { "team-\($0)" })
            let bad = try await RawResponse.send(.GET, "\(server.baseURL)/v1/workspaces?cursor=%%%", token: server.adminToken)
            #expect(bad.status == 400 && bad.problem?.field == "cursor")
        }
    }

    @Test("health, readiness and the OpenAPI document are served")
    func operations() async throws {
        try await TestControlPlane.withControlPlane { server in
            #expect(try await RawResponse.send(.GET, "\(server.baseURL)/healthz").status == 200)
            let ready = try await RawResponse.send(.GET, "\(server.baseURL)/readyz", token: server.adminToken)
            #expect(ready.status == 200)
            let document = try await RawResponse.send(.GET, "\(server.baseURL)/openapi.json", token: server.adminToken)
            let object = try #require(try JSONSerialization.jsonObject(with: document.body) as? [String: Any])
            #expect(object["openapi"] as? String == "3.1.0")
        }
    }

    @Test("a workspace with current objects cannot be deleted; an empty one can")
    func deleteWorkspace() async throws {
        try await TestControlPlane.withControlPlane { server in
            let client = server.client
            _ = try await client.createWorkspace("rides")
            let repository = RepositoryFixture.example(workspace: "rides")
            try await repository.apply(to: "rides", with: client)
            await #expect { try await client.deleteWorkspace("rides") } throws: { ($0 as? ProblemDetails)?.code == "workspace-not-empty" }
            let empty = RepositoryFixture(files: ["larder.yaml": "workspace: rides\n"])
            let retireAll = try await client.plan(workspace: "rides", files: empty.apiFiles)
            #expect(retireAll.changes.allSatisfy { $0.action == .retire })
            _ = try await client.apply(workspace: "rides", planID: retireAll.id)
            try await client.deleteWorkspace("rides")
            await #expect { try await client.workspace("rides") } throws: { ($0 as? ProblemDetails)?.status == 404 }
        }
    }
}

@Suite("Schema migrations")
struct MigrationTests {
    @Test("migrations are idempotent, and two servers starting at once on one database both come up")
    func concurrentStart() async throws {
        let adminToken = APIToken.generate()
        try await TestDatabase.withIsolatedDatabase { url in
            async let first: Int = TestControlPlane.withControlPlane(database: url, adminToken: adminToken) { server in
                try await server.client.workspaces().count
            }
            async let second: Int = TestControlPlane.withControlPlane(database: url, adminToken: adminToken) { server in
                try await server.client.workspaces().count
            }
            #expect(try await [first, second] == [0, 0])
            try await TestControlPlane.withControlPlane(database: url, adminToken: adminToken) { server in
                _ = try await server.client.createWorkspace("survives-restart")
            }
            try await TestDatabase.administer(url) { connection, logger in
                let rows = try await connection.query("SELECT count(*)::int FROM schema_migrations", logger: logger)
                for try await count in rows.decode(Int.self) { #expect(count == ControlPlaneMigrations.all.count) }
            }
            let logger = Logger(label: "test")
            let client = PostgresClient(configuration: url.clientConfiguration(), backgroundLogger: logger)
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await client.run() }
                let applied = try await MigrationRunner().run(on: client, logger: logger)
                let pending = try await MigrationRunner().pending(on: client, logger: logger)
                #expect(applied.isEmpty && pending.isEmpty)
                group.cancelAll()
            }
            let names = try await TestControlPlane.withControlPlane(database: url, adminToken: adminToken) { server in
                try await server.client.workspaces().map(\.name)
            }
            #expect(names == ["survives-restart"])
        }
    }
}

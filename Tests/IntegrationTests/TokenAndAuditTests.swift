import ControlPlane
import Foundation
import Logging
import NIOHTTP1
import PostgresNIO
import Shared
import Synchronization
import Testing
import TestSupport

/// Collects every log line (message and metadata) a logger emits.
final class CapturedLogs: Sendable {
    let lines = Mutex<[String]>([])

    var logger: Logger {
        var logger = Logger(label: "larder.captured") { _ in CapturingHandler(sink: self) }
        logger.logLevel = .trace
        return logger
    }

    struct CapturingHandler: LogHandler {
        let sink: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { _, new in new }
            sink.lines.withLock { $0.append("\(event.level) \(event.message) \(all)") }
        }
    }
}

@Suite("Tokens, passwords and the audit log")
struct TokenAndAuditTests {
    /// The secret of `lrd_<12-character public id>_<secret>` (the secret itself may contain `_`).
    static func secretPart(of token: String) -> String {
        String(token.dropFirst("lrd_".count + 12 + 1))
    }

    @Test("revoked, expired and disabled principals' tokens are refused on the next request; use is recorded")
    func tokenLifecycle() async throws {
        try await TestControlPlane.withControlPlane { server in
            let admin = server.client
            _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "ci-bot", kind: .serviceAccount))
            let first = try await admin.createToken(for: "ci-bot", description: "first")
            let second = try await admin.createToken(for: "ci-bot", description: "second")
            let third = try await admin.createToken(for: "ci-bot", description: "third", expiresInSeconds: 3600)
            #expect(first.token.hasPrefix("lrd_\(first.resource.publicId)_"))
            let bot = ControlPlaneClient(baseURL: server.baseURL, token: first.token)
            #expect(try await bot.whoami().principal.name == "ci-bot")
            #expect(try await admin.tokens(of: "ci-bot").first { $0.publicId == first.resource.publicId }?.lastUsedAt != nil)

            try await bot.revokeToken(first.resource.publicId, of: "ci-bot")
            await #expect { try await bot.whoami() } throws: { ($0 as? ProblemDetails)?.status == 401 }

            try await TestDatabase.administer(server.database) { connection, logger in
                try await connection.query(
                    "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE public_id = \(third.resource.publicId)", logger: logger)
            }
            await #expect { try await ControlPlaneClient(baseURL: server.baseURL, token: third.token).whoami() } throws: {
                ($0 as? ProblemDetails)?.status == 401
            }
            let secondClient = ControlPlaneClient(baseURL: server.baseURL, token: second.token)
            #expect(try await secondClient.whoami().principal.name == "ci-bot")
            try await admin.disablePrincipal("ci-bot")
            await #expect { try await secondClient.whoami() } throws: { ($0 as? ProblemDetails)?.status == 401 }

            // Only hashes are stored: no column of any token row holds its secret.
            try await TestDatabase.administer(server.database) { connection, logger in
                let rows = try await connection.query("SELECT to_jsonb(t)::text FROM api_tokens t", logger: logger)
                for try await row in rows.decode(String.self) {
                    for token in [first.token, second.token, third.token] {
                        #expect(!row.contains(Self.secretPart(of: token)))
                    }
                }
            }
        }
    }

    @Test("users log in with a password; service accounts cannot have one; wrong passwords are refused")
    func passwords() async throws {
        try await TestControlPlane.withControlPlane { server in
            let admin = server.client
            _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "ada@example.com", kind: .user, password: "analytical engine"))
            let session = try await admin.login(name: "ada@example.com", password: "analytical engine")
            let ada = ControlPlaneClient(baseURL: server.baseURL, token: session.token)
            #expect(try await ada.whoami().principal.name == "ada@example.com")
            #expect(session.resource.expiresAt != nil)
            await #expect { try await admin.login(name: "ada@example.com", password: "difference engine") } throws: {
                ($0 as? ProblemDetails)?.status == 401
            }
            await #expect {
                try await admin.createPrincipal(CreatePrincipalRequest(name: "robot", kind: .serviceAccount, password: "a long password"))
            } throws: { ($0 as? ProblemDetails)?.field == "password" }
            await #expect { try await admin.createPrincipal(CreatePrincipalRequest(name: "bob", kind: .user, password: "short")) } throws: {
                ($0 as? ProblemDetails)?.field == "password"
            }
            try await ada.setPassword("a brand new password", for: "ada@example.com", current: "analytical engine")
            _ = try await admin.login(name: "ada@example.com", password: "a brand new password")
            let logins = try await admin.audit(principal: "ada@example.com").items.filter { $0.action == "POST /v1/login" }
            #expect(logins.map(\.outcome).sorted() == ["denied", "success", "success"], "logins are audited under the name tried")
            await #expect { try await admin.createToken(for: "ada@example.com", expiresInSeconds: Int.max / 2) } throws: {
                ($0 as? ProblemDetails)?.field == "expires_in_seconds"
            }
            await #expect { try await admin.createPrincipal(CreatePrincipalRequest(name: "anonymous", kind: .user)) } throws: {
                ($0 as? ProblemDetails)?.field == "name"
            }
        }
    }

    /// Attempts that come back over an hour: on a loaded machine none comes back while a test runs.
    static var slowRefill: AbuseSettings {
        var abuse = AbuseSettings()
        abuse.failureWindow = 3_600
        return abuse
    }

    @Test("a stranger's bad tokens get 401, then 429 with Retry-After, from their address and for their token id; a valid token from the same address, and the probes, are never throttled")
    func bruteForceIsSlowed() async throws {
        try await TestControlPlane.withControlPlane(abuse: Self.slowRefill) { server in
            var statuses: [Int] = []
            for attempt in 0..<12 {
                let guess = "lrd_abcdefghijk\(attempt % 3)_" + String(repeating: "A", count: 42) + "\(attempt % 10)"
                let response = try await RawResponse.send(.GET, "\(server.baseURL)/v1/whoami", headers: ["Authorization": "Bearer \(guess)"])
                statuses.append(response.status)
            }
            #expect(statuses.prefix(10).allSatisfy { $0 == 401 }, "\(statuses)")
            #expect(statuses.suffix(2).allSatisfy { $0 == 429 }, "\(statuses)")
            let blocked = try await RawResponse.send(.GET, "\(server.baseURL)/v1/whoami", headers: ["Authorization": "Bearer lrd_zzzzzzzzzzzz_\(String(repeating: "B", count: 43))"])
            #expect(blocked.status == 429)
            #expect(Int(blocked.headers["retry-after"] ?? "") ?? 0 > 0)
            #expect(blocked.problem?.code == "too-many-failures")
            // The admin's valid token from the same address: answered, every time.
            for _ in 0..<5 {
                #expect(try await RawResponse.send(.GET, "\(server.baseURL)/v1/whoami", headers: ["Authorization": "Bearer \(server.adminToken)"]).status == 200)
            }
            for probe in ["/healthz", "/readyz"] {
                #expect(try await RawResponse.send(.GET, "\(server.baseURL)\(probe)").status == 200, "\(probe)")
                #expect(try await RawResponse.send(.GET, "\(server.baseURL)\(probe)", headers: ["Authorization": "Bearer nonsense"]).status == 200, "\(probe)")
            }
        }
    }

    @Test("behind a trusted proxy each client is throttled by its forwarded address; a client's own forwarding headers are not believed")
    func throttledPerForwardedClient() async throws {
        var abuse = Self.slowRefill
        abuse.trustedProxies = [IPNetwork("127.0.0.1/32")!]
        abuse.failureBurst = 3
        try await TestControlPlane.withControlPlane(abuse: abuse) { server in
            func guess(from client: String) async throws -> Int {
                try await RawResponse.send(.GET, "\(server.baseURL)/v1/whoami", headers: [
                    "Authorization": "Bearer lrd_abcdefghijkm_\(String(repeating: "C", count: 43))", "X-Forwarded-For": "198.51.100.7, \(client)",
                ]).status
            }
            var statuses: [Int] = []
            for _ in 0..<5 { statuses.append(try await guess(from: "203.0.113.5")) }
            #expect(statuses == [401, 401, 401, 429, 429])
            // Another client behind the same proxy: its own allowance (the token id's is used up, so its bad token gets 429 too,
            // but a fresh token id from it gets 401).
            let other = try await RawResponse.send(.GET, "\(server.baseURL)/v1/whoami", headers: [
                "Authorization": "Bearer lrd_bcdefghijkmn_\(String(repeating: "D", count: 43))", "X-Forwarded-For": "203.0.113.6",
            ])
            #expect(other.status == 401)
            // Valid credentials through the proxy for the throttled client: answered.
            #expect(try await RawResponse.send(.GET, "\(server.baseURL)/v1/whoami", headers: [
                "Authorization": "Bearer \(server.adminToken)", "X-Forwarded-For": "203.0.113.5",
            ]).status == 200)
            // The audit log names the forwarded client.
            let audit = try await server.client.audit(limit: 20)
            #expect(audit.items.contains { $0.clientAddress == "203.0.113.5" && $0.outcome == "denied" }, "\(audit.items.map(\.clientAddress))")
        }
    }

    @Test("80 parallel wrong passwords for one user: at most the allowance of 10 is checked, the rest get 429 with Retry-After; the user's right password then waits its turn; whoami is answered meanwhile")
    func loginGuessesAreBounded() async throws {
        try await TestControlPlane.withControlPlane(abuse: Self.slowRefill) { server in
            _ = try await server.client.createPrincipal(CreatePrincipalRequest(name: "ada", kind: .user, password: "correct horse battery staple"))
            let statuses = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                for index in 0..<80 {
                    group.addTask {
                        let response = try await RawResponse.send(
                            .POST, "\(server.baseURL)/v1/login", body: #"{"name":"ada","password":"wrong guess number \#(index)"}"#,
                            headers: ["Content-Type": "application/json"])
                        return (response.status, response.headers["retry-after"])
                    }
                }
                // Meanwhile, authenticated calls are answered (their latency is measured by `larder-bench abuse`).
                for _ in 0..<20 { #expect(try await server.client.whoami().principal.name == "admin") }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let checked = statuses.filter { $0.0 == 401 }.count
            #expect(checked <= 10 && checked >= 1, "\(checked) passwords were checked")
            #expect(statuses.allSatisfy { $0.0 == 401 || ($0.0 == 429 && Int($0.1 ?? "") ?? 0 > 0) }, "\(statuses.map(\.0))")
            // Used up: even the right password waits (that is the price of a bounded guess rate per user).
            await #expect { _ = try await server.client.login(name: "ada", password: "correct horse battery staple") } throws: {
                ($0 as? ProblemDetails)?.status == 429
            }
        }
    }

    @Test("tokens and passwords never reach the logs")
    func secretsAreNotLogged() async throws {
        let logs = CapturedLogs()
        var secrets: [String] = []
        try await TestControlPlane.withControlPlane(logger: logs.logger) { server in
            secrets.append(server.adminToken)
            let admin = server.client
            _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "eve", kind: .user, password: "a secret password"))
            secrets.append("a secret password")
            let token = try await admin.createToken(for: "eve").token
            secrets.append(token)
            _ = try await ControlPlaneClient(baseURL: server.baseURL, token: token).whoami()
            secrets.append(try await admin.login(name: "eve", password: "a secret password").token)
            _ = try? await ControlPlaneClient(baseURL: server.baseURL, token: token + "x").whoami()
            _ = try? await admin.login(name: "eve", password: "wrong secret password")
            secrets.append("wrong secret password")
            _ = try await RawResponse.send(.GET, "\(server.baseURL)/v1/nothing-here", headers: ["Authorization": "Bearer \(token)"])
        }
        let lines = logs.lines.withLock { $0 }
        #expect(lines.count > 5, "the capture saw the server's logs")
        for secret in secrets {
            let secretPart = secret.hasPrefix("lrd_") ? Self.secretPart(of: secret) : secret
            #expect(!lines.contains { $0.contains(secretPart) }, "a secret appeared in the logs")
        }
    }

    @Test("SQL injection strings in names are rejected, and stored inertly where free text is allowed")
    func injectionStrings() async throws {
        let payloads = ["x'; DROP TABLE workspaces; --", "a\" OR \"1\"=\"1", "robert'); DELETE FROM principals;--", "$$; SELECT 1; $$"]
        try await TestControlPlane.withControlPlane { server in
            let admin = server.client
            for payload in payloads {
                await #expect { try await admin.createWorkspace(payload) } throws: { ($0 as? ProblemDetails)?.status == 400 }
                await #expect { try await admin.createPrincipal(CreatePrincipalRequest(name: payload, kind: .user)) } throws: {
                    ($0 as? ProblemDetails)?.status == 400
                }
                await #expect { try await admin.object(workspace: payload, collection: .entities, name: payload) } throws: {
                    ($0 as? ProblemDetails)?.status == 404
                }
            }
            _ = try await admin.createWorkspace("inert", description: payloads[0])
            #expect(try await admin.workspace("inert").description == payloads[0])
            _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "mallory", kind: .user, description: payloads[2]))
            #expect(try await admin.principal("mallory").description == payloads[2])
            #expect(try await admin.search(workspace: "inert", text: payloads[0]).isEmpty)
            let repository = RepositoryFixture.example(workspace: "inert")
                .replacing("description: A driver on the rides platform.", with: "description: \"\(payloads[0])\"", in: "entities.yaml")
            try await repository.apply(to: "inert", with: admin)
            #expect(try await admin.object(workspace: "inert", collection: .entities, name: "driver").description == payloads[0])
            let badName = repository.replacing("name: driver\n", with: "name: \"driver'; DROP TABLE x;--\"\n", in: "entities.yaml")
            await #expect { try await admin.plan(workspace: "inert", files: badName.apiFiles) } throws: {
                ($0 as? ProblemDetails)?.diagnostics?.contains { $0.code == .invalidIdentifier } == true
            }
            #expect(try await admin.workspaces().count == 1)
            #expect(try await admin.principals().count == 2)
        }
    }

    @Test("mutations and denials are audited with principal, action, outcome, request id and address; the log is append-only")
    func auditLog() async throws {
        try await TestControlPlane.withControlPlane { server in
            let admin = server.client
            _ = try await admin.createWorkspace("rides")
            _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "rider-owner", kind: .serviceAccount))
            try await admin.grant(.owner, to: "rider-owner", workspace: "rides")
            let ownerToken = try await admin.createToken(for: "rider-owner").token
            let owner = ControlPlaneClient(baseURL: server.baseURL, token: ownerToken)
            try await RepositoryFixture.example(workspace: "rides").apply(to: "rides", with: owner)
            _ = try await RawResponse.send(.POST, "\(server.baseURL)/v1/workspaces", body: #"{"name":"nope"}"#,
                                           headers: ["Authorization": "Bearer \(ownerToken)", "X-Request-Id": "denied-create"])
            _ = try await RawResponse.send(.GET, "\(server.baseURL)/v1/workspaces/rides")
            let encoded = try await RawResponse.send(
                .POST, "\(server.baseURL)/v1/workspaces/%72ides/access", body: #"{"principal":"rider-owner","role":"viewer"}"#,
                headers: ["Authorization": "Bearer \(ownerToken)", "X-Request-Id": "encoded-path"])
            #expect(encoded.status == 201)

            let entries = try await admin.audit(limit: 100).items
            let apply = try #require(entries.first { $0.action == "POST /v1/workspaces/{workspace}/applies" })
            #expect(apply.principal == "rider-owner" && apply.outcome == "success" && apply.status == 201 && apply.workspace == "rides")
            #expect(apply.clientAddress == "127.0.0.1" && !apply.requestId.isEmpty)
            let denied = try #require(entries.first { $0.requestId == "denied-create" })
            #expect(denied.principal == "rider-owner" && denied.outcome == "denied" && denied.status == 403)
            #expect(entries.contains { $0.principal == "anonymous" && $0.outcome == "denied" && $0.status == 401 })
            #expect(!entries.contains { $0.action.hasPrefix("GET") && $0.outcome == "success" }, "successful reads are not audited")

            #expect(try #require(entries.first { $0.requestId == "encoded-path" }).workspace == "rides", "paths are audited decoded")
            let own = try await owner.audit(workspace: "rides").items
            #expect(!own.isEmpty && own.allSatisfy { $0.workspace == "rides" })
            await #expect { try await owner.audit() } throws: { ($0 as? ProblemDetails)?.status == 403 }
            let deniedOnly = try await admin.audit(outcome: "denied").items
            #expect(!deniedOnly.isEmpty && deniedOnly.allSatisfy { $0.outcome == "denied" })

            try await TestDatabase.administer(server.database) { connection, logger in
                for statement in ["UPDATE audit_log SET principal = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"] {
                    await #expect(throws: (any Error).self) { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                }
            }
            #expect(try await admin.audit(limit: 1000).items.count >= entries.count)
        }
    }
}

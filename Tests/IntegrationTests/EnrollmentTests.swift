import ControlPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

/// Agent enrollment, credential rotation and removal, over real HTTP and PostgreSQL.
@Suite("Agent enrollment")
struct EnrollmentTests {
    static let workspace = "rides"

    static func hello(_ client: ControlPlaneClient) async throws -> AgentWelcome {
        try await client.hello(AgentHello(instanceId: "i", version: "test", hostname: "test", capabilities: [.materialize]))
    }

    /// The HTTP status a call fails with (nil when it succeeds).
    static func status(_ call: () async throws -> Void) async -> Int? {
        do {
            try await call()
            return nil
        } catch let problem as ProblemDetails {
            return problem.status
        } catch {
            return -1
        }
    }

    @Test("version skew: agents of this release or older (same major) say hello; a newer or other-major agent is refused with 409 naming what to upgrade")
    func versionSkew() async throws {
        try await TestControlPlane.withControlPlane { server in
            _ = try await server.client.createWorkspace(Self.workspace)
            _ = try await server.client.createEnvironment(CreateEnvironmentRequest(name: "prod"), workspace: Self.workspace)
            let created = try await server.client.createEnrollmentToken(CreateEnrollmentTokenRequest(environment: "prod"), workspace: Self.workspace)
            let enrolled = try await ControlPlaneClient(baseURL: server.baseURL).enroll(EnrollRequest(token: created.token, hostname: "h"))
            let agent = ControlPlaneClient(baseURL: server.baseURL, token: enrolled.token)
            let own = try #require(LarderVersion.release(LarderVersion.number))
            func hello(_ version: String) async -> ProblemDetails? {
                do {
                    _ = try await agent.hello(AgentHello(instanceId: "i", version: version, hostname: "h", capabilities: [.materialize]))
                    return nil
                } catch { return error as? ProblemDetails }
            }
            var accepted = [LarderVersion.number, "\(own.major).\(own.minor).99", "custom-build"]
            if own.minor > 0 { accepted.append("\(own.major).\(own.minor - 1).7") }
            for version in accepted {
                #expect(await hello(version) == nil, "\(version)")
            }
            for (version, upgrade) in [("\(own.major).\(own.minor + 1).0", "upgrade the control plane first"), ("\(own.major + 1).0.0-rc1", "agents must be of release")] {
                let refused = await hello(version)
                #expect(refused?.status == 409 && refused?.type == "urn:larder:problem:agent-version-unsupported" && refused?.field == "version", "\(version)")
                #expect(refused?.detail.contains(upgrade) == true, "\(refused?.detail ?? "accepted")")
            }
            #expect(LarderVersion.release("1.2") == nil && LarderVersion.release("1.2.x") == nil && LarderVersion.release("1.2.3-rc1")! == (1, 2))
        }
    }

    @Test("an enrollment token works once: it creates an agent of its environment with a working token and the key to pin; reused, expired or forged, it is refused and creates nothing")
    func enrollOnce() async throws {
        try await TestControlPlane.withControlPlane { server in
            let admin = server.client
            _ = try await admin.createWorkspace(Self.workspace)
            _ = try await admin.createEnvironment(CreateEnvironmentRequest(name: "prod-eu"), workspace: Self.workspace)
            _ = try await admin.createEnvironment(CreateEnvironmentRequest(name: "prod"), workspace: Self.workspace)
            let created = try await admin.createEnrollmentToken(CreateEnrollmentTokenRequest(environment: "prod-eu"), workspace: Self.workspace)
            #expect(created.token.hasPrefix("lre_") && created.environment == "prod-eu")
            let anonymous = ControlPlaneClient(baseURL: server.baseURL)
            let enrolled = try await anonymous.enroll(EnrollRequest(token: created.token, hostname: "host-1"))
            #expect(enrolled.agent.hasPrefix("prod-eu-") && enrolled.workspace == Self.workspace && enrolled.environment == "prod-eu")
            // The key to pin is the control plane's signing key, whose fingerprint the token's creator was shown.
            let key = try await TestDatabase.withClient(server.database) { client in
                try await SigningKeys(client: client, logger: Logger(label: "test")).current().publicKey
            }
            #expect(enrolled.publicKey == key.description && enrolled.keyFingerprint == key.fingerprint && created.keyFingerprint == key.fingerprint)
            let agent = ControlPlaneClient(baseURL: server.baseURL, token: enrolled.token)
            #expect(try await Self.hello(agent).workspace == Self.workspace)
            #expect(try await admin.agents(workspace: Self.workspace).map(\.name) == [enrolled.agent])

            // Used once: refused after.
            let again = await Self.status { _ = try await anonymous.enroll(EnrollRequest(token: created.token, hostname: "host-2")) }
            #expect(again == 401)
            // A forged secret with a real public id: refused, and the real token is not burnt by it.
            let fresh = try await admin.createEnrollmentToken(CreateEnrollmentTokenRequest(environment: "prod", agent: "agent-named"), workspace: Self.workspace)
            let forged = String(fresh.token.dropLast(4)) + "AAAA"
            #expect(await Self.status { _ = try await anonymous.enroll(EnrollRequest(token: forged, hostname: "h")) } == 401)
            #expect(await Self.status { _ = try await anonymous.enroll(EnrollRequest(token: "lrd_notanenrollmenttoken", hostname: "h")) } == 400)
            #expect(try await anonymous.enroll(EnrollRequest(token: fresh.token, hostname: "h")).agent == "agent-named")
            // Expired: refused.
            let expiring = try await admin.createEnrollmentToken(CreateEnrollmentTokenRequest(environment: "prod", ttlSeconds: 60), workspace: Self.workspace)
            try await TestDatabase.withClient(server.database) { client in
                try await client.query("UPDATE enrollment_tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL", logger: Logger(label: "test"))
            }
            let expired = await Self.status { _ = try await anonymous.enroll(EnrollRequest(token: expiring.token, hostname: "h")) }
            #expect(expired == 401)
            #expect(try await admin.agents(workspace: Self.workspace).count == 2)
            // Bad requests name the field.
            let badTTL = await Self.status {
                _ = try await admin.createEnrollmentToken(CreateEnrollmentTokenRequest(environment: "prod", ttlSeconds: 30), workspace: Self.workspace)
            }
            #expect(badTTL == 400)
            let secretsStored = try await TestDatabase.withClient(server.database) { client in
                var texts: [String] = []
                for try await text in try await client.query("SELECT public_id || encode(secret_hash, 'hex') FROM enrollment_tokens", logger: Logger(label: "test"))
                    .decode(String.self) { texts.append(text) }
                return texts
            }
            #expect(secretsStored.count == 3 && !secretsStored.contains { created.token.contains($0.suffix(20)) })
        }
    }

    /// Up to 10 hosts: the losers' failures stay under the address's limit of failed authentications.
    @Test("one token, many hosts enrolling at once: exactly one gets an agent", arguments: [6, 10])
    func concurrentEnrollment(hosts: Int) async throws {
        try await TestControlPlane.withControlPlane { server in
            _ = try await server.client.createWorkspace(Self.workspace)
            _ = try await server.client.createEnvironment(CreateEnvironmentRequest(name: "prod"), workspace: Self.workspace)
            let created = try await server.client.createEnrollmentToken(CreateEnrollmentTokenRequest(environment: "prod"), workspace: Self.workspace)
            let outcomes = await withTaskGroup(of: Int?.self) { group in
                for index in 0..<hosts {
                    group.addTask {
                        await Self.status {
                            _ = try await ControlPlaneClient(baseURL: server.baseURL).enroll(EnrollRequest(token: created.token, hostname: "host-\(index)"))
                        }
                    }
                }
                var all: [Int?] = []
                for await outcome in group { all.append(outcome) }
                return all
            }
            #expect(outcomes.filter { $0 == nil }.count == 1, "\(outcomes)")
            #expect(outcomes.filter { $0 == 401 }.count == hosts - 1, "\(outcomes)")
            #expect(try await server.client.agents(workspace: Self.workspace).count == 1)
        }
    }

    @Test("rotation: the new token works and the old one stops after its grace; removal revokes every token at once and ends the agent's leases")
    func rotateAndRemove() async throws {
        try await TestControlPlane.withControlPlane { server in
            let admin = server.client
            _ = try await admin.createWorkspace(Self.workspace)
            _ = try await admin.createEnvironment(CreateEnvironmentRequest(name: "prod"), workspace: Self.workspace)
            try await RepositoryFixture.example(workspace: Self.workspace).unscheduled().apply(to: Self.workspace, with: admin)
            let created = try await admin.createEnrollmentToken(CreateEnrollmentTokenRequest(environment: "prod"), workspace: Self.workspace)
            let enrolled = try await ControlPlaneClient(baseURL: server.baseURL).enroll(EnrollRequest(token: created.token, hostname: "h"))
            let first = ControlPlaneClient(baseURL: server.baseURL, token: enrolled.token)
            _ = try await Self.hello(first)

            // With a grace period the old token keeps working; with none it stops at once.
            let second = ControlPlaneClient(baseURL: server.baseURL, token: try await first.rotateCredentials(graceSeconds: 600).token)
            _ = try await Self.hello(first)
            _ = try await Self.hello(second)
            let rotated = try await second.rotateCredentials(graceSeconds: 0)
            let third = ControlPlaneClient(baseURL: server.baseURL, token: rotated.token)
            #expect(await Self.status { _ = try await Self.hello(second) } == 401)
            _ = try await Self.hello(third)
            // Only agents rotate their own tokens.
            #expect(await Self.status { _ = try await admin.rotateCredentials() } == 403)
            // A token past half its life cannot end itself at once (a thief's old copy cannot cut the agent off).
            try await TestDatabase.withClient(server.database) { client in
                try await client.query(
                    """
                    UPDATE api_tokens SET created_at = now() - interval '100 seconds', expires_at = now() + interval '20 seconds'
                    WHERE description = 'agent credentials, rotated' AND revoked_at IS NULL AND expires_at IS NULL
                    """, logger: Logger(label: "test"))
            }
            await #expect { _ = try await third.rotateCredentials(graceSeconds: 0) } throws: { ($0 as? ProblemDetails)?.field == "grace_seconds" }
            let fourth = ControlPlaneClient(baseURL: server.baseURL, token: try await third.rotateCredentials(graceSeconds: 120).token)
            _ = try await Self.hello(third)
            _ = try await Self.hello(fourth)
            // Every rotation, refused or not, is in the audit log.
            let rotations = try await admin.audit(limit: 50).items.filter { $0.action == "POST /v1/agent/credentials" && $0.principal == enrolled.agent }
            #expect(rotations.map(\.outcome) == ["success", "failure", "success", "success"], "newest first: \(rotations.map(\.outcome))")

            // A leased job, then removal: every token refused at once, the lease ended.
            _ = try await admin.materialize(
                MaterializeRequest(
                    featureView: "driver_hourly_stats", start: RFC3339.parse("2025-01-01T00:00:00Z")!, end: RFC3339.parse("2025-01-01T01:00:00Z")!,
                    chunk: "1h"),
                workspace: Self.workspace)
            let claimed = try #require(try await fourth.claim(ClaimRequest(instanceId: "i", kinds: [.materialize], waitSeconds: 5)))
            let other = ControlPlaneClient(baseURL: server.baseURL, token: try await admin.createToken(for: enrolled.agent).token)
            try await admin.removeAgent(enrolled.agent, workspace: Self.workspace)
            #expect(await Self.status { _ = try await Self.hello(third) } == 401)
            // Told apart from a bad token, so the agent stops asking every second.
            await #expect { _ = try await Self.hello(fourth) } throws: { ($0 as? ProblemDetails)?.isAgentRemoved == true }
            await #expect { _ = try await ControlPlaneClient(baseURL: server.baseURL, token: APIToken.generate().text).whoami() } throws: {
                ($0 as? ProblemDetails)?.code == "unauthenticated"
            }
            #expect(await Self.status { _ = try await Self.hello(other) } == 401)
            #expect(await Self.status { _ = try await Self.hello(first) } == 401)
            let leaseOver = try await TestDatabase.withClient(server.database) { client in
                for try await over in try await client.query(
                    "SELECT lease_expires_at <= now() FROM jobs WHERE id = \(claimed.id)", logger: Logger(label: "test")).decode(Bool.self) { return over }
                return false
            }
            #expect(leaseOver)
            #expect(await Self.status { try await admin.removeAgent("no-such-agent", workspace: Self.workspace) } == 404)
        }
    }
}

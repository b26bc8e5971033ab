import Foundation
import Logging
import Shared
import Testing
import TestSupport

@testable import ControlPlane

/// The signed access snapshots agents authorize feature reads with: exactly
/// the valid tokens of the workspace's members (and of admins) with their
/// roles, and a version every change moves on.
@Suite("Access snapshots for agents")
struct AccessSnapshotTests {
    /// The agent's view: the version and, when newer than `have`, the verified snapshot.
    static func fetch(_ world: JobsFixture, have: Int64? = nil) async throws -> (version: Int64, snapshot: AccessSnapshot?) {
        let reply = try await world.agents[0].accessSnapshot(AccessSnapshotRequest(instanceId: "instance-1", haveVersion: have))
        let key = try await world.keys.current().publicKey
        return (reply.version, try reply.snapshot.map { try AccessSnapshot(verified: $0.verified(with: key)) })
    }

    static func hash(of token: String) -> String {
        Data(APIToken(parsing: token)!.secretHash).base64URL
    }

    @Test("random principals, roles, admins, revoked tokens and disabled principals: the snapshot lists exactly the valid tokens of members and admins, with their roles",
          arguments: Array(1...4) as [UInt64])
    func matchesModel(seed: UInt64) async throws {
        var random = SeededGenerator(seed: seed)
        try await JobsFixture.with(agents: 1) { world in
            let admin = world.server.client
            _ = try await admin.createWorkspace("payments")
            struct Token { var publicId: String; var hash: String; var principal: String; var revoked: Bool }
            var tokens: [Token] = []
            var expected: [String: (principal: String, roles: [WorkspaceRole])] = [:]
            for index in 0..<8 {
                let name = "p\(seed)-\(index)"
                let isAdmin = Int.random(in: 0..<7, using: &random) == 0
                _ = try await admin.createPrincipal(CreatePrincipalRequest(
                    name: name, kind: Bool.random(using: &random) ? .user : .serviceAccount, admin: isAdmin))
                var roles = Set<WorkspaceRole>()
                for role in WorkspaceRole.allCases where Int.random(in: 0..<4, using: &random) == 0 {
                    _ = try await admin.grant(role, to: name, workspace: JobsFixture.workspace)
                    roles.formUnion(role.granted)
                }
                for role in WorkspaceRole.allCases where Int.random(in: 0..<3, using: &random) == 0 {
                    _ = try await admin.grant(role, to: name, workspace: "payments")
                }
                var mine: [Token] = []
                for _ in 0..<Int.random(in: 1...2, using: &random) {
                    let audience = TokenAudience.allCases.randomElement(using: &random)!
                    let created = try await admin.createToken(
                        for: name, expiresInSeconds: Bool.random(using: &random) ? 3_600 : nil, audience: audience)
                    #expect(created.resource.audience == audience)
                    var token = Token(
                        publicId: created.resource.publicId, hash: Self.hash(of: created.token), principal: name,
                        revoked: !audience.includesDataPlane)
                    // A control-plane token never reaches agents: it stays out like a revoked one.
                    if Int.random(in: 0..<5, using: &random) == 0 {
                        _ = try await admin.revokeToken(token.publicId, of: name)
                        token.revoked = true
                    }
                    mine.append(token)
                }
                let disabled = Int.random(in: 0..<6, using: &random) == 0
                if disabled { try await admin.disablePrincipal(name) }
                tokens += mine
                let granted = isAdmin ? Set(WorkspaceRole.allCases) : roles
                guard !disabled, !granted.isEmpty else { continue }
                for token in mine where !token.revoked { expected[token.publicId] = (name, granted.sorted()) }
            }
            let (version, fetched) = try await Self.fetch(world)
            let snapshot = try #require(fetched)
            #expect(snapshot.workspace == JobsFixture.workspace && snapshot.version == version)
            #expect(snapshot.expiresAt.timeIntervalSince(snapshot.issuedAt) == 24 * 3_600)
            let ours = snapshot.entries.filter { $0.principal.hasPrefix("p\(seed)-") }
            #expect(Dictionary(uniqueKeysWithValues: ours.map { ($0.tokenPublicId, "\($0.principal) \($0.roles)") })
                    == expected.mapValues { "\($0.principal) \($0.roles)" }, "seed \(seed)")
            for entry in ours {
                #expect(entry.secretSha256 == tokens.first { $0.publicId == entry.tokenPublicId }?.hash)
            }
            // The bootstrap admin's token works on the control plane only: not there; nor are the agents' own tokens.
            let me = try await admin.whoami()
            #expect(!snapshot.entries.contains { $0.tokenPublicId == me.tokenPublicId })
            #expect(!snapshot.entries.contains { $0.principal.hasPrefix("agent-") })
        }
    }

    @Test("every change to who may read moves the version on, in the heartbeat too; other changes and other workspaces do not")
    func versions() async throws {
        try await JobsFixture.with(agents: 1) { world in
            let admin = world.server.client
            _ = try await admin.createWorkspace("payments")
            _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "carol", kind: .user))
            _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "olga", kind: .user))
            _ = try await admin.grant(.consumer, to: "olga", workspace: "payments")

            let first = try await Self.fetch(world)
            var version = first.version
            #expect(first.snapshot != nil)
            // Holding the current version: no snapshot is sent; the heartbeat says the same version.
            let unchanged = try await Self.fetch(world, have: version)
            #expect(unchanged.version == version && unchanged.snapshot == nil)
            let beat = try await world.agents[0].heartbeat(AgentHeartbeat(instanceId: "instance-1", runningJobs: []))
            #expect(beat.accessVersion == version)

            func expectMoved(_ what: String, contains publicId: String?, absent: String? = nil) async throws {
                let next = try await Self.fetch(world, have: version)
                #expect(next.version > version, "\(what) did not move the version on")
                let entries = try #require(next.snapshot, "\(what): no new snapshot").entries
                if let publicId { #expect(entries.contains { $0.tokenPublicId == publicId }, "\(what)") }
                if let absent { #expect(!entries.contains { $0.tokenPublicId == absent }, "\(what)") }
                version = next.version
            }
            _ = try await admin.grant(.consumer, to: "carol", workspace: JobsFixture.workspace)
            try await expectMoved("a grant", contains: nil)
            let token = try await admin.createToken(for: "carol", audience: .dataPlane).resource.publicId
            try await expectMoved("a consumer's new token", contains: token)
            _ = try await admin.revokeToken(token, of: "carol")
            try await expectMoved("a revoked token", contains: nil, absent: token)
            let second = try await admin.createToken(for: "carol", audience: .both).resource.publicId
            try await expectMoved("another token", contains: second)
            try await admin.revoke(.consumer, from: "carol", workspace: JobsFixture.workspace)
            try await expectMoved("a revoke", contains: nil, absent: second)
            _ = try await admin.grant(.editor, to: "carol", workspace: JobsFixture.workspace)
            try await expectMoved("an editor grant", contains: second)
            try await admin.disablePrincipal("carol")
            try await expectMoved("a disabled principal", contains: nil, absent: second)

            // Another workspace's consumer changing tokens leaves this workspace's version alone.
            _ = try await admin.createToken(for: "olga", audience: .dataPlane)
            #expect(try await Self.fetch(world, have: version).snapshot == nil)
            let beatAfter = try await world.agents[0].heartbeat(AgentHeartbeat(instanceId: "instance-1", runningJobs: []))
            #expect(beatAfter.accessVersion == version)
        }
    }

    @Test("an agent of another workspace gets that workspace's snapshot only")
    func ownWorkspaceOnly() async throws {
        try await JobsFixture.with(agents: 1) { world in
            let admin = world.server.client
            _ = try await admin.createWorkspace("payments")
            _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "olga", kind: .user))
            _ = try await admin.grant(.consumer, to: "olga", workspace: "payments")
            let olgaToken = try await admin.createToken(for: "olga", audience: .dataPlane).resource.publicId
            _ = try await admin.createTestAgent(name: "payments-agent", environment: "prod", workspace: "payments")
            let agent = ControlPlaneClient(baseURL: world.server.baseURL, token: try await admin.createToken(for: "payments-agent").token)
            let reply = try await agent.accessSnapshot(AccessSnapshotRequest(instanceId: "payments-1", haveVersion: nil))
            let payments = try AccessSnapshot(verified: try #require(reply.snapshot).verified(with: try await world.keys.current().publicKey))
            #expect(payments.workspace == "payments" && payments.entries.contains { $0.tokenPublicId == olgaToken })
            let rides = try #require(try await Self.fetch(world).snapshot)
            #expect(!rides.entries.contains { $0.tokenPublicId == olgaToken })
        }
    }
}

/// The signed registry snapshots agents resolve feature requests with.
@Suite("Registry snapshots for agents")
struct RegistrySnapshotTests {
    @Test("the snapshot holds the current version of every object, signed; an apply that changes something moves the revision on, in the heartbeat too")
    func currentVersions() async throws {
        try await JobsFixture.with(agents: 1) { world in
            let agent = world.agents[0]
            let key = try await world.keys.current().publicKey
            func fetch(have: Int64? = nil) async throws -> (Int64, AgentRegistrySnapshot?) {
                let reply = try await agent.registrySnapshot(RegistrySnapshotRequest(instanceId: "instance-1", haveRevision: have))
                return (reply.revision, try reply.snapshot.map { try AgentRegistrySnapshot(verified: $0.verified(with: key)) })
            }
            let (revision, fetched) = try await fetch()
            let snapshot = try #require(fetched)
            #expect(snapshot.workspace == JobsFixture.workspace && snapshot.revision == revision)
            // Every object of the example, each at its current version, as the registry lists them.
            let fixture = RepositoryFixture.example(workspace: JobsFixture.workspace).unscheduled()
            let repository = RepositoryLoader.load(files: fixture.files.map { ($0.key, $0.value) }).repository
            let expected = Set(DefinitionCanonicalizer.canonicalize(repository).map { "\($0.key.kind.rawValue) \($0.key.name) \($0.contentHash)" })
            #expect(Set(snapshot.definitions.map { "\($0.kind) \($0.name) \($0.contentHash)" }) == expected)
            #expect(snapshot.definitions.allSatisfy { $0.version == 1 })
            #expect(snapshot.definitions.contains { $0.kind == "FeatureService" } && snapshot.definitions.contains { $0.kind == "OnDemandFeatureView" })

            // Holding the current revision: nothing is sent. An apply that changes a view moves the revision on.
            #expect(try await fetch(have: revision).1 == nil)
            try await fixture.replacing("ttl: 2d", with: "ttl: 3d", in: "features.yaml").apply(to: JobsFixture.workspace, with: world.server.client)
            let beat = try await agent.heartbeat(AgentHeartbeat(instanceId: "instance-1", runningJobs: []))
            #expect(try #require(beat.registryRevision) > revision)
            let (newRevision, newer) = try await fetch(have: revision)
            #expect(newRevision == beat.registryRevision)
            let view = try #require(newer?.definitions.first { $0.kind == "FeatureView" && $0.name == "driver_hourly_stats" })
            #expect(view.version == 2)
        }
    }
}

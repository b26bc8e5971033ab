import DataPlane
import Foundation
import Logging
import Shared
import Testing
import TestSupport

/// The agent's authorization of feature reads from its signed access snapshot.
@Suite("Access guard at the agent")
struct AccessGuardTests {
    struct Member {
        var token: APIToken
        var principal: String
        var roles: [WorkspaceRole]
        var expiresAt: Date?
    }

    static func snapshot(_ members: [Member], workspace: String = "rides", version: Int64 = 1, issuedAt: Date, expiresAt: Date) -> AccessSnapshot {
        AccessSnapshot(
            workspace: workspace, version: version, issuedAt: issuedAt, expiresAt: expiresAt,
            entries: members.map {
                AccessSnapshot.Entry(
                    tokenPublicId: $0.token.publicID, secretSha256: Data($0.token.secretHash).base64URL, principal: $0.principal,
                    roles: $0.roles, tokenExpiresAt: $0.expiresAt)
            })
    }

    static func folder() -> URL { FileManager.default.temporaryDirectory.appendingPathComponent("larder-guard-\(UUID().uuidString)") }

    @Test("random members, roles, expiries and forged tokens: each request gets the decision the rules give, before and after a restart",
          arguments: Array(1...25) as [UInt64])
    func decisions(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let keys = SigningKeyPair.generate()
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let members = (0..<Int.random(in: 1...8, using: &random)).map { index in
            Member(
                token: APIToken.generate(), principal: "p\(index)",
                roles: WorkspaceRole.allCases.filter { _ in Bool.random(using: &random) },
                expiresAt: [nil, now.addingTimeInterval(-1), now.addingTimeInterval(3_600)].randomElement(using: &random)!)
        }
        let document = try keys.sign(try Self.snapshot(members, issuedAt: now, expiresAt: now.addingTimeInterval(86_400)).jsonValue())
        let file = Self.folder().appendingPathComponent("access-snapshot.json")
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        let guardian = AccessGuard(file: file, publicKey: keys.publicKey, logger: Logger(label: "test"))
        #expect(guardian.authorize(token: members[0].token.text, now: now) == .unavailable(
            "the agent has no access snapshot yet; it fetches one from the control plane when it connects"))
        try guardian.install(document, workspace: "rides")
        let restarted = AccessGuard(file: file, publicKey: keys.publicKey, workspace: "rides", logger: Logger(label: "test"))

        for _ in 0..<40 {
            let member = members.randomElement(using: &random)!
            let expected: AccessGuard.Decision
            let token: String?
            switch Int.random(in: 0..<5, using: &random) {
            case 0:   // another secret under a known public id
                token = "lrd_\(member.token.publicID)_\(APIToken.generate().text.dropFirst("lrd_".count + 13))"
                expected = .unauthenticated("the token is not valid for this workspace")
            case 1:   // a token the snapshot does not hold
                token = APIToken.generate().text
                expected = .unauthenticated("the token is not valid for this workspace")
            case 2:   // not a token at all, or none
                token = [nil, "", "Bearer", "lrd_short_x"].randomElement(using: &random)!
                expected = token?.isEmpty ?? true
                    ? .unauthenticated("send a token as 'Authorization: Bearer lrd_…'") : .unauthenticated("the token is not valid for this workspace")
            default:
                token = member.token.text
                if let expiry = member.expiresAt, expiry <= now {
                    expected = .unauthenticated("the token expired at \(RFC3339.format(expiry))")
                } else if member.roles.contains(.consumer) {
                    expected = .allowed(principal: member.principal)
                } else {
                    expected = .forbidden(principal: member.principal)
                }
            }
            #expect(guardian.authorize(token: token, now: now) == expected, "seed \(seed)")
            #expect(restarted.authorize(token: token, now: now) == expected, "seed \(seed), after a restart")
        }
        // Past the snapshot's expiry, every read is refused as unavailable, the valid ones too.
        let consumer = members.first { $0.roles.contains(.consumer) && $0.expiresAt.map { $0 > now } ?? true }
        if let consumer {
            guard case .unavailable = guardian.authorize(token: consumer.token.text, now: now.addingTimeInterval(86_401)) else {
                Issue.record("an expired snapshot still allowed a read")
                return
            }
        }
    }

    @Test("a snapshot signed by another key, for another workspace, or older than the one held is not installed")
    func refusals() throws {
        let keys = SigningKeyPair.generate(), other = SigningKeyPair.generate()
        let now = Date()
        let member = Member(token: APIToken.generate(), principal: "carol", roles: [.viewer, .consumer], expiresAt: nil)
        let file = Self.folder().appendingPathComponent("access-snapshot.json")
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        // A file left readable by others (written by hand, say) is replaced by one that never is.
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: file.path, contents: Data("{}".utf8), attributes: [.posixPermissions: 0o644]))
        let guardian = AccessGuard(file: file, publicKey: keys.publicKey, logger: Logger(label: "test"))
        let forged = try other.sign(try Self.snapshot([member], issuedAt: now, expiresAt: now.addingTimeInterval(60)).jsonValue())
        #expect(throws: AccessGuard.Refusal.self) { try guardian.install(forged, workspace: "rides") }
        let elsewhere = try keys.sign(try Self.snapshot([member], workspace: "payments", issuedAt: now, expiresAt: now.addingTimeInterval(60)).jsonValue())
        #expect(throws: AccessGuard.Refusal.self) { try guardian.install(elsewhere, workspace: "rides") }
        #expect(guardian.version == nil)

        let newer = try keys.sign(try Self.snapshot([member], version: 5, issuedAt: now, expiresAt: now.addingTimeInterval(60)).jsonValue())
        let older = try keys.sign(try Self.snapshot([], version: 4, issuedAt: now, expiresAt: now.addingTimeInterval(60)).jsonValue())
        try guardian.install(newer, workspace: "rides")
        try guardian.install(older, workspace: "rides")
        #expect(guardian.version == 5)
        #expect(guardian.authorize(token: member.token.text, now: now) == .allowed(principal: "carol"))
        // The file on disk is the agent's alone, and a tampered file is ignored on restart.
        let mode = try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: file.deletingLastPathComponent().path) == ["access-snapshot.json"])
        var text = try String(contentsOf: file, encoding: .utf8)
        text = text.replacingOccurrences(of: "carol", with: "mallory")
        try text.write(to: file, atomically: true, encoding: .utf8)
        let restarted = AccessGuard(file: file, publicKey: keys.publicKey, logger: Logger(label: "test"))
        #expect(restarted.version == nil)
    }

    @Test("past half its validity a snapshot asks for renewal; a renewal of the same version issued later replaces it, an earlier one does not; the push role is checked too")
    func renewal() throws {
        let keys = SigningKeyPair.generate()
        let issued = Date(timeIntervalSince1970: 1_800_000_000)
        let member = Member(token: APIToken.generate(), principal: "ingest", roles: [.viewer, .operator], expiresAt: nil)
        let file = Self.folder().appendingPathComponent("access-snapshot.json")
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        let guardian = AccessGuard(file: file, publicKey: keys.publicKey, logger: Logger(label: "test"))
        #expect(guardian.needsRenewal(now: issued))
        func install(issuedAt: Date) throws -> AccessSnapshot {
            try guardian.install(
                try keys.sign(try Self.snapshot([member], version: 4, issuedAt: issuedAt, expiresAt: issuedAt.addingTimeInterval(86_400)).jsonValue()),
                workspace: "rides")
        }
        _ = try install(issuedAt: issued)
        #expect(!guardian.needsRenewal(now: issued.addingTimeInterval(43_199)))
        #expect(guardian.needsRenewal(now: issued.addingTimeInterval(43_200)))
        let renewed = try install(issuedAt: issued.addingTimeInterval(43_200))
        #expect(renewed.issuedAt == issued.addingTimeInterval(43_200) && guardian.snapshot?.issuedAt == renewed.issuedAt)
        #expect(try install(issuedAt: issued).issuedAt == renewed.issuedAt)
        // Valid until the renewal's expiry, not the first one's.
        let late = issued.addingTimeInterval(86_400 + 60)
        #expect(guardian.authorize(token: member.token.text, now: late, role: .operator) == .allowed(principal: "ingest"))
        #expect(guardian.authorize(token: member.token.text, now: late) == .forbidden(principal: "ingest"))
    }

    @Test("the registry cache installs only newer snapshots signed by the pinned key for its workspace, and reads them back after a restart")
    func registryCache() throws {
        let keys = SigningKeyPair.generate(), other = SigningKeyPair.generate()
        let file = Self.folder().appendingPathComponent("registry-snapshot.json")
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        func snapshot(_ revision: Int64, workspace: String = "rides") -> AgentRegistrySnapshot {
            AgentRegistrySnapshot(workspace: workspace, revision: revision, issuedAt: Date(), definitions: [
                JobSpec.Definition(kind: "Entity", name: "driver", version: Int(revision), contentHash: "h\(revision)", definition: .object([:])),
            ])
        }
        let cache = RegistryCache(file: file, publicKey: keys.publicKey, logger: Logger(label: "test"))
        #expect(cache.revision == nil)
        #expect(throws: AccessGuard.Refusal.self) { try cache.install(try other.sign(try snapshot(3).jsonValue()), workspace: "rides") }
        #expect(throws: AccessGuard.Refusal.self) { try cache.install(try keys.sign(try snapshot(3, workspace: "payments").jsonValue()), workspace: "rides") }
        try cache.install(try keys.sign(try snapshot(3).jsonValue()), workspace: "rides")
        try cache.install(try keys.sign(try snapshot(2).jsonValue()), workspace: "rides")
        #expect(cache.revision == 3 && cache.snapshot?.definitions.first?.contentHash == "h3")
        let restarted = RegistryCache(file: file, publicKey: keys.publicKey, workspace: "rides", logger: Logger(label: "test"))
        #expect(restarted.snapshot == cache.snapshot)
        #expect(RegistryCache(file: file, publicKey: keys.publicKey, workspace: "payments", logger: Logger(label: "test")).revision == nil)
        #expect(RegistryCache(file: file, publicKey: other.publicKey, logger: Logger(label: "test")).revision == nil)
    }
}

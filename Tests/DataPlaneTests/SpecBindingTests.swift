@testable import DataPlane
import Foundation
import Logging
import Shared
import Testing

/// What an agent runs: only a spec signed for the claim it holds, of the
/// workspace it was enrolled into, while fresh, and signed as a spec.
@Suite("Job specs bound to their claim")
struct SpecBindingTests {
    static let keys = SigningKeyPair.generate()

    static func runner(pinned: String?) -> AgentRunner {
        AgentRunner(
            configuration: AgentConfiguration(
                controlPlaneURL: "http://127.0.0.1:9", token: "lrd_test", publicKey: keys.publicKey, dataDirectory: "/nonexistent",
                workspace: pinned),
            executors: [], logger: Logger(label: "test"))
    }

    static func welcome(_ workspace: String) -> AgentWelcome {
        AgentWelcome(
            agent: "a", workspace: workspace, environment: "prod", heartbeatSeconds: 10, leaseSeconds: 30, maxClaimWaitSeconds: 30,
            signingKeyFingerprint: keys.publicKey.fingerprint, serverTime: Date())
    }

    static func spec(job: Int64 = 7, workspace: String = "rides") -> JobSpec {
        JobSpec(
            jobId: job, kind: .materialize, workspace: workspace, featureView: "v", version: 1, start: Date(), end: Date(),
            definitions: [], targets: .init(offline: true, online: true), issuedAt: Date())
    }

    @Test("a spec copied from another claim, replayed after its lease, unbound, of another workspace, or signed as something else is refused")
    func refusals() async throws {
        let token = UUID(), now = Date()
        let claim: @Sendable (SignedDocument) -> ClaimedJob = { spec in ClaimedJob(id: 7, attempt: 2, leaseToken: token, leaseExpiresAt: now.addingTimeInterval(30), spec: spec, leaseTerm: 41) }
        let runner = Self.runner(pinned: "rides")
        do { try Self.checkRefusals(runner, claim: claim, token: token, now: now) } catch { Issue.record("\(error)") }
        try await runner.http.shutdown()
    }

    static func checkRefusals(_ runner: AgentRunner, claim: (SignedDocument) -> ClaimedJob, token: UUID, now: Date) throws {
        func sign(_ spec: JobSpec) throws -> SignedDocument { try Self.keys.sign(try spec.jsonValue()) }
        let good = Self.spec().bound(attempt: 2, leaseToken: token, leaseTerm: 41, expiresAt: now.addingTimeInterval(30))
        #expect(try runner.verify(claim(try sign(good)), welcome: Self.welcome("rides"), now: now).jobId == 7)
        let refused: [(String, SignedDocument, String)] = [
            ("an earlier attempt's spec", try sign(Self.spec().bound(attempt: 1, leaseToken: token, leaseTerm: 41, expiresAt: now.addingTimeInterval(30))), "rides"),
            ("another lease's spec", try sign(Self.spec().bound(attempt: 2, leaseToken: UUID(), leaseTerm: 41, expiresAt: now.addingTimeInterval(30))), "rides"),
            ("another term's spec", try sign(Self.spec().bound(attempt: 2, leaseToken: token, leaseTerm: 40, expiresAt: now.addingTimeInterval(30))), "rides"),
            ("an expired spec", try sign(Self.spec().bound(attempt: 2, leaseToken: token, leaseTerm: 41, expiresAt: now.addingTimeInterval(-1))), "rides"),
            ("a spec as the ledger keeps it (bound to no claim)", try sign(Self.spec()), "rides"),
            ("another job's spec", try sign(Self.spec(job: 8).bound(attempt: 2, leaseToken: token, leaseTerm: 41, expiresAt: now.addingTimeInterval(30))), "rides"),
            // The hello answer is not signed: a control plane (or whoever answers for it) naming another workspace changes nothing.
            ("another workspace's spec, with a hello answer to match", try sign(Self.spec(workspace: "payments").bound(
                attempt: 2, leaseToken: token, leaseTerm: 41, expiresAt: now.addingTimeInterval(30))), "payments"),
            ("an access snapshot signed by the same key", try Self.keys.sign(try AccessSnapshot(
                workspace: "rides", version: 1, issuedAt: now, expiresAt: now.addingTimeInterval(60), entries: []).jsonValue()), "rides"),
            ("another key's spec", try SigningKeyPair.generate().sign(try good.jsonValue()), "rides"),
        ]
        for (what, document, hello) in refused {
            #expect(throws: (any Error).self, "\(what) was accepted") { try runner.verify(claim(document), welcome: Self.welcome(hello), now: now) }
        }
        // A host whose clock runs ahead of the control plane's (within the allowance) still runs a fresh spec.
        #expect(try runner.verify(claim(try sign(good)), welcome: Self.welcome("rides"), now: now.addingTimeInterval(200)).jobId == 7)
    }

    @Test("an agent enrolled into one workspace refuses a control plane that says it serves another")
    func pinnedWorkspace() async throws {
        let runner = Self.runner(pinned: "rides"), unpinned = Self.runner(pinned: nil)
        #expect(runner.pinnedWorkspace(Self.welcome("payments")) == "rides")
        #expect(unpinned.pinnedWorkspace(Self.welcome("payments")) == "payments")
        try await runner.http.shutdown()
        try await unpinned.http.shutdown()
    }

    @Test("signing domains: each kind of document verifies only as itself; a document without a domain is refused")
    func domains() throws {
        let now = Date()
        let access = AccessSnapshot(workspace: "rides", version: 1, issuedAt: now, expiresAt: now.addingTimeInterval(60), entries: [])
        let registry = AgentRegistrySnapshot(workspace: "rides", revision: 1, issuedAt: now, definitions: [])
        let spec = Self.spec()
        for (document, kind) in [(try Self.keys.sign(try access.jsonValue()), 0), (try Self.keys.sign(try registry.jsonValue()), 1), (try Self.keys.sign(try spec.jsonValue()), 2)] {
            let payload = try document.verified(with: Self.keys.publicKey)
            #expect(((try? AccessSnapshot(verified: payload)) != nil) == (kind == 0))
            #expect(((try? AgentRegistrySnapshot(verified: payload)) != nil) == (kind == 1))
            #expect(((try? JobSpec(verified: payload)) != nil) == (kind == 2))
        }
        // A payload signed without any domain (as before domains existed) passes for nothing.
        guard case .object(var members) = try spec.jsonValue() else { Issue.record("not an object"); return }
        members["signing_domain"] = nil
        let legacy = try Self.keys.sign(.object(members)).verified(with: Self.keys.publicKey)
        #expect(throws: SigningDomainMismatch.self) { try JobSpec(verified: legacy) }
    }
}

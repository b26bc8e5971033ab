@testable import DataPlane
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Shared
import Testing
import TestSupport

/// An agent upgraded before its control plane: refused at hello with 409
/// `agent-version-unsupported`, it keeps asking (and claims nothing) until the
/// control plane, upgraded, welcomes it.
@Suite("Agent version refusal")
struct AgentVersionRefusalTests {
    /// A stand-in control plane that refuses the first `refusals` hellos, then welcomes.
    actor HelloCounter {
        var calls = 0
        let refusals: Int
        init(refusals: Int) { self.refusals = refusals }
        func next() -> Bool {
            calls += 1
            return calls > refusals
        }
    }

    @Test("the agent retries a version refusal with backoff and connects once the control plane accepts it; a token refusal still stops it")
    func retriesUntilAccepted() async throws {
        let key = SigningKeyPair.generate().publicKey
        let counter = HelloCounter(refusals: 2)
        let router = Router()
        router.post("/v1/agent/hello") { _, _ -> Response in
            let problem: (HTTPResponse.Status, String)
            if await counter.next() {
                let welcome = AgentWelcome(
                    agent: "edge", workspace: "rides", environment: "prod", heartbeatSeconds: 10, leaseSeconds: 30, maxClaimWaitSeconds: 30,
                    signingKeyFingerprint: key.fingerprint, serverTime: Date())
                return Response(
                    status: .ok, headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(bytes: try APICoding.makeEncoder().encode(welcome))))
            }
            problem = (.conflict, #"{"type":"urn:larder:problem:agent-version-unsupported","title":"Agent version unsupported","status":409,"detail":"agent release 9.9.0 is newer than this control plane (0.1.0): upgrade the control plane first","field":"version"}"#)
            return Response(
                status: problem.0, headers: [.contentType: "application/problem+json"], body: .init(byteBuffer: ByteBuffer(string: problem.1)))
        }
        router.post("/v1/agent/refused/v1/agent/hello") { _, _ -> Response in
            Response(status: .unauthorized, headers: [.contentType: "application/problem+json"], body: .init(byteBuffer: ByteBuffer(
                string: #"{"type":"urn:larder:problem:unauthenticated","title":"Unauthorized","status":401,"detail":"the token is revoked"}"#)))
        }
        try await withLoopbackServer(router, label: "test-control-plane") { base in
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-version-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: folder) }
            let logs = CapturedLogs()
            func runner(_ path: String) -> AgentRunner {
                AgentRunner(
                    configuration: AgentConfiguration(
                        controlPlaneURL: base + path, token: "lrd_test", publicKey: key, dataDirectory: folder.path),
                    executors: [], logger: logs.logger)
            }
            let started = ContinuousClock.now
            let upgraded = runner("")
            let welcome = try await upgraded.sayHello()
            try await upgraded.http.shutdown()
            #expect(welcome.agent == "edge")
            #expect(await counter.calls == 3, "two refusals, then the welcome")
            #expect(ContinuousClock.now - started >= .milliseconds(1_400), "it backed off (0.5 s, then 1 s) between tries")
            // Each refusal is logged as what it is, with the control plane's reason, not as a network failure.
            let lines = logs.lines.withLock { $0 }
            let refusals = lines.filter { $0.hasPrefix("error the control plane does not accept this agent's release") }
            #expect(refusals.count == 2 && refusals.allSatisfy { $0.contains("upgrade the control plane first") }, "\(lines)")
            #expect(!lines.contains { $0.contains("cannot reach the control plane") }, "\(lines)")
            // A refused token is not retried: the agent stops and says why.
            let revoked = runner("/v1/agent/refused")
            await #expect { _ = try await revoked.sayHello() } throws: {
                ($0 as? AgentRunner.Refusal)?.description.contains("refused this agent's token") == true
            }
            try await revoked.http.shutdown()
        }
    }
}

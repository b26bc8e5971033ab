import ControlPlane
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import PostgresNIO
import ServiceLifecycle
import Shared
import Testing
import TestSupport

/// Alert webhooks posted by a real control plane to a receiver on loopback.
@Suite("Alert webhooks")
struct WebhookTests {
    /// What the receiver saw.
    actor Receiver {
        struct Delivery { var id: String; var timestamp: String; var signature: String; var body: [UInt8]; var accepted: Bool }
        var deliveries: [Delivery] = []
        /// Requests still to refuse with 503 (an outage).
        var outage: Int

        init(outage: Int) { self.outage = outage }

        func receive(id: String, timestamp: String, signature: String, body: [UInt8]) -> Bool {
            let accepted = outage == 0
            if outage > 0 { outage -= 1 }
            deliveries.append(Delivery(id: id, timestamp: timestamp, signature: signature, body: body, accepted: accepted))
            return accepted
        }

        func accepted() -> [Delivery] { deliveries.filter(\.accepted) }
    }

    /// Runs a receiver on a free port of 127.0.0.1 during `body`.
    static func withReceiver<Result: Sendable>(_ receiver: Receiver, _ body: @Sendable (String) async throws -> Result) async throws -> Result {
        let router = Router()
        router.post("/hook") { request, _ -> HTTPResponse.Status in
            let bytes = try await request.body.collect(upTo: 1 << 20)
            let accepted = await receiver.receive(
                id: request.headers[HTTPField.Name("Larder-Delivery")!] ?? "", timestamp: request.headers[HTTPField.Name("Larder-Timestamp")!] ?? "",
                signature: request.headers[HTTPField.Name("Larder-Signature")!] ?? "", body: Array(bytes.readableBytesView))
            return accepted ? .ok : .serviceUnavailable
        }
        return try await withLoopbackServer(router, label: "test-receiver") { base in try await body(base + "/hook") }
    }

    @Test("each alert event reaches the receiver once it answers 2xx, signed with HMAC-SHA256, retried with backoff through an outage, never accepted twice")
    func signedRetriedDeduplicated() async throws {
        let receiver = Receiver(outage: 3)
        let secret = "a-shared-secret-of-some-length"
        try await Self.withReceiver(receiver) { url in
            let webhooks = AlertWebhookSettings(urls: [url], secret: secret, retryBase: .milliseconds(100))
            try await TestControlPlane.withControlPlane(jobs: JobsFixture.patientSettings, alertWebhooks: webhooks) { server in
                let client = server.client
                _ = try await client.createWorkspace("rides")
                var agents: [ControlPlaneClient] = []
                for index in 1...2 {
                    _ = try await client.createTestAgent(name: "agent-\(index)", environment: "prod", workspace: "rides", onlineStore: .redis)
                    let agent = ControlPlaneClient(baseURL: server.baseURL, token: try await client.createToken(for: "agent-\(index)").token)
                    _ = try await agent.hello(AgentHello(
                        instanceId: "i\(index)", version: "test", hostname: "test", capabilities: [.materialize], onlineStore: .redis))
                    agents.append(agent)
                }
                try await TestDatabase.withClient(server.database) { database in
                    let monitor = AlertMonitor(client: database, logger: Logger(label: "test"), heartbeat: .seconds(10), webhooks: [url])
                    // Both agents go quiet: two alerts, two deliveries, through a receiver refusing its first three requests.
                    let opened = try await monitor.evaluate(now: Date().addingTimeInterval(100)).opened
                    #expect(opened.count == 2)
                    #expect(try await monitor.evaluate(now: Date().addingTimeInterval(101)).opened.isEmpty)
                    try await Self.waitFor(2, receiver)
                    // agent-1 is back: its alert resolves, one more delivery.
                    try await Task.sleep(for: .milliseconds(1_200))
                    let before = Date()
                    _ = try await agents[0].heartbeat(AgentHeartbeat(instanceId: "i1", runningJobs: []))
                    #expect(try await monitor.evaluate(now: before.addingTimeInterval(29.4)).resolved.map(\.subject) == ["agent-1"])
                    try await Self.waitFor(3, receiver)
                }
            }
        }
        let all = await receiver.deliveries
        let accepted = await receiver.accepted()
        #expect(all.count >= 6, "three refused attempts, then three accepted")
        #expect(accepted.count == 3 && Set(accepted.map(\.id)).count == 3, "one accepted post per delivery")
        #expect(Set(all.filter { !$0.accepted }.map(\.id)).isSubset(of: Set(accepted.map(\.id))), "refused ones were retried")
        var events: [String] = []
        for delivery in accepted {
            let expected = "sha256=" + AlertWebhookSettings.signature(secret: secret, timestamp: delivery.timestamp, body: delivery.body)
            #expect(delivery.signature == expected)
            // Checked independently with swift-crypto, as a receiver would.
            let mac = HMAC<SHA256>.authenticationCode(
                for: Array((delivery.timestamp + ".").utf8) + delivery.body, using: SymmetricKey(data: Array(secret.utf8)))
            #expect(delivery.signature == "sha256=" + mac.map { String(format: "%02x", $0) }.joined())
            let body = try APICoding.makeDecoder().decode(AlertDelivery.self, from: Data(delivery.body))
            #expect(String(body.delivery) == delivery.id && body.alert.kind == "agent-offline" && body.alert.workspace == "rides")
            events.append("\(body.event) \(body.alert.subject)")
        }
        #expect(events.sorted() == ["opened agent-1", "opened agent-2", "resolved agent-1"])
    }

    static func waitFor(_ count: Int, _ receiver: Receiver) async throws {
        let deadline = Date().addingTimeInterval(30)
        while await receiver.accepted().count < count, Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(await receiver.accepted().count >= count)
    }
}

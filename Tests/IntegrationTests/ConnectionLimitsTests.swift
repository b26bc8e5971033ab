@testable import DataPlane
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import Shared
import Testing
import TestSupport

/// Slow and oversized clients against both servers, over real TCP on 127.0.0.1.
@Suite("Connection limits on both servers")
struct ConnectionLimitsTests {
    /// Short limits, so the tests take seconds.
    static var limits: HTTPConnectionLimits {
        var limits = HTTPConnectionLimits()
        limits.requestHeadTimeout = .seconds(3)
        limits.bodyGracePeriod = .seconds(3)
        limits.minimumBodyBytesPerSecond = 1_000
        return limits
    }

    static func port(_ baseURL: String) -> Int { Int(baseURL.split(separator: ":").last!)! }

    @Test("the control plane: an idle connection, a head sent a line at a time, a body trickling in are closed; a body without credentials past 64 KiB gets 413 before it is sent; oversized headers are refused; a long poll outlasting the head timeout is answered")
    func controlPlane() async throws {
        try await TestControlPlane.withControlPlane(limits: Self.limits) { server in
            let port = Self.port(server.baseURL)
            // Connected, nothing sent: closed.
            #expect(try RawSocket(port: port).readUntilClosed().closed)
            // A head that never ends (a header line every 300 ms): closed before it is complete.
            let slow = try RawSocket(port: port)
            slow.send("GET /v1/whoami HTTP/1.1\r\nHost: x\r\n")
            var lines = 0
            while lines < 40, slow.send("X-Slow-\(lines): y\r\n") {
                lines += 1
                try await Task.sleep(for: .milliseconds(300))
            }
            #expect(lines < 40, "the server kept a head open for \(lines) lines")
            // No credentials, a body announced past 64 KiB: 413 at once, and the connection closes.
            let large = try RawSocket(port: port)
            large.send("POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            let refused = large.readUntilClosed()
            #expect(refused.closed && refused.text.hasPrefix("HTTP/1.1 413"), "\(refused.text.prefix(200))")
            #expect(refused.text.contains("payload-too-large"))
            // With credentials, a body at 100 bytes/s: closed once past the grace period.
            let trickle = try RawSocket(port: port)
            trickle.send("POST /v1/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(server.adminToken)\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n")
            var sent = 0
            while sent < 100, trickle.send(String(repeating: " ", count: 10)) {
                sent += 1
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(sent < 100, "a body at 100 bytes/s was read for \(sent) tenths of a second")
            // A header line past 16 KiB: refused (4xx) and closed.
            let header = try RawSocket(port: port)
            header.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 20_000))\r\n\r\n")
            let big = header.readUntilClosed()
            #expect(big.closed && (big.text.isEmpty || big.text.hasPrefix("HTTP/1.1 4")), "\(big.text.prefix(100))")
            // Keep-alive requests within the limits work, one after the other.
            let good = try RawSocket(port: port)
            for _ in 0..<3 {
                good.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(good.readResponse(within: 20).hasPrefix("HTTP/1.1 200"))
            }
            // A long poll (an agent's claim, waiting 5 s with the head timeout at 3 s) is answered: no timer runs while answering.
            _ = try await server.client.createWorkspace("limits")
            _ = try await server.client.createTestAgent(name: "limits-agent", environment: "prod", workspace: "limits")
            let agent = ControlPlaneClient(baseURL: server.baseURL, token: try await server.client.createToken(for: "limits-agent").token)
            _ = try await agent.hello(AgentHello(instanceId: "i", version: LarderVersion.number, hostname: "h", capabilities: [.materialize]))
            let began = Date()
            #expect(try await agent.claim(ClaimRequest(instanceId: "i", kinds: [.materialize], waitSeconds: 5)) == nil)
            #expect(Date().timeIntervalSince(began) >= 4.5)
        }
    }

    @Test("the agent's feature server: a read with a bad token or a body past the limit is answered before its body, without 100 Continue, and the connection closes; a good one gets 100 Continue; idle connections close")
    func featureServer() async throws {
        let world = try FeatureServerEventLoopTests.World()
        defer { world.remove() }
        var settings = world.settings
        settings.connectionLimits = Self.limits
        let server = FeatureServer.http1(settings: settings, reader: world.reader, guard: world.accessGuard, metrics: AgentMetrics(), logger: Logger(label: "test"))
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let application = Application(
            router: world.router(), server: server, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                continuation.yield(channel.localAddress?.port ?? 0)
                continuation.finish()
            }, logger: Logger(label: "test"))
        let services = ServiceGroup(configuration: .init(services: [application], logger: Logger(label: "test")))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            var port = 0
            for await value in ports { port = value }
            let body = #"{"feature_service":"driver_ranking","entities":[{"driver_id":2}],"request_context":{"trip_distance_km":2.5}}"#
            func head(token: String, length: Int) -> String {
                "POST /v1/features/online HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\nContent-Type: application/json\r\n"
                    + "Content-Length: \(length)\r\nExpect: 100-continue\r\n\r\n"
            }
            // A bad token: 401 at once (no 100 Continue), the body never read, the connection closed.
            let stranger = try RawSocket(port: port)
            stranger.send(head(token: APIToken.generate().text, length: body.utf8.count))
            let refused = stranger.readUntilClosed()
            #expect(refused.closed && refused.text.hasPrefix("HTTP/1.1 401"), "\(refused.text.prefix(200))")
            // A valid token, a body past the limit: 413 at once.
            let large = try RawSocket(port: port)
            large.send(head(token: world.consumer, length: 1_000_000))
            let tooLarge = large.readUntilClosed()
            #expect(tooLarge.closed && tooLarge.text.hasPrefix("HTTP/1.1 413"), "\(tooLarge.text.prefix(200))")
            // A valid read: 100 Continue, then the answer.
            let good = try RawSocket(port: port)
            good.send(head(token: world.consumer, length: body.utf8.count))
            #expect(good.readResponse(within: 20).hasPrefix("HTTP/1.1 100"))
            good.send(body)
            #expect(good.readResponse(within: 20).hasPrefix("HTTP/1.1 200"))
            // Then idle: closed after the head timeout.
            #expect(good.readUntilClosed().closed)
            // A body without a length past the limit (chunked): answered 413 and closed.
            let chunked = try RawSocket(port: port)
            chunked.send("POST /v1/features/online HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(world.consumer)\r\nTransfer-Encoding: chunked\r\n\r\n")
            let chunk = String(repeating: "x", count: 700)
            chunked.send(String(chunk.utf8.count, radix: 16) + "\r\n" + chunk + "\r\n")
            let cut = chunked.readUntilClosed()
            #expect(cut.closed && cut.text.hasPrefix("HTTP/1.1 413"), "\(cut.text.prefix(200))")
            await services.triggerGracefulShutdown()
            try await group.waitForAll()
        }
    }
}

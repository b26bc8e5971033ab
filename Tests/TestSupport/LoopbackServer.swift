import Hummingbird
import HummingbirdCore
import Logging
import ServiceLifecycle

/// Runs `router` on a free port of 127.0.0.1 while `body` runs; `body` gets `http://127.0.0.1:<port>`.
/// For stand-ins of the other side of a protocol (a webhook receiver, a control plane),
/// and for the agent's feature server with its own HTTP/1 setup (`server`).
public func withLoopbackServer<Context: RequestContext, Result: Sendable>(
    _ router: Router<Context>, server: HTTPServerBuilder = .http1(), label: String, _ body: @Sendable (String) async throws -> Result
) async throws -> Result where Context.Source == ApplicationRequestContextSource {
    let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
    let application = Application(
        router: router, server: server, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
        onServerRunning: { channel in
            continuation.yield(channel.localAddress?.port ?? 0)
            continuation.finish()
        }, logger: Logger(label: label))
    return try await withThrowingTaskGroup(of: Void.self) { group in
        let services = ServiceGroup(configuration: .init(services: [application], logger: Logger(label: label)))
        group.addTask { try await services.run() }
        var port = 0
        for await value in ports { port = value }
        do {
            let result = try await body("http://127.0.0.1:\(port)")
            await services.triggerGracefulShutdown()
            try await group.waitForAll()
            return result
        } catch {
            await services.triggerGracefulShutdown()
            throw error
        }
    }
}

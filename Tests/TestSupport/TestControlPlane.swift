import ControlPlane
import Foundation
import Logging
import ServiceLifecycle
import Shared

/// A control plane running in this process on a free port of 127.0.0.1,
/// with its own fresh database, for tests that speak real HTTP to it.
public struct RunningControlPlane: Sendable {
    /// `http://127.0.0.1:<port>`.
    public let baseURL: String
    /// A client of it.
    public let client: ControlPlaneClient
    /// Its database.
    public let database: PostgresURL
}

public enum TestControlPlane {
    /// Starts a control plane on a new database (or `database`), runs `body`,
    /// then shuts the server down gracefully, whether `body` succeeded or not.
    public static func withControlPlane<Result: Sendable>(
        database: PostgresURL? = nil, _ body: (RunningControlPlane) async throws -> Result
    ) async throws -> Result {
        if let database { return try await run(on: database, body) }
        return try await TestDatabase.withIsolatedDatabase { url in try await run(on: url, body) }
    }

    static func run<Result: Sendable>(on database: PostgresURL, _ body: (RunningControlPlane) async throws -> Result) async throws -> Result {
        var logger = Logger(label: "larder.test-control-plane")
        logger.logLevel = .warning
        let configuration = ControlPlaneConfiguration(database: database, host: "127.0.0.1", port: 0, logLevel: .warning, databasePoolSize: 8)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let application = try ControlPlaneApplication.build(configuration: configuration, logger: logger) { port in
            continuation.yield(port)
            continuation.finish()
        }
        let group = ServiceGroup(configuration: .init(services: [application], logger: logger))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw CancellationError() }
            let baseURL = "http://127.0.0.1:\(port)"
            let running = RunningControlPlane(baseURL: baseURL, client: ControlPlaneClient(baseURL: baseURL), database: database)
            do {
                let result = try await body(running)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                return result
            } catch {
                await group.triggerGracefulShutdown()
                try? await tasks.waitForAll()
                throw error
            }
        }
    }
}

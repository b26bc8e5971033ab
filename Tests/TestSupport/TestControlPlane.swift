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
    /// A client of it, authenticated as the bootstrap admin.
    public let client: ControlPlaneClient
    /// The bootstrap admin's token.
    public let adminToken: String
    /// Its database.
    public let database: PostgresURL
}

public enum TestControlPlane {
    /// Starts a control plane on a new database (or `database`), runs `body`,
    /// then shuts the server down gracefully, whether `body` succeeded or not.
    /// `logger` receives the server's logs (tests capture them to check what is logged).
    /// `adminToken` is the bootstrap token (a new one by default); servers
    /// sharing a database must share it, since only the first one bootstraps.
    /// `tls` (certificate chain and key PEM files) makes it serve HTTPS.
    public static func withControlPlane<Result: Sendable>(
        database: PostgresURL? = nil, logger: Logger? = nil, adminToken: APIToken = .generate(),
        tls: TLSFiles? = nil, jobs: JobSettings = JobSettings(schedulerEnabled: false),
        alertWebhooks: AlertWebhookSettings? = nil, abuse: AbuseSettings = AbuseSettings(), _ body: (RunningControlPlane) async throws -> Result
    ) async throws -> Result {
        if let database {
            return try await run(
                on: database, logger: logger, adminToken: adminToken, tls: tls, jobs: jobs, alertWebhooks: alertWebhooks, abuse: abuse, body)
        }
        return try await TestDatabase.withIsolatedDatabase { url in
            try await run(on: url, logger: logger, adminToken: adminToken, tls: tls, jobs: jobs, alertWebhooks: alertWebhooks, abuse: abuse, body)
        }
    }

    static func run<Result: Sendable>(
        on database: PostgresURL, logger: Logger?, adminToken: APIToken, tls: TLSFiles?, jobs: JobSettings,
        alertWebhooks: AlertWebhookSettings? = nil, abuse: AbuseSettings = AbuseSettings(), _ body: (RunningControlPlane) async throws -> Result
    ) async throws -> Result {
        let logger = logger ?? {
            var logger = Logger(label: "larder.test-control-plane")
            logger.logLevel = .warning
            return logger
        }()
        var configuration = ControlPlaneConfiguration(
            database: database, host: "127.0.0.1", port: 0, tls: tls, logLevel: .warning, databasePoolSize: 8,
            bootstrapToken: adminToken, jobs: jobs, alertWebhooks: alertWebhooks)
        configuration.abuse = abuse
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
            let baseURL = "\(tls == nil ? "http" : "https")://127.0.0.1:\(port)"
            let running = RunningControlPlane(
                baseURL: baseURL, client: ControlPlaneClient(baseURL: baseURL, token: adminToken.text), adminToken: adminToken.text,
                database: database)
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

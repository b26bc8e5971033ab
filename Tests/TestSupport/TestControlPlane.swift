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
    /// A token of the bootstrap admin made for this run (the bootstrap token
    /// itself ends when a test makes another admin).
    public let adminToken: String
    /// The bootstrap token.
    public let bootstrapToken: String
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
        alertWebhooks: AlertWebhookSettings? = nil, abuse: AbuseSettings = AbuseSettings(), limits: HTTPConnectionLimits = HTTPConnectionLimits(),
        _ body: (RunningControlPlane) async throws -> Result
    ) async throws -> Result {
        if let database {
            return try await run(
                on: database, logger: logger, adminToken: adminToken, tls: tls, jobs: jobs, alertWebhooks: alertWebhooks, abuse: abuse,
                limits: limits, body)
        }
        return try await TestDatabase.withIsolatedDatabase { url in
            try await run(
                on: url, logger: logger, adminToken: adminToken, tls: tls, jobs: jobs, alertWebhooks: alertWebhooks, abuse: abuse, limits: limits, body)
        }
    }

    static func run<Result: Sendable>(
        on database: PostgresURL, logger: Logger?, adminToken: APIToken, tls: TLSFiles?, jobs: JobSettings,
        alertWebhooks: AlertWebhookSettings? = nil, abuse: AbuseSettings = AbuseSettings(), limits: HTTPConnectionLimits = HTTPConnectionLimits(),
        _ body: (RunningControlPlane) async throws -> Result
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
        configuration.connectionLimits = limits
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
            // The admin's own token, written straight into the database: it outlives the bootstrap token.
            let own = APIToken.generate()
            try await TestDatabase.withClient(database) { client in
                try await client.query(
                    """
                    INSERT INTO api_tokens (public_id, principal_id, secret_hash, description, created_by)
                    SELECT \(own.publicID), id, \(Data(own.secretHash)), 'test admin', 'test' FROM principals WHERE name = 'admin'
                    """, logger: logger)
            }
            let running = RunningControlPlane(
                baseURL: baseURL, client: ControlPlaneClient(baseURL: baseURL, token: own.text), adminToken: own.text,
                bootstrapToken: adminToken.text, database: database)
            do {
                let result = try await reportingHang("the test using the control plane at \(baseURL)", after: .seconds(300)) {
                    try await body(running)
                }
                try await reportingHang("the control plane at \(baseURL) to stop after its test") {
                    await group.triggerGracefulShutdown()
                    try await tasks.waitForAll()
                }
                return result
            } catch {
                try? await reportingHang("the control plane at \(baseURL) to stop after its test failed") {
                    await group.triggerGracefulShutdown()
                    try await tasks.waitForAll()
                }
                throw error
            }
        }
    }
}

extension ControlPlaneClient {
    /// Registers agent `name` in `environment` of `workspace`, creating the
    /// environment first (with `onlineStore`) when the workspace has none of that name.
    @discardableResult
    public func createTestAgent(
        name: String, environment: String, workspace: String, onlineStore: OnlineStoreKind = .embedded
    ) async throws -> PrincipalResource {
        if try await !environments(workspace: workspace).contains(where: { $0.name == environment }) {
            _ = try await createEnvironment(CreateEnvironmentRequest(name: environment, onlineStore: onlineStore), workspace: workspace)
        }
        return try await createAgent(name: name, environment: environment, workspace: workspace)
    }
}

import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOSSL
import PostgresNIO
import ServiceLifecycle
import Shared

/// Builds the control-plane server: the PostgreSQL pool, schema migrations
/// run before the server starts, and the HTTP API.
public enum ControlPlaneApplication {
    /// The application for `configuration`. Run it with `runService()` (it
    /// handles SIGTERM/SIGINT: in-flight requests finish, then the pool closes).
    /// `onListening` receives the bound port (useful with port 0).
    public static func build(
        configuration: ControlPlaneConfiguration, logger: Logger,
        onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) throws -> some ApplicationProtocol {
        let client = PostgresClient(
            configuration: configuration.database.clientConfiguration(maximumConnections: configuration.databasePoolSize),
            backgroundLogger: logger)
        let migrations = MigrationRunner()
        let wakeups = JobWakeups()
        let keys = SigningKeys(client: client, encryption: configuration.signingKeyEncryption, logger: logger)
        let replica = UUID().uuidString.lowercased()
        let metrics = ControlPlaneMetrics(replica: configuration.jobs.schedulerEnabled ? replica : nil)
        let access = PostgresAccessStore(client: client, logger: logger)
        let failures = FailedAttemptAudit(store: access, logger: logger)
        let (router, _) = makeRouter(
            client: client, logger: logger, abuse: configuration.abuse, failures: failures, settings: configuration.jobs, wakeups: wakeups,
            keys: keys, metrics: metrics)
        let started = StartupGate()
        var services: [any Service] = [
            client, AfterStartup(started, JobNotificationListener(client: client, wakeups: wakeups, logger: logger)),
            AfterStartup(started, FailedAttemptAudit.Flusher(failures)),
        ]
        if configuration.jobs.schedulerEnabled {
            let store = PostgresJobStore(client: client, logger: logger, keys: keys, settings: configuration.jobs)
            services.append(AfterStartup(started, JobScheduler(
                client: client, store: store, settings: configuration.jobs, logger: logger, replica: replica,
                webhooks: configuration.alertWebhooks?.urls ?? [], auditRetention: configuration.auditRetention,
                historyRetention: configuration.historyRetention)))
        }
        if let webhooks = configuration.alertWebhooks {
            services.append(AfterStartup(started, WebhookDispatcher(client: client, settings: webhooks, logger: logger)))
        }
        let http1 = ControlPlaneHTTP1Channel.builder(limits: configuration.connectionLimits)
        var server = http1
        if let tls = configuration.tls {
            server = try .tls(http1, tlsConfiguration: tls.serverConfiguration())
        }
        var application = Application(
            router: router, server: server,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: ControlPlane.component),
            services: services,
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.port
                logger.info("listening", metadata: [
                    "larder.address": "\(configuration.tls == nil ? "http" : "https")://\(configuration.host):\(port)",
                ])
                await onListening(port)
            },
            logger: logger)
        application.beforeServerStarts {
            // SIGTERM during start-up stops it: nothing below waits on the database without end.
            try await cancelWhenGracefulShutdown {
                try await DatabaseStartup.waitUntilReachable(configuration.database, patience: configuration.databaseWait, logger: logger)
                let applied = try await migrations.run(on: client, logger: logger)
                logger.info("database schema is up to date", metadata: [
                    "larder.database": "\(configuration.database)", "larder.migrations_applied": "\(applied.count)",
                ])
                try await bootstrapAdmin(
                    access: access, token: configuration.bootstrapToken, lifetime: configuration.bootstrapTokenLifetime, logger: logger)
                let signing = try await keys.current()
                logger.info("job specs are signed with key \(signing.publicKey.fingerprint)")
            }
            await started.open()
        }
        return application
    }

    /// The API router and the table of its routes with their permissions.
    public static func makeRouter(
        client: PostgresClient, logger: Logger, abuse: AbuseSettings = AbuseSettings(), throttle: AuthenticationThrottle? = nil,
        failures: FailedAttemptAudit? = nil,
        now: @escaping @Sendable () -> Date = { Date() }, settings: JobSettings = JobSettings(), wakeups: JobWakeups = JobWakeups(),
        keys: SigningKeys? = nil, metrics: ControlPlaneMetrics = ControlPlaneMetrics()
    ) -> (Router<ControlPlaneRequestContext>, [RouteDescriptor]) {
        let access = PostgresAccessStore(client: client, logger: logger)
        let router = Router(context: ControlPlaneRequestContext.self)
        // Outermost: times every request, errors included (the error middleware below answers them).
        router.add(middleware: APIMetricsMiddleware(metrics: metrics))
        router.add(middleware: APIErrorMiddleware())
        let table = RouteTable()
        router.add(middleware: RequestEdgeMiddleware(routes: table))
        let throttle = throttle ?? AuthenticationThrottle(burst: abuse.failureBurst, window: abuse.failureWindow)
        let passwords = PasswordWork(concurrency: abuse.loginConcurrency)
        let failures = failures ?? FailedAttemptAudit(store: access, logger: logger)
        router.add(middleware: AccessMiddleware(
            store: access, throttle: throttle, addresses: ClientAddresses(trustedProxies: abuse.trustedProxies), failures: failures, now: now))
        router.add(middleware: LogRequestsMiddleware(.debug))
        var routes = APIRouteBuilder(router: router)
        HealthRoutes(client: client, migrations: MigrationRunner()).register(on: &routes)
        // Counts and latencies, named by route, job kind, workspace and view: admins and scrape tokens.
        routes.add(.get, "/metrics", permission: .metrics) { _, context in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            let text = try await metrics.exposition(client: client, settings: settings, logger: context.logger)
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: text)))
        }
        let registry = RegistryService(store: PostgresRegistryStore(client: client, logger: logger), now: now)
        RegistryRoutes(registry: registry).register(on: &routes)
        AccessRoutes(store: access, throttle: throttle, passwords: passwords, failures: failures, now: now).register(on: &routes)
        let keys = keys ?? SigningKeys(client: client, logger: logger)
        let jobs = PostgresJobStore(client: client, logger: logger, keys: keys, settings: settings)
        JobRoutes(store: jobs).register(on: &routes)
        EnrollmentRoutes(enrollment: AgentEnrollment(client: client, logger: logger, keys: keys), throttle: throttle, store: access)
            .register(on: &routes)
        AgentRoutes(store: jobs, wakeups: wakeups, settings: settings, keys: keys).register(on: &routes)
        MonitoringRoutes(
            monitor: FreshnessMonitor(client: client, logger: logger),
            alerts: AlertMonitor(client: client, logger: logger, heartbeat: settings.heartbeatInterval),
            quality: QualityMonitor(client: client, logger: logger)
        ).register(on: &routes)
        table.set(routes.descriptors)
        return (router, routes.descriptors)
    }

    /// Creates the first admin when there are no principals: with the
    /// configured bootstrap token, or with a new one printed once to stderr.
    /// The token works for `lifetime`, or until another admin is made:
    /// long enough to make one's own credentials.
    static func bootstrapAdmin(access: any AccessStore, token configured: APIToken?, lifetime: TimeInterval, logger: Logger) async throws {
        let token = configured ?? APIToken.generate()
        guard try await access.bootstrapAdmin(name: "admin", token: token, expiresAt: Date().addingTimeInterval(lifetime)) else { return }
        if configured != nil {
            logger.notice("created the first admin 'admin' with the token from LARDER_BOOTSTRAP_TOKEN")
        } else {
            // Deliberately not through the logger: log pipelines keep lines; this must be seen once.
            FileHandle.standardError.write(Data("""
                larder-control: created the first admin, 'admin'. Its token is shown only this once; keep it safe:
                    \(token.text)
                Use it with: larder login --url <this server> --token <token>

                """.utf8))
        }
    }

    /// Runs a service once the gate opens (after migrations), so it never sees an old schema.
    struct AfterStartup<Wrapped: Service>: Service {
        let gate: StartupGate
        let wrapped: Wrapped

        init(_ gate: StartupGate, _ wrapped: Wrapped) {
            self.gate = gate
            self.wrapped = wrapped
        }

        func run() async throws {
            try await cancelWhenGracefulShutdown { await gate.wait() }
            if Task.isShuttingDownGracefully || Task.isCancelled { return }
            try await wrapped.run()
        }
    }
}

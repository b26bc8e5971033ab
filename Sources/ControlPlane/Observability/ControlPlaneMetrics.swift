import CoreMetrics
import Foundation
import Hummingbird
import Logging
import PostgresNIO
import Prometheus
import Shared
import Synchronization

/// The control plane's Prometheus metrics, served on `GET /metrics`.
///
/// API metrics are swift-metrics instruments made by a factory over this
/// replica's own registry (no global bootstrap, so tests may run several
/// control planes in one process). The job, queue, agent and scheduler gauges
/// are read from PostgreSQL when scraped, so every replica reports the same
/// ledger. `docs/operations.md` lists every metric.
public final class ControlPlaneMetrics: Sendable {
    /// Where every metric is kept.
    public let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory
    /// This replica's name in the scheduler lease (nil: it runs no scheduler).
    let replica: String?

    static let requestDuration = "larder_api_request_duration_seconds"
    static let requests = "larder_api_requests_total"

    private struct Route {
        var timer: CoreMetrics.Timer
        var codes: [Int: CoreMetrics.Counter] = [:]
    }

    private let routes = Mutex<[String: Route]>([:])
    /// A state or workspace with nothing left reads zero rather than its last count.
    private let gauges = ScrapedGauges(vanished: .zero)

    /// Metrics in a new registry; `replica` names this replica in the scheduler lease.
    public init(replica: String? = nil) {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets[Self.requestDuration] = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10), .seconds(30),
        ]
        self.registry = registry
        self.factory = factory
        self.replica = replica
    }

    /// Records one API request: its route (the registered path, never the
    /// caller's), its status and how long it took.
    func observe(method: String, route: String, status: Int, nanoseconds: Int64) {
        let key = method + " " + route
        let (timer, counter) = routes.withLock { routes in
            var held = routes[key] ?? Route(
                timer: CoreMetrics.Timer(label: Self.requestDuration, dimensions: [("method", method), ("route", route)], factory: factory))
            let counter = held.codes[status] ?? CoreMetrics.Counter(
                label: Self.requests, dimensions: [("method", method), ("route", route), ("code", "\(status)")], factory: factory)
            held.codes[status] = counter
            routes[key] = held
            return (held.timer, counter)
        }
        timer.recordNanoseconds(nanoseconds)
        counter.increment()
    }

    /// The ledger's gauges, read now.
    func readings(client: PostgresClient, settings: JobSettings, logger: Logger) async throws -> [ScrapedGauges.Reading] {
        var readings: [ScrapedGauges.Reading] = []
        // Jobs agents run (a backfill is only its chunks), by workspace, kind and state.
        for try await (workspace, kind, state, count) in try await client.query(
            """
            SELECT w.name, j.kind, j.state, count(*)::bigint FROM jobs j JOIN workspaces w ON w.id = j.workspace_id
            WHERE j.kind <> 'backfill' GROUP BY 1, 2, 3
            """, logger: logger).decode((String, String, String, Int64).self) {
            readings.append(.init(name: "larder_jobs", dimensions: [("workspace", workspace), ("kind", kind), ("state", state)], value: Double(count)))
        }
        // Every workspace reports its queue and agents, empty ones with zeros.
        let heartbeat = settings.heartbeatInterval.components.seconds * 3
        for try await (workspace, depth, oldest, online) in try await client.query(
            """
            SELECT w.name,
                   (SELECT count(*) FROM jobs j WHERE j.workspace_id = w.id AND j.state = 'queued' AND j.kind <> 'backfill'
                        AND j.not_before <= now())::bigint,
                   COALESCE((SELECT extract(epoch FROM now() - min(j.not_before)) FROM jobs j WHERE j.workspace_id = w.id
                        AND j.state = 'queued' AND j.kind <> 'backfill' AND j.not_before <= now()), 0)::float8,
                   (SELECT count(*) FROM agent_sessions s JOIN principals p ON p.id = s.principal_id
                        WHERE p.workspace_id = w.id AND s.last_seen_at > now() - make_interval(secs => \(heartbeat)))::bigint
            FROM workspaces w
            """, logger: logger).decode((String, Int64, Double, Int64).self) {
            readings.append(.init(name: "larder_job_queue_depth", dimensions: [("workspace", workspace)], value: Double(depth)))
            readings.append(.init(name: "larder_job_oldest_queued_seconds", dimensions: [("workspace", workspace)], value: oldest))
            readings.append(.init(name: "larder_agents_online", dimensions: [("workspace", workspace)], value: Double(online)))
        }
        // Freshness per view against its SLO, and the open alerts.
        let monitor = FreshnessMonitor(client: client, logger: logger)
        var workspaces: [String] = []
        for try await (name) in try await client.query("SELECT name FROM workspaces ORDER BY name", logger: logger).decode(String.self) {
            workspaces.append(name)
        }
        for workspace in workspaces {
            for reading in (try? await monitor.freshness(workspace: workspace)) ?? [] {
                let dimensions = [("workspace", workspace), ("view", reading.view), ("environment", reading.environment ?? "")]
                if let behind = reading.stalenessSeconds {
                    readings.append(.init(name: "larder_feature_view_staleness_seconds", dimensions: dimensions, value: Double(behind)))
                }
                if let slo = reading.expectedSeconds {
                    readings.append(.init(name: "larder_feature_view_freshness_slo_seconds", dimensions: dimensions, value: Double(slo)))
                    readings.append(.init(name: "larder_feature_view_stale", dimensions: dimensions, value: reading.state == .stale ? 1 : 0))
                }
            }
        }
        for try await (workspace, kind, count) in try await client.query(
            """
            SELECT w.name, a.kind, count(*)::bigint FROM alerts a JOIN workspaces w ON w.id = a.workspace_id
            WHERE a.resolved_at IS NULL GROUP BY 1, 2
            """, logger: logger).decode((String, String, Int64).self) {
            readings.append(.init(name: "larder_alerts_open", dimensions: [("workspace", workspace), ("kind", kind)], value: Double(count)))
        }
        var leader = false
        if let replica {
            for try await (holds) in try await client.query(
                "SELECT holder = \(replica) AND expires_at > now() FROM leader_leases WHERE name = 'scheduler'", logger: logger
            ).decode(Bool.self) { leader = holds }
        }
        readings.append(.init(name: "larder_scheduler_leader", dimensions: [], value: leader ? 1 : 0))
        return readings
    }

    /// The exposition text, with the ledger's gauges read now.
    public func exposition(client: PostgresClient, settings: JobSettings, logger: Logger) async throws -> [UInt8] {
        gauges.record(try await readings(client: client, settings: settings, logger: logger), factory: factory)
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}

/// Times every API request by its registered route, after the error
/// middleware has turned errors into responses (so failures count too).
struct APIMetricsMiddleware: RouterMiddleware {
    typealias Context = ControlPlaneRequestContext
    let metrics: ControlPlaneMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        var status = 500
        defer {
            let elapsed = ContinuousClock.now - started
            // Unmatched paths share one label: callers cannot grow the label set.
            metrics.observe(
                method: request.method.rawValue, route: context.endpointPath.map(Self.openAPIPath) ?? "unmatched", status: status,
                nanoseconds: elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
        }
        let response = try await next(request, context)
        status = Int(response.status.code)
        return response
    }

    /// Hummingbird's `/v1/workspaces/:workspace` as OpenAPI's `/v1/workspaces/{workspace}`.
    static func openAPIPath(_ path: String) -> String {
        path.split(separator: "/", omittingEmptySubsequences: false).map { part in
            part.hasPrefix(":") ? "{\(part.dropFirst())}" : String(part)
        }.joined(separator: "/")
    }
}

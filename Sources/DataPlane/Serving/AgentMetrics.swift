import CoreMetrics
import Foundation
import Prometheus
import Shared
import Synchronization

/// The agent's Prometheus metrics, served on the feature server's `/metrics`.
///
/// Request metrics are swift-metrics instruments made by a factory over the
/// agent's own registry (no global bootstrap, so tests may run several
/// agents in one process). Online-store gauges are refreshed when scraped.
/// `docs/operations.md` lists every metric.
public final class AgentMetrics: Sendable {
    /// Where every metric is kept.
    public let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory

    /// Latency of `POST /v1/features/online` by feature service.
    static let requestDuration = "larder_feature_request_duration_seconds"
    /// Requests by feature service and HTTP status.
    static let requests = "larder_feature_requests_total"
    /// Served feature values by status.
    static let values = "larder_feature_values_total"

    private struct ServiceInstruments {
        var timer: CoreMetrics.Timer
        /// Request counters by HTTP status.
        var requests: [Int: CoreMetrics.Counter] = [:]
    }

    private struct Instruments {
        var services: [String: ServiceInstruments] = [:]
        var pushed: [String: CoreMetrics.Counter] = [:]
    }

    private let instruments = Mutex(Instruments())
    /// Retired tables stop being reported.
    private let storeGauges = ScrapedGauges(vanished: .destroyed)
    private let statusCounters: [FeatureStatus: CoreMetrics.Counter]

    /// Creates the agent's metrics in a new registry.
    public init() {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets[Self.requestDuration] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1),
        ]
        self.registry = registry
        self.factory = factory
        var counters: [FeatureStatus: CoreMetrics.Counter] = [:]
        for status in [FeatureStatus.present, .notFound, .expired, .null] {
            counters[status] = CoreMetrics.Counter(label: Self.values, dimensions: [("status", status.rawValue)], factory: factory)
        }
        statusCounters = counters
    }

    /// Records one feature request: its service (`-` for a list of
    /// references, `none` when it failed before naming one), its HTTP status
    /// and how long it took; and the statuses of the values it served.
    func observe(service: String, status: Int, nanoseconds: Int64, grid: FeatureGrid? = nil, outputs: Int = 0) {
        let (timer, counter) = instruments.withLock { instruments in
            var held = instruments.services[service] ?? ServiceInstruments(
                timer: CoreMetrics.Timer(label: Self.requestDuration, dimensions: [("feature_service", service)], factory: factory))
            if let counter = held.requests[status] { return (held.timer, counter) }
            let counter = CoreMetrics.Counter(label: Self.requests, dimensions: [("feature_service", service), ("code", "\(status)")], factory: factory)
            held.requests[status] = counter
            instruments.services[service] = held
            return (held.timer, counter)
        }
        timer.recordNanoseconds(nanoseconds)
        counter.increment()
        guard let grid, outputs > 0 else { return }
        var present = 0, notFound = 0, expired = 0, null = 0
        for row in 0..<grid.entities {
            let base = row * grid.width
            for column in 0..<outputs {
                switch grid.statuses[base + column] {
                case .present: present += 1
                case .notFound: notFound += 1
                case .expired: expired += 1
                case .null: null += 1
                }
            }
        }
        for (status, count) in [(FeatureStatus.present, present), (.notFound, notFound), (.expired, expired), (.null, null)] where count > 0 {
            statusCounters[status]?.increment(by: count)
        }
    }

    /// Counts rows a push wrote, by push source.
    func pushed(_ rows: Int, source: String) {
        let counter = instruments.withLock { instruments in
            instruments.pushed[source] ?? {
                let made = CoreMetrics.Counter(label: "larder_rows_pushed_total", dimensions: [("source", source)], factory: factory)
                instruments.pushed[source] = made
                return made
            }()
        }
        counter.increment(by: rows)
    }

    /// The exposition text, with the online store's gauges as of `now`:
    /// entities and log bytes per table, and the age of the newest event per
    /// table (the view's freshness as this agent serves it).
    public func exposition(store: OnlineStore?, now: Date = Date()) -> [UInt8] {
        let nowMicros = Int64(now.timeIntervalSince1970 * 1_000_000)
        var readings: [ScrapedGauges.Reading] = []
        for schema in store?.schemas ?? [] {
            guard let table = store?.table(view: schema.view, version: schema.version) else { continue }
            let dimensions = [("view", schema.view), ("version", "\(schema.version)")]
            readings.append(.init(name: "larder_online_store_entities", dimensions: dimensions, value: Double(table.count)))
            readings.append(.init(name: "larder_online_store_log_bytes", dimensions: dimensions, value: Double(table.logSize)))
            if let newest = table.newestEventTime {
                readings.append(.init(name: "larder_feature_view_freshness_seconds", dimensions: dimensions, value: Double(nowMicros - newest) / 1_000_000))
            }
        }
        storeGauges.record(readings, factory: factory)
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}

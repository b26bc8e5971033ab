import CoreMetrics
import Synchronization

/// Gauges whose values are read when metrics are scraped (a store's size,
/// the ledger's counts): each reading sets its gauge, made on first sight;
/// a gauge no reading mentions any more is destroyed or set to zero.
public final class ScrapedGauges: Sendable {
    /// One value of one gauge.
    public struct Reading: Sendable {
        public var name: String
        public var dimensions: [(String, String)]
        public var value: Double

        /// Creates a reading.
        public init(name: String, dimensions: [(String, String)], value: Double) {
            self.name = name
            self.dimensions = dimensions
            self.value = value
        }
    }

    /// What becomes of a gauge that no reading mentions.
    public enum Vanished: Sendable {
        /// It is no longer reported (a retired table).
        case destroyed
        /// It reads zero (a state no job is in any more).
        case zero
    }

    private let gauges = Mutex<[String: CoreMetrics.Gauge]>([:])
    let vanished: Vanished

    /// Gauges treating vanished readings as `vanished` says.
    public init(vanished: Vanished) {
        self.vanished = vanished
    }

    /// Sets every gauge of `readings`, making missing ones with `factory`.
    public func record(_ readings: [Reading], factory: some MetricsFactory & Sendable) {
        gauges.withLock { gauges in
            var current: Set<String> = []
            for reading in readings {
                let key = reading.name + "\u{0}" + reading.dimensions.map(\.1).joined(separator: "\u{0}")
                current.insert(key)
                let gauge = gauges[key] ?? CoreMetrics.Gauge(label: reading.name, dimensions: reading.dimensions, factory: factory)
                gauges[key] = gauge
                gauge.record(reading.value)
            }
            for (key, gauge) in gauges where !current.contains(key) {
                switch vanished {
                case .destroyed:
                    gauge.destroy()
                    gauges[key] = nil
                case .zero:
                    gauge.record(0)
                }
            }
        }
    }
}

import Foundation
import Logging
import ServiceLifecycle

/// Compacts the online store now and then: entities past their TTL are
/// dropped and logs that outgrew their contents are rewritten.
public struct OnlineStoreMaintenance: Service {
    let store: OnlineStore
    let interval: Duration
    let logger: Logger

    /// Creates the service; it runs every `interval`.
    public init(store: OnlineStore, interval: Duration = .seconds(600), logger: Logger) {
        self.store = store
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully {
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) } } catch { return }
            let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
            let dropped = store.maintain(now: now, logger: logger)
            if dropped > 0 { logger.info("dropped expired entities from the online store", metadata: ["entities": "\(dropped)"]) }
        }
    }
}

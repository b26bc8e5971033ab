import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import Shared

/// What a push did, as its answer says.
public struct PushReceipt: Sendable, Hashable, Codable {
    /// The push source.
    public var source: String
    /// Rows accepted.
    public var rows: Int
    /// The feature views written (current versions), by name.
    public var views: [String]
    /// True when the idempotency key was seen before: nothing was written again.
    public var duplicate: Bool
}

/// Takes pushes for `PushSource`s: each push is checked whole, recorded in
/// the journal (with its idempotency key), then written to the online tables
/// of the plain views reading the source and folded into the live windows of
/// its aggregation views. Pushes are applied one at a time (an actor), so a
/// key is never applied twice, even by two requests racing.
///
/// Runs as a service too: as tile boundaries pass it rewrites the aggregation
/// values that changed, and compacts the journal.
public actor PushIngestor: Service {
    let store: OnlineBackend
    let reader: OnlineFeatureReader
    let metrics: AgentMetrics
    let logger: Logger
    /// The most rows one push may hold.
    let maxRows: Int
    /// How long idempotency keys are remembered, in microseconds.
    static let receiptRetention: Int64 = 24 * 3_600 * 1_000_000
    /// How far past the agent's clock an event time may be (clock skew), in microseconds.
    static let allowedSkew: Int64 = 3_600 * 1_000_000
    private let journal: PushJournal
    /// Replayed entries not applied yet (no registry snapshot at start).
    private var pending: [PushJournal.Entry] = []
    private var windows: [String: PushWindowState] = [:]
    private var receipts: [String: (receipt: PushReceipt, at: Int64)] = [:]
    /// Keys of pushes being applied (a push waits on the offline store, and the actor lets others in meanwhile).
    private var inFlight: Set<String> = []
    let offline: PushOfflineWriter?
    private var lastPrune = Date.distantPast
    /// True while the journal is being replayed.
    private var replaying = false

    /// Opens the journal in `directory` and replays it.
    public init(
        directory: String, store: OnlineBackend, reader: OnlineFeatureReader, metrics: AgentMetrics, offlineStore: (schema: String, url: PostgresURL)? = nil,
        maxRows: Int = 10_000, logger: Logger
    ) throws {
        offline = offlineStore.map { PushOfflineWriter(schema: $0.schema, url: $0.url, logger: logger) }
        self.store = store
        self.reader = reader
        self.metrics = metrics
        self.maxRows = maxRows
        self.logger = logger
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var replayed: [PushJournal.Entry] = []
        journal = try PushJournal(path: (directory as NSString).appendingPathComponent("journal.log")) { replayed.append($0) }
        pending = replayed
    }

    /// Opens the journal in `directory` and replays it into the embedded `store`.
    public init(
        directory: String, store: OnlineStore, reader: OnlineFeatureReader, metrics: AgentMetrics, offlineStore: (schema: String, url: PostgresURL)? = nil,
        maxRows: Int = 10_000, logger: Logger
    ) throws {
        try self.init(
            directory: directory, store: .embedded(store), reader: reader, metrics: metrics, offlineStore: offlineStore, maxRows: maxRows, logger: logger)
    }

    /// Applies `body` (`{"rows": […]}`) to source `source`, once per `key`.
    public func push(source: String, body: [UInt8], key: String?, now: Date = Date()) async throws -> PushReceipt {
        let micros = Int64(now.timeIntervalSince1970 * 1_000_000)
        try await replayPending(now: micros)
        if let key, let seen = receipts[Self.receiptKey(source, key)] {
            var receipt = seen.receipt
            receipt.duplicate = true
            return receipt
        }
        let catalog = try reader.catalog()
        let targets = try catalog.pushTargets(source: source)
        let rows = try JSONScalar.pushRows(json: body, limit: maxRows)
        let batch = try PushBatch(rows: rows, targets: targets, receivedAt: micros, limit: maxRows, latest: micros + Self.allowedSkew)
        let flight = Self.receiptKey(source, key ?? UUID().uuidString)
        guard inFlight.insert(flight).inserted else { throw PushError.inProgress(key ?? "") }
        defer { inFlight.remove(flight) }
        // The offline store first: if it fails, nothing is recorded and the client retries.
        let offlineViews = targets.plain.filter(\.offline)
        if offline == nil, let view = offlineViews.first?.schema.view ?? targets.windowed.first(where: \.offline)?.schema.view {
            throw PushError.offlineUnavailable("\(view) keeps an offline store, but this agent's configuration has no offline_store")
        }
        if let offline {
            let tables = offlineViews.map { view in
                (OfflineTable(schema: offline.schema, workspace: catalog.workspace, view: view.schema.view, version: view.schema.version, keys: view.schema.keys, outputs: view.schema.features, windowed: false),
                 OutputBatch(
                    keys: batch.entityKeys(view.schema.keys), eventTimes: batch.eventTimes, createdTimes: batch.createdTimes,
                    features: zip(view.columns, view.schema.features).map { batch.values($0, as: $1.type) }))
            }
            do {
                _ = try await offline.append(tables, events: batch, log: PushEventLog(schema: offline.schema, workspace: catalog.workspace, source: targets.source), key: key, receivedAt: micros)
            } catch {
                logger.warning("cannot append pushed rows to the offline store", metadata: ["larder.source": .string(source), "larder.error": "\(String(describing: error))"])
                throw PushError.offlineUnavailable("the offline store could not take the rows; nothing was written, retry the push")
            }
        }
        if let key, let seen = receipts[Self.receiptKey(source, key)] {
            // Another push with this key finished while this one waited.
            var receipt = seen.receipt
            receipt.duplicate = true
            return receipt
        }
        let entry = PushJournal.Entry(key: key, source: source, receivedAt: micros, body: body)
        try journal.append(entry)
        // Recorded as soon as it is durable: should applying fail now, a retry must not journal it twice
        // (the journal is replayed whole at the next start).
        let receipt = Self.receipt(batch, targets: targets)
        if let key { receipts[Self.receiptKey(source, key)] = (receipt, micros) }
        try await apply(batch, targets: targets, now: micros)
        metrics.pushed(batch.count, source: source)
        return receipt
    }

    static func receiptKey(_ source: String, _ key: String) -> String { source + "\u{0}" + key }

    static func receipt(_ batch: PushBatch, targets: PushTargets) -> PushReceipt {
        PushReceipt(
            source: targets.source.name, rows: batch.count,
            views: targets.plain.filter(\.online).map(\.schema.view) + targets.windowed.filter(\.online).map(\.schema.view), duplicate: false)
    }

    /// Writes a checked batch: plain views' rows, then the windows it touched.
    private func apply(_ batch: PushBatch, targets: PushTargets, now: Int64) async throws {
        for view in targets.plain where view.online {
            try await store.write(OnlineRows(
                keys: batch.entityKeys(view.schema.keys), eventTimes: batch.eventTimes, createdTimes: batch.createdTimes,
                features: zip(view.columns, view.schema.features).map { batch.values($0, as: $1.type) }), schema: view.schema, now: now)
            try await publish(view.schema)
        }
        for view in targets.windowed where view.online {
            let id = Self.windowID(view.schema)
            var state: PushWindowState
            if let held = windows[id] {
                state = held
            } else {
                // A view version seen for the first time (a new version, or after a restart): its
                // windows start from the journal's earlier pushes to the source, not from nothing.
                state = try earlierWindows(view, source: targets.source.name, before: batch)
            }
            let touched = state.fold(batch, keys: batch.entityKeys(view.schema.keys))
            let rows = state.rows(for: touched, at: state.boundary(atOrBefore: now), created: now)
            windows[id] = state   // kept before writing: a failed write must not lose the fold
            if let rows {
                try await store.write(rows, schema: view.schema, now: now)
                try await publish(view.schema)
            }
        }
    }

    /// Versions whose rows were pushed to Redis and that were made the served ones.
    private var published: Set<String> = []

    /// With Redis, makes a pushed view version the served one (once per version and process).
    private func publish(_ schema: OnlineTableSchema) async throws {
        guard case .redis(let redis, _) = store, !published.contains(Self.windowID(schema)) else { return }
        try await redis.publish(schema)
        published.insert(Self.windowID(schema))
    }

    static func windowID(_ schema: OnlineTableSchema) -> String { "\(schema.view)@\(schema.version)" }

    /// The window state of `view` built from the journal's pushes to `source`
    /// (all but `batch`, which the caller folds). Empty while replaying: the
    /// replay folds every entry in order itself.
    private func earlierWindows(_ view: PushTargets.WindowedView, source: String, before batch: PushBatch) throws -> PushWindowState {
        var state = PushWindowState(view: view)
        guard !replaying, let catalog = try? reader.catalog(), let targets = try? catalog.pushTargets(source: source) else { return state }
        let entries = try journal.entries()
        for entry in entries.dropLast() where entry.source == source {
            guard let rows = try? JSONScalar.pushRows(json: entry.body),
                  let earlier = try? PushBatch(rows: rows, targets: targets, receivedAt: entry.receivedAt, limit: .max, latest: .max)
            else { continue }
            _ = state.fold(earlier, keys: earlier.entityKeys(view.schema.keys))
        }
        return state
    }

    /// Applies journal entries replayed at start, once the registry is known.
    private func replayPending(now: Int64) async throws {
        guard !pending.isEmpty, let catalog = try? reader.catalog() else { return }
        let entries = pending
        pending = []
        replaying = true
        defer { replaying = false }
        var applied = 0
        for (position, entry) in entries.enumerated() {
            // Should applying fail, the entries not applied yet are kept for the next attempt.
            pending = Array(entries[(position + 1)...])
            // An entry whose source or rows no longer fit the registry is skipped: it was valid when accepted.
            guard let targets = try? catalog.pushTargets(source: entry.source), let rows = try? JSONScalar.pushRows(json: entry.body),
                  let batch = try? PushBatch(rows: rows, targets: targets, receivedAt: entry.receivedAt, limit: Int.max, latest: .max)
            else { continue }
            if let key = entry.key, entry.receivedAt >= now - Self.receiptRetention {
                receipts[Self.receiptKey(entry.source, key)] = (Self.receipt(batch, targets: targets), entry.receivedAt)
            }
            try await apply(batch, targets: targets, now: now)
            applied += 1
        }
        logger.info("replayed the push journal", metadata: ["larder.pushes": "\(applied)"])
    }

    /// Moves every window to the boundary at or before `now`, writing the
    /// values that changed; forgets old receipts; compacts the journal when it doubled.
    public func tick(now: Date = Date()) async throws {
        let micros = Int64(now.timeIntervalSince1970 * 1_000_000)
        try await replayPending(now: micros)
        if let catalog = try? reader.catalog() {
            // Versions no longer current stop being written (their tables retire with the view's).
            let current = Set(catalog.pushSources.flatMap { source in
                ((try? catalog.pushTargets(source: source))?.windowed ?? []).map { Self.windowID($0.schema) }
            })
            windows = windows.filter { current.contains($0.key) }
        }
        for (id, var state) in windows {
            if let rows = state.advance(to: state.boundary(atOrBefore: micros), created: micros) {
                try await store.write(rows, schema: state.view.schema, now: micros)
            }
            windows[id] = state
        }
        receipts = receipts.filter { $0.value.at >= micros - Self.receiptRetention }
        if let offline, now.timeIntervalSince(lastPrune) > 3_600 {
            lastPrune = now
            Task { [logger] in
                do { try await offline.pruneReceipts() } catch { logger.debug("cannot prune push receipts", metadata: ["larder.error": "\(error)"]) }
            }
        }
        if journal.size > 2 * journal.baseline + (8 << 20) {
            let horizon = micros - max(Self.receiptRetention, (windows.values.map { $0.view.longest + $0.tile }.max() ?? 0) * 1_000_000)
            try journal.compact { $0.receivedAt >= horizon }
        }
    }

    /// Brings the offline tables of push-fed aggregation views up to date
    /// with their sources' event logs (`PushedWindowTables`); returns the rows written.
    @discardableResult
    public func refreshOfflineWindows() async throws -> Int {
        guard let offline, let catalog = try? reader.catalog() else { return 0 }
        let views = catalog.pushSources.compactMap { try? catalog.pushTargets(source: $0) }
            .flatMap { targets in targets.windowed.filter(\.offline).map { (targets.source, $0) } }
        guard !views.isEmpty else { return 0 }
        let tables = PushedWindowTables(schema: offline.schema, logger: logger)
        let connection = try await offline.url.connect(logger: logger)
        do {
            var written = 0
            for (source, view) in views {
                let refresh = try await tables.refresh(view, log: PushEventLog(schema: offline.schema, workspace: catalog.workspace, source: source), on: connection)
                if refresh.entities > 0 {
                    logger.debug("refreshed a push-fed view's offline rows", metadata: [
                        "larder.view": "\(view.schema.view)", "larder.entities": "\(refresh.entities)", "larder.rows": "\(refresh.rows)",
                    ])
                }
                written += refresh.rows
            }
            try await connection.close()
            return written
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// How often the offline tables of push-fed aggregation views are refreshed.
    static let offlineRefreshInterval: TimeInterval = 60

    /// Ticks every few seconds until shutdown; refreshes the offline windows every minute.
    public func run() async throws {
        var lastRefresh = Date()
        while !Task.isShuttingDownGracefully {
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(5)) } } catch { return }
            do { try await tick() } catch { logger.warning("cannot advance the push windows", metadata: ["larder.error": "\(error)"]) }
            if Date().timeIntervalSince(lastRefresh) >= Self.offlineRefreshInterval {
                lastRefresh = Date()
                do { try await refreshOfflineWindows() } catch {
                    logger.warning("cannot refresh the offline rows of push-fed views", metadata: ["larder.error": "\(String(describing: error))"])
                }
            }
        }
    }
}

/// Why a push could not be taken (besides a bad body or an unknown source).
public enum PushError: Error, Sendable, CustomStringConvertible {
    /// A push with the same idempotency key is being applied.
    case inProgress(String)
    /// The offline store did not take the rows: nothing was written.
    case offlineUnavailable(String)

    public var description: String {
        switch self {
        case .inProgress(let key): return "a push with idempotency key '\(key)' is being applied; retry it"
        case .offlineUnavailable(let detail): return detail
        }
    }
}

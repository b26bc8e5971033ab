import Foundation
import NIOCore
import Shared
import Synchronization

/// Reads features for the feature server: resolves what a request names
/// against the agent's registry snapshot (never asking the control plane),
/// then reads the online store and computes the on-demand outputs.
///
/// The catalog is rebuilt when the registry cache holds a newer snapshot;
/// each feature service is resolved once per catalog.
public final class OnlineFeatureReader: Sendable {
    /// The store read.
    public let backend: OnlineBackend
    let registry: RegistryCache

    private struct Resolved {
        var catalog: ServingCatalog
        var services: [String: ResolvedRequest] = [:]
    }

    private let resolved: Mutex<Resolved?> = Mutex(nil)
    /// The revision of a registry snapshot that could not be read, if any.
    private let unusableRevision: Mutex<Int64?> = Mutex(nil)

    /// A reader of the embedded `store`, resolving names with the snapshot `registry` holds.
    public convenience init(store: OnlineStore, registry: RegistryCache) {
        self.init(backend: .embedded(store), registry: registry)
    }

    /// A reader of `backend`, resolving names with the snapshot `registry` holds.
    public init(backend: OnlineBackend, registry: RegistryCache) {
        self.backend = backend
        self.registry = registry
    }

    /// The embedded store, when reads are answered from this agent's memory (on the event loop).
    public var store: OnlineStore? { backend.embedded }

    /// The registry revision requests are resolved against, if the agent has a snapshot.
    public var revision: Int64? { registry.revision }

    /// The current catalog, rebuilt if the registry cache moved on.
    func catalog() throws(ServingError) -> ServingCatalog {
        guard let snapshot = registry.snapshot else { throw .noRegistry }
        let current = resolved.withLock { $0?.catalog }
        if let current, current.revision == snapshot.revision { return current }
        // A snapshot found unusable is not decoded again on every request.
        if let current, unusableRevision.withLock({ $0 == snapshot.revision }) { return current }
        let catalog: ServingCatalog
        do { catalog = try ServingCatalog(snapshot: snapshot) } catch {
            // A snapshot this agent cannot use: keep serving from the one before, if any.
            unusableRevision.withLock { $0 = snapshot.revision }
            if let current { return current }
            throw error
        }
        resolved.withLock { held in
            if held.map({ $0.catalog.revision < catalog.revision }) ?? true { held = Resolved(catalog: catalog) }
        }
        return catalog
    }

    /// The resolution of feature service `name` (cached per registry revision).
    public func resolve(service name: String) throws(ServingError) -> ResolvedRequest {
        // The common case, checked first: this service resolved at the current revision.
        if let revision = registry.revision,
           let cached = resolved.withLock({ held in held?.catalog.revision == revision ? held?.services[name] : nil }) {
            return cached
        }
        let catalog = try catalog()
        if let cached = resolved.withLock({ held in held?.catalog.revision == catalog.revision ? held?.services[name] : nil }) { return cached }
        var request = try catalog.resolve(service: name)
        request.answerOpening = OnlineFeatureResponse.opening(request, service: name, revision: catalog.revision)
        resolved.withLock { held in
            if held?.catalog.revision == catalog.revision { held?.services[name] = request }
        }
        return request
    }

    /// The resolution of feature references.
    public func resolve(references: [String]) throws(ServingError) -> ResolvedRequest {
        try catalog().resolve(references: references)
    }

    /// Reads `resolved` for the rows of `batch` at `now` (microseconds since the epoch), from any backend.
    public func readAsync(_ resolved: ResolvedRequest, batch: EntityBatch, now: Int64) async throws -> FeatureGrid {
        guard case .redis(let redis, _) = backend else { return read(resolved, batch: batch, now: now) }
        var grid = FeatureGrid(entities: batch.count, width: resolved.width)
        try await redis.read(Self.redisReads(resolved, batch: batch), now: now, into: &grid)
        if !resolved.derivations.isEmpty { Self.derive(resolved, batch: batch, into: &grid) }
        return grid
    }

    /// What a Redis read of `resolved` for `batch` asks for, view by view.
    static func redisReads(_ resolved: ResolvedRequest, batch: EntityBatch) -> [RedisOnlineStore.ViewRead] {
        resolved.views.map { view in
            RedisOnlineStore.ViewRead(
                view: view.view, version: view.version, keys: (0..<batch.count).map { batch.key($0, columns: view.keys) }, reads: view.reads)
        }
    }

    /// Reads `resolved` for `batch` at `now` from any backend and writes the JSON answer (see `answer`).
    public func answerAsync(_ resolved: ResolvedRequest, batch: EntityBatch, now: Int64, service: String?) async throws -> (body: [UInt8], grid: FeatureGrid) {
        let grid = try await readAsync(resolved, batch: batch, now: now)
        let opening = resolved.answerOpening ?? OnlineFeatureResponse.opening(resolved, service: service, revision: revision ?? 0)
        return (OnlineFeatureResponse.encode(grid, resolved: resolved, opening: opening), grid)
    }

    /// Reads `resolved` for `batch` at `now` and writes the JSON answer, completing on
    /// `eventLoop`: from the embedded store at once; from Redis on a connection
    /// running on that loop when one is open and the served versions are known
    /// (no thread in between), else through `answerAsync`.
    func answer(
        _ resolved: ResolvedRequest, batch: EntityBatch, now: Int64, service: String?, on eventLoop: any EventLoop
    ) -> EventLoopFuture<(body: [UInt8], grid: FeatureGrid)> {
        guard case .redis(let redis, _) = backend else {
            return eventLoop.makeSucceededFuture(answer(resolved, batch: batch, now: now, service: service))
        }
        guard let read = redis.read(Self.redisReads(resolved, batch: batch), now: now, grid: FeatureGrid(entities: batch.count, width: resolved.width), on: eventLoop) else {
            return eventLoop.makeFutureWithTask { try await self.answerAsync(resolved, batch: batch, now: now, service: service) }
        }
        let opening = resolved.answerOpening ?? OnlineFeatureResponse.opening(resolved, service: service, revision: revision ?? 0)
        return read.hop(to: eventLoop).map { grid in
            var grid = grid
            if !resolved.derivations.isEmpty { Self.derive(resolved, batch: batch, into: &grid) }
            return (OnlineFeatureResponse.encode(grid, resolved: resolved, opening: opening), grid)
        }
    }

    /// Reads `resolved` for the rows of `batch` at `now` (microseconds since the epoch) from the
    /// embedded store, without waiting (nothing is read from another backend: see `readAsync`).
    public func read(_ resolved: ResolvedRequest, batch: EntityBatch, now: Int64) -> FeatureGrid {
        var grid = FeatureGrid(entities: batch.count, width: resolved.width)
        guard let store else { return grid }
        for view in resolved.views {
            guard let table = store.servingTable(view: view.view, version: view.version) else { continue }
            // Match by name and type: a previous version's table may lack a feature or hold it as another type.
            var reads: [(feature: Int, column: Int)] = []
            for read in view.reads {
                if let index = table.schema.features.firstIndex(where: { $0.name == read.feature && $0.type == read.type }) {
                    reads.append((index, read.column))
                }
            }
            guard !reads.isEmpty else { continue }
            var keys: [EntityKey] = []
            keys.reserveCapacity(batch.count)
            for row in 0..<batch.count { keys.append(batch.key(row, columns: view.keys)) }
            table.gather(keys, now: now, reads: reads, into: &grid)
        }
        if !resolved.derivations.isEmpty { Self.derive(resolved, batch: batch, into: &grid) }
        return grid
    }

    /// Reads `resolved` for `batch` at `now` and writes the JSON answer
    /// (see `OnlineFeatureResponse`), naming `service` when one was asked for.
    public func answer(_ resolved: ResolvedRequest, batch: EntityBatch, now: Int64, service: String?) -> (body: [UInt8], grid: FeatureGrid) {
        let grid = read(resolved, batch: batch, now: now)
        let opening = resolved.answerOpening ?? OnlineFeatureResponse.opening(resolved, service: service, revision: revision ?? 0)
        return (OnlineFeatureResponse.encode(grid, resolved: resolved, opening: opening), grid)
    }

    /// Computes the on-demand outputs row by row. A computed value's event
    /// time is that of the oldest input its expression reads, so callers see its age.
    static func derive(_ resolved: ResolvedRequest, batch: EntityBatch, into grid: inout FeatureGrid) {
        var inputs: [FeatureValue] = []
        for row in 0..<batch.count {
            let base = row * grid.width
            for derivation in resolved.derivations {
                inputs.removeAll(keepingCapacity: true)
                var oldest = Int64.max
                for input in derivation.inputs {
                    switch input {
                    case .column(let column): inputs.append(grid.values[base + column])
                    case .requestField(let index): inputs.append(batch.requestValues[index][row])
                    }
                }
                for column in derivation.timedColumns {
                    let time = grid.eventTimes[base + column]
                    if time != FeatureGrid.noTime, time < oldest { oldest = time }
                }
                let value = derivation.expression.evaluate(inputs)
                grid.values[base + derivation.column] = value
                grid.statuses[base + derivation.column] = FeatureStatus(of: value)
                grid.eventTimes[base + derivation.column] = oldest == Int64.max ? FeatureGrid.noTime : oldest
            }
        }
    }
}

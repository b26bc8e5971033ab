import Foundation
import Shared

/// What a push to one `PushSource` writes: the source's schema, and the
/// current version of every feature view that reads it.
struct PushTargets: Sendable {
    /// A plain view: each feature is a column of the pushed rows.
    struct PlainView: Sendable {
        var schema: OnlineTableSchema
        /// The pushed column each feature reads, in feature order.
        var columns: [String]
        var online: Bool
        var offline: Bool
    }

    /// A time-window aggregation view, folded incrementally.
    struct WindowedView: Sendable {
        var schema: OnlineTableSchema
        /// The pushed columns aggregated, the windowed features and their output columns.
        var layout: AggregationLayout
        var aggregator: WindowAggregator
        /// The longest window, in seconds.
        var longest: Int64
        var online: Bool
        /// Whether its offline table is derived from the source's event log.
        var offline: Bool
    }

    var source: SourceDefinition
    var plain: [PlainView]
    var windowed: [WindowedView]
    /// The registry revision they were resolved at.
    var revision: Int64
}

extension ServingCatalog {
    /// The targets of a push to source `name`: 404 when there is no push source of that name.
    func pushTargets(source name: String) throws(ServingError) -> PushTargets {
        guard let source = repository.sources.first(where: { $0.name == name }), case .push = source.connector else {
            throw .unknownSource(name)
        }
        var targets = PushTargets(source: source, plain: [], windowed: [], revision: revision)
        let types = source.schema
        for view in repository.featureViews where view.source == name {
            let keys = joinKeys[view.name] ?? []
            let version = versions[view.name] ?? 1
            let ttl = view.ttl.map(\.seconds).flatMap { $0 > 0 ? $0 : nil }
            if view.aggregations.isEmpty {
                let features = view.features.map { Column(name: $0.name, type: $0.type) }
                targets.plain.append(.init(
                    schema: OnlineTableSchema(view: view.name, version: version, keys: keys, features: features, ttlSeconds: ttl),
                    columns: view.features.map { $0.column ?? $0.name }, online: view.online, offline: view.offline))
                continue
            }
            let layout = AggregationLayout(view.aggregations, sourceTypes: types)
            let windows = view.aggregations.flatMap(\.windows).map(\.seconds)
            let tile = view.slide?.seconds ?? windows.reduce(0) { Self.gcd($0, $1) }
            guard let aggregator = try? WindowAggregator(tile: tile, features: layout.features) else {
                throw .unreadableSnapshot("the windows of \(view.name) are not whole slides")
            }
            targets.windowed.append(.init(
                schema: OnlineTableSchema(view: view.name, version: version, keys: keys, features: layout.outputs, ttlSeconds: ttl),
                layout: layout, aggregator: aggregator, longest: windows.max() ?? tile, online: view.online, offline: view.offline))
        }
        return targets
    }

    static func gcd(_ a: Int64, _ b: Int64) -> Int64 { b == 0 ? a : gcd(b, a % b) }

    /// The push sources of the registry, by name.
    var pushSources: [String] {
        repository.sources.compactMap { source in
            if case .push = source.connector { return source.name }
            return nil
        }
    }
}

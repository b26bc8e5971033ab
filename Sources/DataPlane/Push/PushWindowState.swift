import Foundation
import Shared

/// The live time-window state of one push-fed aggregation view version:
/// each entity's partial-aggregate tiles over its longest window.
///
/// Values follow the materialization engine's semantics exactly: at tile
/// boundary `b` a feature with window `w` covers events with
/// `b - w <= time < b`, and the value at instant `t` is the value at the last
/// boundary at or before `t`. A pushed event therefore changes what is served
/// only once its tile has closed (at once, if it arrived late for a closed
/// tile); `advance(to:)` recomputes entities as boundaries pass.
struct PushWindowState {
    let view: PushTargets.WindowedView
    /// Each entity's tiles (index → one partial aggregate per input).
    private(set) var tiles: [EntityKey: [Int64: [PartialAggregate]]] = [:]
    /// The values last written to the online store, per entity.
    private var served: [EntityKey: [Double?]] = [:]
    /// The boundary `advance(to:)` last moved to.
    private var advancedTo = Int64.min

    init(view: PushTargets.WindowedView) {
        self.view = view
    }

    var tile: Int64 { view.aggregator.tile }

    /// The boundary (seconds) at or before `micros`.
    func boundary(atOrBefore micros: Int64) -> Int64 {
        micros.dividedRoundingDown(by: 1_000_000).dividedRoundingDown(by: tile) * tile
    }

    /// Adds events to their entities' tiles; returns the entities touched.
    mutating func fold(_ batch: PushBatch, keys: [EntityKey]) -> Set<EntityKey> {
        let inputs = view.layout.inputs.map { batch.numbers($0) }
        var touched = Set<EntityKey>()
        for row in 0..<batch.count {
            let seconds = batch.eventTimes[row].dividedRoundingDown(by: 1_000_000)
            let created = batch.createdTimes[row].dividedRoundingDown(by: 1_000_000)
            let index = view.aggregator.tileIndex(of: seconds)
            var entity = tiles[keys[row]] ?? [:]
            var aggregates = entity[index] ?? Array(repeating: PartialAggregate(), count: inputs.count)
            for input in inputs.indices { aggregates[input].add(inputs[input][row], time: seconds, created: created) }
            entity[index] = aggregates
            tiles[keys[row]] = entity
            touched.insert(keys[row])
        }
        return touched
    }

    /// The rows to write for `keys` at boundary `boundary` (seconds): those
    /// whose values differ from what was last written. `created` (microseconds) orders equal boundaries.
    mutating func rows(for keys: some Sequence<EntityKey>, at boundary: Int64, created: Int64) -> OnlineRows? {
        var written: [EntityKey] = [], values: [[Double?]] = []
        for key in keys {
            let now = view.aggregator.rows(tiles: tiles[key] ?? [:], from: boundary, to: boundary).first?.values
                ?? Array(repeating: nil, count: view.aggregator.features.count)
            guard served[key] != now else { continue }
            served[key] = now
            written.append(key)
            values.append(now)
        }
        guard !written.isEmpty else { return nil }
        let columns = view.layout.columns(values)
        return OnlineRows(
            keys: written, eventTimes: Array(repeating: boundary * 1_000_000, count: written.count),
            createdTimes: Array(repeating: created, count: written.count), features: columns)
    }

    /// Every entity's row at `boundary` that changed, then forgets tiles no
    /// window can reach any more (and entities left with none).
    mutating func advance(to boundary: Int64, created: Int64) -> OnlineRows? {
        // Values change only as boundaries pass (pushes rewrite the entities they touch themselves).
        guard boundary != advancedTo else { return nil }
        advancedTo = boundary
        let rows = rows(for: Array(tiles.keys), at: boundary, created: created)
        let oldest = view.aggregator.tileIndex(of: boundary - view.longest)
        for (key, entity) in tiles {
            let kept = entity.filter { $0.key >= oldest }
            if kept.isEmpty {
                tiles[key] = nil
                served[key] = nil
            } else if kept.count != entity.count {
                tiles[key] = kept
            }
        }
        return rows
    }
}

import DataPlane
import Foundation
import Shared
import Testing
import TestSupport

/// The aggregation engine against a brute-force computation: for every
/// boundary, every feature's function over exactly the events in its window.
@Suite("Window aggregation engine")
struct WindowAggregatorTests {
    /// The brute-force value of `function` over `values` (events with their times).
    static func bruteForce(_ function: AggregationFunction, _ events: [(value: Double, time: Int64, created: Int64)]) -> Double? {
        let values = events.map(\.value)
        switch function {
        case .count: return Double(values.count)
        case .sum: return values.isEmpty ? nil : values.reduce(0, +)
        case .mean: return values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
        case .min: return values.min()
        case .max: return values.max()
        case .last: return events.max { ($0.time, $0.created, $0.value) < ($1.time, $1.created, $1.value) }?.value
        case .stddev:
            guard values.count >= 2 else { return nil }
            let mean = values.reduce(0, +) / Double(values.count)
            return (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count - 1)).squareRoot()
        }
    }

    static func close(_ a: Double?, _ b: Double?) -> Bool {
        switch (a, b) {
        case (nil, nil): return true
        case (let a?, let b?): return abs(a - b) <= 1e-9 * max(1, abs(a), abs(b))
        default: return false
        }
    }

    struct Scenario {
        var tile: Int64
        var features: [WindowedFeature]
        var events: [AggregationEvent]
        var from: Int64
        var to: Int64
    }

    static func scenario(seed: UInt64) -> Scenario {
        var random = SeededGenerator(seed: seed)
        let tile = [60, 300, 3_600].randomElement(using: &random)! as Int64
        let features = (0..<Int.random(in: 1...5, using: &random)).map { _ in
            WindowedFeature(
                function: AggregationFunction.allCases.randomElement(using: &random)!, input: Int.random(in: 0..<2, using: &random),
                window: tile * Int64.random(in: 1...12, using: &random))
        }
        let from = 1_735_689_600 + Int64.random(in: 0..<86_400, using: &random)   // 2025-01-01 and a bit
        let to = from + tile * Int64.random(in: 0...40, using: &random)
        let fractional = Bool.random(using: &random)
        let events = (0..<Int.random(in: 0...250, using: &random)).map { _ in
            // Some events fall before `from` (they count in early windows), some exactly on boundaries.
            let time = Bool.random(using: &random) && Bool.random(using: &random)
                ? from - tile * Int64.random(in: -20...12, using: &random)
                : Int64.random(in: (from - 12 * tile)...(to + tile), using: &random)
            let value: () -> Double? = {
                guard Int.random(in: 0..<100, using: &random) >= 15 else { return nil }
                let whole = Double(Int.random(in: -50...50, using: &random))
                return fractional ? whole + Double(Int.random(in: 0..<1_000, using: &random)) / 1_000 : whole
            }
            return AggregationEvent(time: time, created: time + Int64.random(in: 0...2, using: &random), inputs: [value(), value()])
        }.shuffled(using: &random)
        return Scenario(tile: tile, features: features, events: events, from: from, to: to)
    }

    /// The engine's value at each boundary: the last row at or before it.
    static func valuesAtBoundaries(_ rows: [AggregatedRow], scenario: Scenario, aggregator: WindowAggregator) -> [Int64: [Double?]] {
        var result: [Int64: [Double?]] = [:]
        var current: [Double?]?
        var next = 0
        for index in aggregator.tileIndex(of: scenario.from)...aggregator.tileIndex(of: scenario.to) {
            let boundary = index * scenario.tile
            while next < rows.count, rows[next].boundary <= boundary {
                current = rows[next].values
                next += 1
            }
            result[boundary] = current
        }
        return result
    }

    @Test("every feature at every boundary equals the brute-force value over its window (random events, out of order, nulls, ties)",
          arguments: Array(1...60) as [UInt64])
    func matchesBruteForce(seed: UInt64) throws {
        let scenario = Self.scenario(seed: seed)
        let aggregator = try WindowAggregator(tile: scenario.tile, features: scenario.features)
        let rows = aggregator.rows(tiles: aggregator.tiles(of: scenario.events, inputs: 2), from: scenario.from, to: scenario.to)
        #expect(rows.map(\.boundary) == rows.map(\.boundary).sorted() && Set(rows.map(\.boundary)).count == rows.count)
        let engine = Self.valuesAtBoundaries(rows, scenario: scenario, aggregator: aggregator)
        for (boundary, values) in engine.sorted(by: { $0.key < $1.key }) {
            let actual = try #require(values, "no row at or before the first boundary")
            for (position, feature) in scenario.features.enumerated() {
                let inWindow = scenario.events.compactMap { event -> (Double, Int64, Int64)? in
                    guard event.time >= boundary - feature.window, event.time < boundary, let value = event.inputs[feature.input] else { return nil }
                    return (value, event.time, event.created)
                }
                let expected = Self.bruteForce(feature.function, inWindow.map { (value: $0.0, time: $0.1, created: $0.2) })
                #expect(Self.close(actual[position], expected),
                        "seed \(seed): \(feature.function) over \(feature.window) s at \(boundary): engine \(String(describing: actual[position])), brute force \(String(describing: expected))")
            }
        }
    }

    @Test("late events only join their tiles: tiles built in two batches and merged give the same rows", arguments: Array(1...20) as [UInt64])
    func lateEvents(seed: UInt64) throws {
        let scenario = Self.scenario(seed: seed &+ 1_000)
        let aggregator = try WindowAggregator(tile: scenario.tile, features: scenario.features)
        let split = scenario.events.count / 2
        var tiles = aggregator.tiles(of: scenario.events.prefix(split), inputs: 2)
        for (index, late) in aggregator.tiles(of: scenario.events.dropFirst(split), inputs: 2) {
            let early = tiles[index] ?? [PartialAggregate(), PartialAggregate()]
            tiles[index] = zip(early, late).map { $0.merged(with: $1) }
        }
        let incremental = aggregator.rows(tiles: tiles, from: scenario.from, to: scenario.to)
        let whole = aggregator.rows(tiles: aggregator.tiles(of: scenario.events, inputs: 2), from: scenario.from, to: scenario.to)
        #expect(incremental.map(\.boundary) == whole.map(\.boundary))
        for (a, b) in zip(incremental, whole) {
            #expect(zip(a.values, b.values).allSatisfy { Self.close($0, $1) })
        }
    }

    @Test("rows appear only where a value changes, and always at the first boundary")
    func sparseRows() throws {
        let hour: Int64 = 3_600
        let aggregator = try WindowAggregator(tile: hour, features: [WindowedFeature(function: .count, input: 0, window: 2 * hour)])
        let events = [AggregationEvent(time: 10 * hour + 5, created: 10 * hour + 5, inputs: [1])]
        let rows = aggregator.rows(tiles: aggregator.tiles(of: events, inputs: 1), from: 0, to: 20 * hour)
        // Empty at 0; the event counts at boundaries 11h and 12h; it has left the window at 13h.
        #expect(rows.map(\.boundary) == [0, 11 * hour, 13 * hour])
        #expect(rows.map(\.values) == [[0], [1], [0]])
        #expect(throws: WindowAggregator.Invalid.self) { try WindowAggregator(tile: hour, features: [WindowedFeature(function: .sum, input: 0, window: 90 * 60)]) }
    }

    @Test("integer sums stay exact past 2^53; the latest value is chosen by event time, then created time")
    func exactness() {
        var aggregate = PartialAggregate()
        aggregate.add(Double(1 << 53), time: 1, created: 1)
        aggregate.add(1, time: 2, created: 2)
        aggregate.add(1, time: 2, created: 1)
        #expect(aggregate.integerSum == Int64(9_007_199_254_740_994))
        #expect(aggregate.value(of: .count) == 3)
        var late = PartialAggregate()
        late.add(7, time: 2, created: 3)
        #expect(aggregate.merged(with: late).value(of: .last) == 7)
        #expect(late.merged(with: aggregate).value(of: .last) == 7)
        #expect(PartialAggregate().value(of: .count) == 0 && PartialAggregate().value(of: .sum) == nil)
    }
}

@testable import DataPlane
import Foundation
import Logging
import Shared
import Testing
import TestSupport

/// The compact tile store and the passes a long aggregation job is cut into
/// must not change a single value.
@Suite("Aggregation memory: packed tiles and passes")
struct AggregationPassesTests {
    @Test("tiles packed by TileStore give the rows of whole partial aggregates", arguments: Array(1...40) as [UInt64])
    func packedTiles(seed: UInt64) throws {
        let scenario = WindowAggregatorTests.scenario(seed: seed)
        let aggregator = try WindowAggregator(tile: scenario.tile, features: scenario.features)
        var store = TileStore(layouts: (0..<2).map { input in
            TileStore.Layout(functions: scenario.features.filter { $0.input == input }.map(\.function))
        })
        for event in scenario.events {
            store.add(key: .int(7), tile: aggregator.tileIndex(of: event.time), inputs: event.inputs, time: event.time, created: event.created)
        }
        let expected = aggregator.rows(tiles: aggregator.tiles(of: scenario.events, inputs: 2), from: scenario.from, to: scenario.to)
        let packed = store.keys.isEmpty ? [:] : store.tiles(ofEntity: 0)
        #expect(aggregator.rows(tiles: packed, from: scenario.from, to: scenario.to) == expected, "seed \(seed)")
    }

    /// A CSV of random events for `entities` drivers over `days` days from 2025-01-01, and the view aggregating them.
    static func world(seed: UInt64) throws -> (folder: URL, spec: JobSpec) {
        var random = SeededGenerator(seed: seed)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-passes-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let start: Int64 = 1_735_689_600
        var text = "driver_id,event_timestamp,fare,trips\n"
        for _ in 0..<Int.random(in: 200...1_500, using: &random) {
            let time = start + Int64.random(in: 0..<(12 * 86_400), using: &random)
            let fare = Int.random(in: 0..<10, using: &random) == 0 ? "" : String(Double(Int.random(in: 0...5_000, using: &random)) / 100)
            text += "\(Int.random(in: 1...12, using: &random)),\(RFC3339.format(Date(timeIntervalSince1970: Double(time)))),\(fare),\(Int.random(in: 0...9, using: &random))\n"
        }
        try text.write(to: folder.appendingPathComponent("trips.csv"), atomically: true, encoding: .utf8)
        let hour = TimeSpan(seconds: 3_600)
        let windows = { (random: inout SeededGenerator) in (1...Int.random(in: 1...3, using: &random)).map { _ in TimeSpan(seconds: 3_600 * Int64.random(in: 1...72, using: &random)) } }
        let aggregations = [
            AggregationDefinition(function: AggregationFunction.allCases.randomElement(using: &random)!, column: "fare", windows: windows(&random)),
            AggregationDefinition(function: AggregationFunction.allCases.randomElement(using: &random)!, column: "trips", windows: windows(&random)),
            AggregationDefinition(function: .last, column: "fare", windows: [hour]),
        ]
        let repository = FeatureRepository(
            config: RepositoryConfig(workspace: "test"),
            entities: [EntityDefinition(name: "driver", joinKeys: [Column(name: "driver_id", type: .int64)])],
            sources: [SourceDefinition(
                name: "trips", connector: .file(connection: "files", paths: ["trips.csv"]), timestampField: "event_timestamp",
                columns: [Column(name: "driver_id", type: .int64), Column(name: "fare", type: .float64), Column(name: "trips", type: .int64)])],
            featureViews: [FeatureViewDefinition(name: "driver_windows", entities: ["driver"], source: "trips", aggregations: aggregations, slide: hour)])
        let definitions = DefinitionCanonicalizer.canonicalize(repository).map {
            JobSpec.Definition(kind: $0.key.kind.rawValue, name: $0.key.name, version: 1, contentHash: $0.contentHash, definition: $0.spec)
        }
        // An interval of several days, not aligned to hours.
        let from = Date(timeIntervalSince1970: Double(start + Int64.random(in: 0..<(2 * 86_400), using: &random)))
        let to = from.addingTimeInterval(Double(Int.random(in: (3 * 86_400)...(9 * 86_400), using: &random)))
        let spec = JobSpec(
            jobId: 1, kind: .materialize, workspace: "test", featureView: "driver_windows", version: 1, start: from, end: to,
            definitions: definitions, targets: .init(offline: false, online: true), issuedAt: Date())
        return (folder, spec)
    }

    static func rows(of batch: OutputBatch) -> [String] {
        (0..<batch.count).map { row in
            "\(batch.keys[row]) \(batch.eventTimes[row]) " + batch.features.map { column in
                switch column {
                case .int64(let values): return String(describing: values[row])
                case .float64(let values): return String(describing: values[row])
                default: return "?"
                }
            }.joined(separator: " ")
        }
    }

    /// Each entity's values as of every hour of the interval (the last row at or
    /// before it), rounded to 9 significant digits.
    static func valuesAtBoundaries(_ rows: [String], plan: MaterializationPlan) -> [String: [String]] {
        var byEntity: [String: [(time: Int64, values: [String])]] = [:]
        for row in rows {
            let parts = row.split(separator: " ").map(String.init)
            byEntity[parts[0], default: []].append((Int64(parts[1])!, parts[2...].map { part in
                guard part.hasPrefix("Optional("), let value = Double(part.dropFirst(9).dropLast()) else { return part }
                return String(format: "%.9g", value)
            }))
        }
        return byEntity.mapValues { entityRows in
            let sorted = entityRows.sorted { $0.time < $1.time }
            var result: [String] = [], next = 0, current = "none"
            var boundary = (plan.start / 3_600_000_000 + 1) * 3_600_000_000
            while boundary <= plan.end {
                while next < sorted.count, sorted[next].time <= boundary {
                    current = sorted[next].values.joined(separator: " ")
                    next += 1
                }
                result.append(current)
                boundary += 3_600_000_000
            }
            return result
        }
    }

    @Test("a job cut into many passes gives every entity the values of one pass over its whole interval, at every boundary", arguments: Array(1...12) as [UInt64])
    func passesMatchOnePass(seed: UInt64) async throws {
        let (folder, spec) = try Self.world(seed: seed)
        defer { try? FileManager.default.removeItem(at: folder) }
        let plan = try MaterializationPlan(spec)
        var configuration = AgentConfiguration(
            controlPlaneURL: "http://127.0.0.1:1", token: "unused", publicKey: SigningKeyPair.generate().publicKey,
            dataDirectory: folder.path, connections: ["files": .directory(folder)])
        configuration.concurrency = 1
        let store = try OnlineStore(directory: folder.appendingPathComponent("online").path)
        let logger = Logger(label: "test")
        let context = JobContext(attempt: 1, report: { _ in })

        // One pass: the projection over the whole interval.
        let whole = Materialization(plan: plan, job: 1, executor: MaterializeExecutor(configuration: configuration, onlineStore: store, logger: logger), context: context, logger: logger)
        let columns = whole.readColumns
        let range = whole.readRange(of: plan)
        var source = try await whole.openSource(columns: columns, from: range.from, to: range.to)
        var projection = try WindowedProjection(plan: plan, columns: columns)
        while let batch = try await source.next() { try projection.add(batch) }
        var expected: [String] = []
        while let batch = projection.nextOutput(batchSize: 100) { expected += Self.rows(of: batch) }

        // Many passes: a budget of a few tiles keeps every pass as short as the longest window.
        let passes = Materialization(
            plan: plan, job: 2, executor: MaterializeExecutor(configuration: configuration, onlineStore: store, logger: logger, batchSize: 64, tileBudget: 3),
            context: context, logger: logger)
        let first = passes.readRange(of: passes.firstPass)
        var passSource = try await passes.openSource(columns: columns, from: first.from, to: first.to)
        var state = Materialization.Progress(features: plan.outputs.map(\.name), expectations: nil)
        var actual: [String] = []
        try await passes.produce(from: &passSource, columns: columns, into: &state) { batch in actual += Self.rows(of: batch) }
        #expect(!expected.isEmpty)
        // The same value at every boundary: rows may differ only where sums
        // merged in another order differ in their last bits.
        #expect(!expected.isEmpty)
        #expect(Self.valuesAtBoundaries(actual, plan: plan) == Self.valuesAtBoundaries(expected, plan: plan), "seed \(seed)")
        #expect(abs(actual.count - expected.count) <= expected.count / 100, "seed \(seed): \(actual.count) rows in passes, \(expected.count) in one")

    }
}

@testable import DataPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import Synchronization
import Testing
import TestSupport

/// Training datasets against a brute-force oracle, with a real PostgreSQL
/// offline store: random feature rows (duplicate times, created-time ties,
/// exact duplicates in time), random entity rows (repeated keys and times,
/// unknown keys, rows before the first event, rows exactly at t and at
/// t - ttl, a microsecond past it, events after every row), read in random
/// chunk sizes.
/// How each view of each chunk was matched (`TrainingDatasetBuilder.matchObserver`), and read (`planObserver`).
final class MatchWays: Sendable {
    let list = Mutex<[(view: String, streamed: Bool)]>([])
    let plans = Mutex<[(view: String, plan: DatasetReadPlan)]>([])
}

@Suite("Training datasets against a brute-force oracle")
struct TrainingDatasetTests {
    struct World {
        let folder: URL
        let reader: OnlineFeatureReader

        init() throws {
            folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-dataset-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let loaded = RepositoryLoader.load(files: RepositoryScaffold.files.map { ($0.path, $0.contents) })
            precondition(loaded.isValid, "\(loaded.diagnostics)")
            let keys = SigningKeyPair.generate()
            let definitions = DefinitionCanonicalizer.canonicalize(loaded.repository).map {
                JobSpec.Definition(kind: $0.key.kind.rawValue, name: $0.key.name, version: 1, contentHash: $0.contentHash, definition: $0.spec)
            }
            let registry = RegistryCache(file: folder.appendingPathComponent("registry.json"), publicKey: keys.publicKey, logger: Logger(label: "test"))
            try registry.install(
                try keys.sign(try AgentRegistrySnapshot(workspace: "driver-stats", revision: 1, issuedAt: Date(), definitions: definitions).jsonValue()),
                workspace: "driver-stats")
            reader = OnlineFeatureReader(store: try OnlineStore(directory: folder.appendingPathComponent("online").path), registry: registry)
        }
    }

    /// A stored row of driver_hourly_stats (ttl 2 days) or driver_trip_aggregates (no ttl).
    struct FeatureRow {
        var driver: Int64
        var time: Int64      // microseconds
        var created: Int64?  // microseconds
        var values: [Double?]
    }

    /// The oracle: the newest row of `driver` at or before `time` (by time, created, then values), within `ttl`.
    static func expected(_ rows: [FeatureRow], driver: Int64, time: Int64, ttl: Int64?) -> FeatureRow? {
        func key(_ row: FeatureRow) -> [Double] {
            [Double(row.time), Double(row.created ?? Int64.min)] + row.values.map { $0 ?? -.infinity }
        }
        let newest = rows.filter { $0.driver == driver && $0.time <= time }.max { key($0).lexicographicallyPrecedes(key($1)) }
        guard let newest, ttl.map({ newest.time >= time - $0 }) ?? true else { return nil }
        return newest
    }

    static func timestamp(_ micros: Int64) -> String {
        let date = Date(timeIntervalSince1970: Double(micros.dividedRoundingDown(by: 1_000_000)))
        let fraction = micros - micros.dividedRoundingDown(by: 1_000_000) * 1_000_000
        let text = RFC3339.format(date)
        return fraction == 0 ? text : text.dropLast() + "." + String(format: "%06d", fraction) + "Z"
    }

    /// A small RFC 4180 reader for the output.
    static func parseCSV(_ text: String) -> [[String?]] {
        var rows: [[String?]] = [], row: [String?] = [], field = "", quoted = false, inQuotes = false
        var characters = Array(text)[...]
        while let character = characters.popFirst() {
            if inQuotes {
                if character == "\"" {
                    if characters.first == "\"" { field.append("\""); characters.removeFirst() } else { inQuotes = false }
                } else { field.append(character) }
            } else if character == "\"" {
                inQuotes = true
                quoted = true
            } else if character == "," || character == "\n" {
                row.append(field.isEmpty && !quoted ? nil : field)
                field = ""
                quoted = false
                if character == "\n" {
                    rows.append(row)
                    row = []
                }
            } else {
                field.append(character)
            }
        }
        return rows
    }

    @Test("every cell equals the brute-force point-in-time value; on-demand outputs computed from them; input columns passed through; the same bytes at any chunk size",
          arguments: Array(1...12) as [UInt64])
    func matchesOracle(seed: UInt64) async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            var random = SeededGenerator(seed: seed)
            let world = try World()
            defer { try? FileManager.default.removeItem(at: world.folder) }
            let logger = Logger(label: "test")
            let base: Int64 = 1_800_000_000 * 1_000_000
            let hour: Int64 = 3_600 * 1_000_000
            let ttl = 2 * 24 * hour

            // Feature rows over ten days for drivers 1…8 (9 and 10 never occur).
            var stats: [FeatureRow] = [], aggregates: [FeatureRow] = []
            // Seeds 1-3 write the offline rows in random order, 4-6 in event-time order (as materialization
            // does: matched as they stream in), 7-9 in time order then a backfill of older rows at the end,
            // 10-12 as materialization jobs do (with segments beside the tables, see `materialize` below).
            let layout = (Int(seed) - 1) / 3
            for _ in 0..<Int.random(in: (layout == 0 ? 20 : 300)...600, using: &random) {
                let driver = Int64.random(in: 1...8, using: &random)
                var time = base + Int64.random(in: 0...(240 * hour), using: &random)
                if let earlier = stats.randomElement(using: &random), Bool.random(using: &random) { time = earlier.time }   // same event time
                let created: Int64? = Int.random(in: 0..<4, using: &random) == 0 ? nil : base + Int64.random(in: 0...3, using: &random)
                let conv: Double? = Int.random(in: 0..<6, using: &random) == 0 ? nil : Double(Int.random(in: 0...100, using: &random)) / 100
                stats.append(FeatureRow(
                    driver: driver, time: time, created: created,
                    values: [conv, Double(Int.random(in: 0...100, using: &random)) / 100, Double(Int.random(in: 0...40, using: &random))]))
            }
            for _ in 0..<Int.random(in: 10...80, using: &random) {
                let driver = Int64.random(in: 1...8, using: &random)
                let boundary = base + Int64.random(in: 0...240, using: &random) * hour
                let fare: Double? = Bool.random(using: &random) ? nil : Double(Int.random(in: 500...4_000, using: &random)) / 100
                aggregates.append(FeatureRow(
                    driver: driver, time: boundary, created: nil,
                    values: [Double(Int.random(in: 0...30, using: &random)), Double(Int.random(in: 0...200, using: &random)), fare]))
            }

            func laidOut(_ rows: [FeatureRow]) -> [FeatureRow] {
                guard layout > 0 else { return rows }
                let ordered = rows.sorted { $0.time < $1.time }
                guard layout == 2 else { return ordered }
                let backfill = Set(ordered.indices.shuffled(using: &random).prefix(ordered.count / 5))
                return ordered.indices.filter { !backfill.contains($0) }.map { ordered[$0] } + backfill.sorted().map { ordered[$0] }.shuffled(using: &random)
            }
            stats = laidOut(stats)
            aggregates = laidOut(aggregates)

            // The offline tables.
            let connection = try await url.connect(logger: logger)
            if layout == 3 {
                (stats, aggregates) = try await Self.materialize(
                    stats: stats, aggregates: aggregates, from: base - hour, to: base + 241 * hour, on: connection, random: &random)
            }
            func run(_ sql: String) async throws { try await connection.execute(PostgresQuery(unsafeSQL: sql), logger: logger) }
            func literal(_ micros: Int64?) -> String { micros.map { "'\(Self.timestamp($0))'" } ?? "NULL" }
            func number(_ value: Double?) -> String { value.map { "\($0)" } ?? "NULL" }
            if layout < 3 { try await run("CREATE SCHEMA features") }
            if layout < 3 { try await run("""
                CREATE TABLE features.driver_hourly_stats__v1 (driver_id bigint NOT NULL, event_timestamp timestamptz NOT NULL, created_timestamp timestamptz,
                conv_rate double precision, acc_rate double precision, avg_daily_trips bigint)
                """)
            try await run("""
                CREATE TABLE features.driver_trip_aggregates__v1 (driver_id bigint NOT NULL, event_timestamp timestamptz NOT NULL, created_timestamp timestamptz,
                trips_count_1h bigint, trips_count_1d bigint, trips_count_7d bigint, fare_mean_1d double precision, fare_mean_7d double precision,
                distance_km_sum_7d double precision)
                """)
            }
            for row in stats where layout < 3 {
                try await run("""
                    INSERT INTO features.driver_hourly_stats__v1 VALUES (\(row.driver), \(literal(row.time)), \(literal(row.created)),
                    \(number(row.values[0])), \(number(row.values[1])), \(row.values[2].map { String(Int64($0)) } ?? "NULL"))
                    """)
            }
            for row in aggregates where layout < 3 {
                try await run("""
                    INSERT INTO features.driver_trip_aggregates__v1 VALUES (\(row.driver), \(literal(row.time)), NULL,
                    0, \(Int64(row.values[0]!)), \(Int64(row.values[1]!)), NULL, \(number(row.values[2])), NULL)
                    """)
            }
            try await connection.close()

            // Entity rows: random times (some before every event, some after all), rows exactly at a stored
            // time, at time + ttl and a microsecond past it; a label with commas and quotes to pass through.
            var lines = ["driver_id,event_timestamp,trip_distance_km,label"]
            var entityRows: [(driver: Int64, time: Int64, distance: Double?, label: String)] = []
            for index in 0..<Int.random(in: 1...120, using: &random) {
                let driver = Int64.random(in: 1...10, using: &random)
                var time = base + Int64.random(in: (-24 * hour)...(264 * hour), using: &random)
                if let stored = stats.filter({ $0.driver == driver }).randomElement(using: &random) {
                    switch Int.random(in: 0..<5, using: &random) {
                    case 0: time = stored.time
                    case 1: time = stored.time + ttl
                    case 2: time = stored.time + ttl + 1
                    default: break
                    }
                }
                if let repeated = entityRows.randomElement(using: &random), Int.random(in: 0..<6, using: &random) == 0 {
                    time = repeated.time   // a repeated time, possibly a repeated key too
                }
                let distance: Double? = Int.random(in: 0..<5, using: &random) == 0 ? nil : Double(Int.random(in: 1...300, using: &random)) / 10
                let label = ["yes", "no", "a, \"quoted\" label", ""].randomElement(using: &random)! + "\(index)"
                entityRows.append((driver, time, distance, label))
                // Some rows written with an offset: the same instant, normalized to UTC.
                let text = Bool.random(using: &random)
                    ? Self.timestamp(time)
                    : Self.timestamp(time + 2 * hour).replacingOccurrences(of: "Z", with: "+02:00")
                let quotedLabel = "\"" + label.replacingOccurrences(of: "\"", with: "\"\"") + "\""
                lines.append("\(driver),\(text),\(distance.map { "\($0)" } ?? ""),\(quotedLabel)")
            }
            let entities = world.folder.appendingPathComponent("entities.csv")
            try (lines.joined(separator: "\n") + "\n").write(to: entities, atomically: true, encoding: .utf8)

            // Tables read in ranges of one page, of many, or row by row (servers before PostgreSQL 14).
            let reads: [Int?] = [1, 1_000, nil]
            let pagesPerRange = reads[Int(seed) % reads.count]
            let streamed = MatchWays()
            func build(
                chunkRows: Int, segments: Bool = true, plan: DatasetReadPlan = .scan, lookupCost: Int = 64, ways: MatchWays = streamed
            ) async throws -> (bytes: [UInt8], summary: DatasetMetadata) {
                var builder = TrainingDatasetBuilder(
                    reader: world.reader, offlineStore: (schema: "features", url: url), chunkRows: chunkRows, pagesPerRange: pagesPerRange, logger: logger)
                builder.readsSegments = segments
                builder.readPlan = plan
                builder.lookupCost = lookupCost
                builder.createsLookupIndexes = false
                builder.matchObserver = { view, wasStreamed in ways.list.withLock { $0.append((view, wasStreamed)) } }
                builder.planObserver = { view, plan in ways.plans.withLock { $0.append((view, plan)) } }
                let prepared = try await builder.prepare(DatasetRequest(featureService: "driver_ranking", entities: entities))
                var bytes: [UInt8] = []
                let summary = try await builder.writeCSV(prepared) { bytes.append(contentsOf: $0.readableBytesView) }
                return (bytes, summary)
            }
            let (bytes, summary) = try await build(chunkRows: Int.random(in: 1...40, using: &random))
            // How each view's candidates were matched: row by row never streams; a table in time order always does;
            // a backfill read a page at a time is found out of order and matched whole.
            let ways = streamed.list.withLock { $0 }
            #expect(!ways.isEmpty)
            if pagesPerRange == nil, layout < 3 { #expect(ways.allSatisfy { !$0.streamed }) }
            if pagesPerRange != nil, layout == 1 { #expect(ways.allSatisfy { $0.streamed }, "seed \(seed): \(ways)") }
            if pagesPerRange == 1, layout == 2 { #expect(ways.contains { $0.view == "driver_hourly_stats" && !$0.streamed }, "seed \(seed): \(ways)") }
            let rows = Self.parseCSV(String(decoding: bytes, as: UTF8.self))
            #expect(rows.first == [
                "driver_id", "event_timestamp", "trip_distance_km", "label",
                "driver_hourly_stats__conv_rate", "driver_hourly_stats__acc_rate", "driver_hourly_stats__avg_daily_trips",
                "driver_trip_aggregates__trips_count_1d", "driver_trip_aggregates__trips_count_7d", "driver_trip_aggregates__fare_mean_7d",
                "trip_quote__expected_fare", "trip_quote__likely_to_convert",
            ])
            #expect(rows.count == entityRows.count + 1 && Int(summary.rows) == entityRows.count)
            #expect(summary.views == [.init(view: "driver_hourly_stats", version: 1), .init(view: "driver_trip_aggregates", version: 1)])
            for (index, entity) in entityRows.enumerated() where index + 1 < rows.count {
                let row = rows[index + 1]
                let place = "seed \(seed) row \(index + 1) driver \(entity.driver) at \(Self.timestamp(entity.time))"
                #expect(row[0] == "\(entity.driver)" && row[3] == entity.label, "\(place): input columns pass through")
                let stat = Self.expected(stats, driver: entity.driver, time: entity.time, ttl: ttl)
                #expect(row[4] == stat?.values[0].map { "\($0)" }, "\(place): conv_rate")
                #expect(row[5] == stat?.values[1].map { "\($0)" }, "\(place): acc_rate")
                #expect(row[6] == stat?.values[2].map { "\(Int64($0))" }, "\(place): avg_daily_trips")
                let window = Self.expected(aggregates, driver: entity.driver, time: entity.time, ttl: nil)
                #expect(row[7] == window.map { "\(Int64($0.values[0]!))" }, "\(place): trips_count_1d")
                #expect(row[8] == window.map { "\(Int64($0.values[1]!))" }, "\(place): trips_count_7d")
                let fare = window?.values[2]
                #expect(row[9] == fare.map { "\($0)" }, "\(place): fare_mean_7d")
                if let fare, let distance = entity.distance {
                    #expect(row[10] == "\(distance * fare)", "\(place): expected_fare")
                } else {
                    #expect(row[10] == nil, "\(place): expected_fare")
                }
                #expect(row[11] == stat?.values[0].map { $0 > 0.5 ? "true" : "false" }, "\(place): likely_to_convert")
            }
            // The same inputs give the same bytes, whatever the chunking.
            let again = try await build(chunkRows: 100_000)
            #expect(again.bytes == bytes && again.summary.sha256 == summary.sha256)
            #expect(streamed.plans.withLock { $0 }.allSatisfy { $0.plan == .scan })

            // Looked up instead of scanned (through each table's lookup index, made by the first build that needs
            // it), every chunk gives the same bytes.
            let lookups = MatchWays()
            let lookedUp = try await build(chunkRows: Int.random(in: 1...40, using: &random), plan: .lookup, ways: lookups)
            #expect(lookedUp.bytes == bytes, "seed \(seed): the lookup plan disagrees with the scan")
            #expect(!lookups.plans.withLock { $0 }.isEmpty && lookups.plans.withLock { $0 }.allSatisfy { $0.plan == .lookup })

            // Chosen automatically at the switch-over point: chunks of `size` rows on tables of `total` rows, a
            // lookup costing `total / size` rows scanned. A chunk looks up when its rows times that cost are
            // fewer than the rows the scan reads: here the short last chunk, and the full ones unless `size`
            // divides `total` evenly. (Tables with segments count the rows of the segments in a chunk's time
            // bounds, so there the choice varies by chunk.) Each way, the same bytes.
            let analyze = try await url.connect(logger: logger)
            try await analyze.execute("ANALYZE", logger: logger)
            try await analyze.close()
            let size = Int.random(in: 2...12, using: &random), total = layout == 3 ? stats.count + aggregates.count : stats.count
            let automatic = MatchWays()
            let chosen = try await build(chunkRows: size, plan: .automatic, lookupCost: max(total / size, 1), ways: automatic)
            #expect(chosen.bytes == bytes, "seed \(seed): the automatic plan disagrees with the scan")
            let plans = automatic.plans.withLock { $0 }
            if layout < 3 {
                // driver_hourly_stats, chunk by chunk: the rule, seen from outside.
                let chunks = stride(from: 0, to: entityRows.count, by: size).map { min(size, entityRows.count - $0) }
                let observed = plans.filter { $0.view == "driver_hourly_stats" }.map(\.plan)
                #expect(observed == chunks.map { $0 * max(stats.count / size, 1) < stats.count ? .lookup : .scan }, "seed \(seed): \(observed)")
            }

            if layout == 3 {
                // The segments hold the tables' rows exactly: reading the rows instead gives the same bytes.
                let rowWise = try await build(chunkRows: Int.random(in: 1...40, using: &random), segments: false)
                #expect(rowWise.bytes == bytes, "seed \(seed): the rows and the segments disagree")
            }
        }
    }

    /// Writes the rows as materialization jobs do, through `OfflineTable.replaceInterval` with segments of
    /// a few rows: each table in intervals between random cuts, taken in random order, then a few
    /// intervals of random bounds (cutting across segments) written again with new rows. Returns the
    /// rows the tables hold then.
    static func materialize(
        stats: [FeatureRow], aggregates: [FeatureRow], from: Int64, to: Int64, on connection: PostgresConnection, random: inout SeededGenerator
    ) async throws -> ([FeatureRow], [FeatureRow]) {
        let logger = Logger(label: "test")
        let key = [Column(name: "driver_id", type: .int64)]
        var statsTable = OfflineTable(
            schema: "features", workspace: "driver-stats", view: "driver_hourly_stats", version: 1, keys: key,
            outputs: [Column(name: "conv_rate", type: .float64), Column(name: "acc_rate", type: .float64), Column(name: "avg_daily_trips", type: .int64)],
            windowed: false)
        var windowTable = OfflineTable(
            schema: "features", workspace: "driver-stats", view: "driver_trip_aggregates", version: 1, keys: key,
            outputs: ["trips_count_1h", "trips_count_1d", "trips_count_7d"].map { Column(name: $0, type: .int64) }
                + ["fare_mean_1d", "fare_mean_7d", "distance_km_sum_7d"].map { Column(name: $0, type: .float64) },
            windowed: true)
        for table in [statsTable, windowTable] { #expect(!(try await table.hasSegments(on: connection, logger: logger))) }
        statsTable.segmented = true
        windowTable.segmented = true
        statsTable.segmentRows = Int.random(in: 1...60, using: &random)
        windowTable.segmentRows = Int.random(in: 1...20, using: &random)
        func batch(_ rows: [FeatureRow], windowed: Bool) -> OutputBatch {
            OutputBatch(
                keys: rows.map { .int($0.driver) }, eventTimes: rows.map(\.time), createdTimes: rows.map(\.created),
                features: windowed
                    ? [.int64(rows.map { _ in 0 }), .int64(rows.map { $0.values[0].map { Int64($0) } }), .int64(rows.map { $0.values[1].map { Int64($0) } }),
                       .float64(rows.map { _ in nil }), .float64(rows.map { $0.values[2] }), .float64(rows.map { _ in nil })]
                    : [.float64(rows.map { $0.values[0] }), .float64(rows.map { $0.values[1] }), .int64(rows.map { $0.values[2].map { Int64($0) } })])
        }
        func write(_ table: OfflineTable, _ rows: [FeatureRow], from start: Int64, to end: Int64) async throws {
            let owned = rows.filter { table.owns($0.time, from: start, to: end) }.shuffled(using: &random)
            let parts = owned.count / 7 + 1
            try await table.replaceInterval(from: start, to: end, on: connection, logger: logger) { writer in
                for part in 0..<parts {
                    try await writer.write(batch(Array(owned[(owned.count * part / parts)..<(owned.count * (part + 1) / parts)]), windowed: table.windowed))
                }
            }
        }
        var tables = (stats, aggregates)
        for (index, table) in [statsTable, windowTable].enumerated() {
            try await table.create(on: connection, logger: logger)
            #expect(try await table.hasSegments(on: connection, logger: logger))
            var rows = index == 0 ? tables.0 : tables.1
            let cuts = ([from, to] + (0..<Int.random(in: 1...6, using: &random)).map { _ in Int64.random(in: from...to, using: &random) }).sorted()
            for (start, end) in zip(cuts, cuts.dropFirst()).shuffled(using: &random) { try await write(table, rows, from: start, to: end) }
            // Rewritten intervals: old rows go, new ones (some at the same times as old ones) come.
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                let start = Int64.random(in: from...to, using: &random), end = min(to, start + Int64.random(in: 0...((to - from) / 3), using: &random))
                let previous = rows.filter { table.owns($0.time, from: start, to: end) }
                rows.removeAll { table.owns($0.time, from: start, to: end) }
                var fresh: [FeatureRow] = []
                for _ in 0..<Int.random(in: 0...40, using: &random) where end > start + 1 {
                    var row = previous.randomElement(using: &random) ?? FeatureRow(driver: Int64.random(in: 1...8, using: &random), time: 0, created: nil, values: [])
                    if row.values.isEmpty || Bool.random(using: &random) { row.time = Int64.random(in: (start + 1)..<end, using: &random) }
                    row.values = index == 0
                        ? [Bool.random(using: &random) ? nil : Double(Int.random(in: 0...100, using: &random)) / 100,
                           Double(Int.random(in: 0...100, using: &random)) / 100, Double(Int.random(in: 0...40, using: &random))]
                        : [Double(Int.random(in: 0...30, using: &random)), Double(Int.random(in: 0...200, using: &random)),
                           Bool.random(using: &random) ? nil : Double(Int.random(in: 500...4_000, using: &random)) / 100]
                    if index == 1 { row.created = nil }
                    fresh.append(row)
                }
                rows += fresh
                try await write(table, fresh, from: start, to: end)
            }
            // The segments hold as many rows as the table.
            let counts = try await connection.query(PostgresQuery(unsafeSQL: """
                SELECT (SELECT count(*) FROM \(table.qualifiedName)), (SELECT coalesce(sum(row_count), 0)::bigint FROM \(table.qualifiedSegmentsName))
                """), logger: logger)
            for try await (table, segments) in counts.decode((Int64, Int64).self) { #expect(table == Int64(rows.count) && segments == table) }
            if index == 0 { tables.0 = rows } else { tables.1 = rows }
        }
        return tables
    }

    /// The schema `features` and an empty offline table of driver_hourly_stats v1, made by hand.
    static func createStatsTable(on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.execute("CREATE SCHEMA features", logger: logger)
        try await connection.execute(
            "CREATE TABLE features.driver_hourly_stats__v1 (driver_id bigint NOT NULL, event_timestamp timestamptz NOT NULL, created_timestamp timestamptz, conv_rate double precision, acc_rate double precision, avg_daily_trips bigint)",
            logger: logger)
    }

    @Test("a timestamp without an offset is refused, naming the row and column, unless the table's timestamps are said to be UTC; missing columns and unmaterialized views are named before any output")
    func refusals() async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            let world = try World()
            defer { try? FileManager.default.removeItem(at: world.folder) }
            let logger = Logger(label: "test")
            let connection = try await url.connect(logger: logger)
            try await Self.createStatsTable(on: connection, logger: logger)
            try await connection.execute(
                "INSERT INTO features.driver_hourly_stats__v1 VALUES (1, '2027-01-01T00:00:00Z', NULL, 0.5, 0.25, 3)", logger: logger)
            try await connection.close()
            let builder = TrainingDatasetBuilder(reader: world.reader, offlineStore: (schema: "features", url: url), chunkRows: 10, logger: logger)
            let file = world.folder.appendingPathComponent("entities.csv")
            func build(_ csv: String, assumeUTC: Bool = false, features: [String] = ["driver_hourly_stats"]) async throws -> String {
                try csv.write(to: file, atomically: true, encoding: .utf8)
                let prepared = try await builder.prepare(DatasetRequest(features: features, entities: file, assumeUTC: assumeUTC))
                var bytes: [UInt8] = []
                _ = try await builder.writeCSV(prepared) { bytes.append(contentsOf: $0.readableBytesView) }
                return String(decoding: bytes, as: UTF8.self)
            }
            func refusal(_ csv: String, features: [String] = ["driver_hourly_stats"]) async -> DatasetError? {
                do { _ = try await build(csv, features: features) } catch let error as DatasetError { return error } catch { return nil }
                return nil
            }
            let naive = "driver_id,event_timestamp\n1,2027-01-01T01:00:00Z\n1,2027-01-01 02:00:00\n"
            let error = await refusal(naive)
            #expect(error?.field == "entities row 2, column event_timestamp" && error?.detail.contains("no UTC offset") == true)
            #expect(try await build(naive, assumeUTC: true) == """
                driver_id,event_timestamp,driver_hourly_stats__conv_rate,driver_hourly_stats__acc_rate,driver_hourly_stats__avg_daily_trips
                1,2027-01-01T01:00:00Z,0.5,0.25,3
                1,2027-01-01 02:00:00,0.5,0.25,3

                """)
            #expect(await refusal("driver,event_timestamp\n1,2027-01-01T01:00:00Z\n")?.field == "entities: column driver_id")
            #expect(await refusal("driver_id,event_timestamp\nx,2027-01-01T01:00:00Z\n")?.field == "entities row 1, column driver_id")
            #expect(await refusal("driver_id,event_timestamp\n1,2027-01-01T01:00:00Z\n", features: ["driver_trip_aggregates"])?.kind == .notMaterialized)
            #expect(await refusal("driver_id,event_timestamp\n1,2027-01-01T01:00:00Z\n", features: ["trip_quote"])?.field == "entities: column trip_distance_km")
        }
    }

    @Test("a dataset that would rather look a table up than scan it, on a table without the lookup index: scanned, the index made in the background, and the next dataset looked up, with the same bytes; with lookup indexes off, no index")
    func lookupIndexMadeOnFirstNeed() async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            let world = try World()
            defer { try? FileManager.default.removeItem(at: world.folder) }
            let logger = Logger(label: "test")
            let connection = try await url.connect(logger: logger)
            try await Self.createStatsTable(on: connection, logger: logger)
            // 50 drivers × 200 hours: 10,000 rows, against an entity table of 6 rows.
            try await connection.execute("""
                INSERT INTO features.driver_hourly_stats__v1
                SELECT d, timestamptz '2027-01-01T00:00:00Z' + h * interval '1 hour', NULL, (d * h % 97) / 100.0, h / 1000.0, d + h
                FROM generate_series(1, 50) AS d, generate_series(0, 199) AS h
                """, logger: logger)
            try await connection.execute("ANALYZE features.driver_hourly_stats__v1", logger: logger)
            let file = world.folder.appendingPathComponent("entities.csv")
            try "driver_id,event_timestamp\n3,2027-01-02T05:30:00Z\n7,2027-01-05T00:00:00Z\n3,2027-01-02T05:00:00Z\n51,2027-01-03T00:00:00Z\n9,2026-12-31T00:00:00Z\n50,2027-02-01T00:00:00Z\n"
                .write(to: file, atomically: true, encoding: .utf8)
            let ways = MatchWays()
            func build(makingIndexes: Bool) async throws -> String {
                var builder = TrainingDatasetBuilder(reader: world.reader, offlineStore: (schema: "features", url: url), logger: logger)
                builder.createsLookupIndexes = makingIndexes
                builder.planObserver = { view, plan in ways.plans.withLock { $0.append((view, plan)) } }
                let prepared = try await builder.prepare(DatasetRequest(features: ["driver_hourly_stats"], entities: file))
                var bytes: [UInt8] = []
                _ = try await builder.writeCSV(prepared) { bytes.append(contentsOf: $0.readableBytesView) }
                return String(decoding: bytes, as: UTF8.self)
            }
            func indexValid() async throws -> Bool? {
                let rows = try await connection.query(
                    "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('features.driver_hourly_stats__v1_lookup')", logger: logger)
                for try await (valid) in rows.decode(Bool.self) { return valid }
                return nil
            }
            // Lookup indexes off: scanned, and nothing made.
            let scanned = try await build(makingIndexes: false)
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await indexValid() == nil)
            #expect(scanned.contains("3,2027-01-02T05:30:00Z,\(Double(3 * 29 % 97) / 100),0.029,32\n"), "\(scanned)")
            // On: this dataset scans too, and the index is made behind it.
            #expect(try await build(makingIndexes: true) == scanned)
            var made = false
            for _ in 0..<300 where !made {
                made = try await indexValid() == true
                if !made { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(made, "the lookup index was not made within 30 s")
            // The next dataset looks the table up, with the same bytes.
            #expect(try await build(makingIndexes: true) == scanned)
            #expect(ways.plans.withLock { $0.map(\.plan) } == [.scan, .scan, .lookup])
            try await connection.close()
        }
    }
}

@testable import DataPlane
import Foundation
import Logging
import NIOCore
import PostgresNIO
import Shared
import Testing
import TestSupport

/// The column-by-column runs of offline rows that training datasets read
/// (`OfflineSegment`): what goes in comes out, for any mix of columns.
@Suite("Offline segments")
struct OfflineSegmentTests {
    static let texts = ["", "a", "driver, \"quoted\"", "tab\tand\nnewline", "été", "🚕", String(repeating: "x", count: 300)]

    /// A random table: a composite key (an integer and a text), event and created times, and one feature of each type.
    static let columns: [(name: String, type: ValueType)] = [
        ("driver_id", .int64), ("city", .string), ("event_timestamp", .timestamp), ("created_timestamp", .timestamp),
        ("trips", .int64), ("small", .int32), ("rate", .float64), ("ratio", .float32), ("active", .bool), ("name", .string), ("seen", .timestamp),
    ]

    static func batch(rows: Int, random: inout SeededGenerator) -> OutputBatch {
        func maybe<T>(_ value: T) -> T? { Int.random(in: 0..<4, using: &random) == 0 ? nil : value }
        var keys: [EntityKey] = [], events: [Int64] = [], created: [Int64?] = []
        var trips: [Int64?] = [], small: [Int64?] = [], rate: [Double?] = [], ratio: [Double?] = [], active: [Bool?] = [], names: [String?] = [], seen: [Int64?] = []
        for _ in 0..<rows {
            keys.append(EntityKey([.int(Int64.random(in: -5...5, using: &random)), .string(texts.randomElement(using: &random)!)]))
            events.append(Int64.random(in: -1_000_000...4_000_000_000_000_000, using: &random))
            created.append(maybe(Int64.random(in: 0...4_000_000_000_000_000, using: &random)))
            trips.append(maybe(Int64.random(in: Int64.min...Int64.max, using: &random)))
            small.append(maybe(Int64(Int32.random(in: Int32.min...Int32.max, using: &random))))
            rate.append(maybe([0.1, -0.0, 1e300, .infinity, Double.random(in: -1e6...1e6, using: &random)].randomElement(using: &random)!))
            ratio.append(maybe(Double.random(in: -1e6...1e6, using: &random)))
            active.append(maybe(Bool.random(using: &random)))
            names.append(maybe(texts.randomElement(using: &random)!))
            seen.append(maybe(Int64.random(in: 0...4_000_000_000_000_000, using: &random)))
        }
        return OutputBatch(keys: keys, eventTimes: events, createdTimes: created, features: [
            .int64(trips), .int64(small), .float64(rate), .float64(ratio), .bool(active), .string(names), .timestamp(seen),
        ])
    }

    @Test("a segment decodes to the rows built into it, whole, by columns, or by rows; a real column holds single precision", arguments: Array(1...20) as [UInt64])
    func roundTrip(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        var builder = OfflineSegmentBuilder(columns: Self.columns)
        var batches: [OutputBatch] = []
        for _ in 0..<Int.random(in: 1...4, using: &random) {
            batches.append(Self.batch(rows: Int.random(in: 0...50, using: &random), random: &random))
            builder.append(batches.last!, keyCount: 2)
        }
        let count = batches.reduce(0) { $0 + $1.count }
        let times = batches.flatMap(\.eventTimes)
        #expect(builder.count == count)
        let segment = builder.take()
        #expect(builder.count == 0 && builder.take().count == 0)

        // Each column as the batches hold it.
        func column(_ index: Int) -> OfflineSegment.Values {
            switch index {
            case 0: return .fixed(bits: batches.flatMap { $0.keys.map { key -> Int64 in if case .int(let v) = key.parts[0] { return v }; return -99 } }, nulls: nil)
            case 1: return .text(batches.flatMap { $0.keys.map { key -> String? in if case .string(let v) = key.parts[1] { return v }; return nil } })
            case 2: return .fixed(bits: times, nulls: nil)
            case 3:
                let values = batches.flatMap(\.createdTimes)
                return .fixed(bits: values.map { $0 ?? 0 }, nulls: values.contains(nil) ? values.map { $0 == nil } : nil)
            default:
                let values: [Int64?]
                switch batches.first?.features[index - 4] {
                case .string?: return .text(batches.flatMap { if case .string(let v) = $0.features[index - 4] { return v }; return [] })
                case .float64?:
                    values = batches.flatMap { batch -> [Int64?] in
                        guard case .float64(let v) = batch.features[index - 4] else { return [] }
                        return v.map { $0.map { Int64(bitPattern: (Self.columns[index].type == .float32 ? Double(Float($0)) : $0).bitPattern) } }
                    }
                case .bool?: values = batches.flatMap { batch -> [Int64?] in if case .bool(let v) = batch.features[index - 4] { return v.map { $0.map { $0 ? Int64(1) : 0 } } }; return [] }
                default:
                    values = batches.flatMap { batch -> [Int64?] in
                        switch batch.features[index - 4] {
                        case .int64(let v), .timestamp(let v): return v
                        default: return []
                        }
                    }
                }
                return .fixed(bits: values.map { $0 ?? 0 }, nulls: values.contains(nil) ? values.map { $0 == nil } : nil)
            }
        }
        let expected = OfflineSegment(columns: Self.columns.indices.map(column), count: count)
        #expect(segment == expected)
        #expect(try OfflineSegment(decoding: segment.encoded()) == expected)

        // Some columns only: the others are skipped.
        let only = Set(Self.columns.indices.filter { _ in Bool.random(using: &random) })
        let some = try OfflineSegment(decoding: segment.encoded(), only: only)
        for index in Self.columns.indices { #expect(some.columns[index] == (only.contains(index) ? expected.columns[index] : .skipped)) }

        // Some rows, in any order.
        let picked = (0..<count).filter { _ in Bool.random(using: &random) }.shuffled(using: &random)
        let cut = try OfflineSegment(decoding: segment.rows(picked).encoded())
        for index in Self.columns.indices {
            switch (cut.columns[index], expected.columns[index]) {
            case (.fixed(let bits, let nulls), .fixed(let all, let allNulls)):
                #expect(bits == picked.map { all[$0] })
                #expect((nulls ?? Array(repeating: false, count: picked.count)) == picked.map { allNulls?[$0] ?? false })
            case (.text(let values), .text(let all)): #expect(values == picked.map { all[$0] })
            default: Issue.record("column \(index) changed kind")
            }
        }
    }

    @Test("a cut or altered segment is refused with an error, never read past its end")
    func malformed() throws {
        var random = SeededGenerator(seed: 7)
        var builder = OfflineSegmentBuilder(columns: Self.columns)
        builder.append(Self.batch(rows: 30, random: &random), keyCount: 2)
        let bytes = Array(builder.take().encoded().readableBytesView)
        for length in [0, 3, 11, 12, 50, bytes.count / 2, bytes.count - 1] {
            #expect(throws: OfflineSegment.Malformed.self) { try OfflineSegment(decoding: ByteBuffer(bytes: bytes.prefix(length))) }
        }
        var wrongMagic = bytes
        wrongMagic[0] ^= 0xFF
        #expect(throws: OfflineSegment.Malformed.self) { try OfflineSegment(decoding: ByteBuffer(bytes: wrongMagic)) }
        // Any single altered byte either decodes (a value changed) or is refused; it never traps.
        for _ in 0..<500 {
            var altered = bytes
            altered[Int.random(in: 0..<altered.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
            _ = try? OfflineSegment(decoding: ByteBuffer(bytes: altered))
        }
    }

    @Test("candidates from parsed columns keep exactly the rows of the chunk's entities in the time window, by integer, string or composite key",
          arguments: Array(1...12) as [UInt64])
    func candidates(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let kind = Int(seed) % 3   // 0: an integer key, 1: a string key, 2: both (composite)
        let count = Int.random(in: 0...200, using: &random)
        let ints = (0..<count).map { _ in Int64.random(in: 0...20, using: &random) }
        let strings: [String?] = (0..<count).map { _ in "k\(Int.random(in: 0...20, using: &random))" }
        let times = (0..<count).map { _ in Int64.random(in: 0...100, using: &random) }
        let values = (0..<count).map { _ in Double.random(in: 0...1, using: &random) }
        func key(_ row: Int) -> EntityKey {
            switch kind {
            case 0: return .int(ints[row])
            case 1: return .string(strings[row]!)
            default: return EntityKey([.int(ints[row]), .string(strings[row]!)])
            }
        }
        var entities: [EntityKey: Int32] = [:]
        for row in 0..<count where Bool.random(using: &random) && entities[key(row)] == nil { entities[key(row)] = Int32(entities.count) }
        let keyColumns: [Column] = kind == 0 ? [Column(name: "id", type: .int64)] : kind == 1 ? [Column(name: "id", type: .string)]
            : [Column(name: "id", type: .int64), Column(name: "name", type: .string)]
        let parsedInts = ArrayColumns.Parsed(bits: ints, nulls: Array(repeating: false, count: count))
        let parsedStrings = ArrayColumns.Parsed(texts: strings)
        let keys = kind == 0 ? [parsedInts] : kind == 1 ? [parsedStrings] : [parsedInts, parsedStrings]
        let window: ClosedRange<Int64>? = Bool.random(using: &random) ? nil : Int64.random(in: 0...50, using: &random)...Int64.random(in: 50...100, using: &random)
        var rows = CandidateRows(types: [.float64])
        rows.append(
            keys: keys, times: ArrayColumns.Parsed(bits: times, nulls: Array(repeating: false, count: count)), created: nil,
            features: [ArrayColumns.Parsed(bits: values.map { Int64(bitPattern: $0.bitPattern) }, nulls: Array(repeating: false, count: count))],
            lookup: EntityLookup(entities, keys: keyColumns), keyTypes: keyColumns.map(\.type), window: window)
        let expected = (0..<count).filter { entities[key($0)] != nil && (window?.contains(times[$0]) ?? true) }
        #expect(rows.entity == expected.map { entities[key($0)]! })
        #expect(rows.times == expected.map { times[$0] })
        #expect(rows.created == expected.map { _ in CandidateRows.noCreated })
    }

    struct Failure: Error {}

    @Test("a job failing after some runs were sent leaves the table and its segments as they were; one that succeeds replaces both")
    func failedJobChangesNothing() async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            let logger = Logger(label: "test")
            var table = OfflineTable(
                schema: "features", workspace: "rides-prod", view: "stats", version: 1, keys: [Column(name: "id", type: .int64)],
                outputs: [Column(name: "value", type: .float64)], windowed: false)
            table.segmented = true
            table.segmentRows = 10
            func batch(_ ids: Range<Int64>, value: Double) -> OutputBatch {
                OutputBatch(keys: ids.map { .int($0) }, eventTimes: ids.map { $0 * 1_000_000 }, createdTimes: ids.map { _ in nil },
                            features: [.float64(ids.map { _ in value })])
            }
            let connection = try await url.connect(logger: logger)
            func contents() async throws -> (rows: [Double], segments: [Double]) {
                var rows: [Double] = []
                for try await (value) in try await connection.query(
                    PostgresQuery(unsafeSQL: "SELECT value FROM \(table.qualifiedName) ORDER BY id"), logger: logger).decode(Double.self) { rows.append(value) }
                var segments: [(Int64, Double)] = []
                for try await (data) in try await connection.query(
                    PostgresQuery(unsafeSQL: "SELECT data FROM \(table.qualifiedSegmentsName)"), logger: logger).decode(ByteBuffer.self) {
                    let segment = try OfflineSegment(decoding: data)
                    guard case .fixed(let ids, _) = segment.columns[0], case .fixed(let values, _) = segment.columns[3] else { continue }
                    segments += zip(ids, values.map { Double(bitPattern: UInt64(bitPattern: $0)) }).map { ($0, $1) }
                }
                return (rows, segments.sorted { $0.0 < $1.0 }.map(\.1))
            }
            do {
                try await table.create(on: connection, logger: logger)
                try await table.replaceInterval(from: 0, to: 100_000_000, on: connection, logger: logger) { writer in
                    for start in stride(from: Int64(0), to: 100, by: 7) { try await writer.write(batch(start..<min(start + 7, 100), value: 1)) }
                }
                let first = try await contents()
                #expect(first.rows == Array(repeating: 1, count: 100) && first.segments == first.rows)
                // Runs of 10 rows go out while the job goes on; then it fails.
                await #expect(throws: Failure.self) {
                    try await table.replaceInterval(from: 20_000_000, to: 80_000_000, on: connection, logger: logger) { writer in
                        for start in stride(from: Int64(20), to: 60, by: 7) { try await writer.write(batch(start..<min(start + 7, 60), value: 2)) }
                        throw Failure()
                    }
                }
                let after = try await contents()
                #expect(after.rows == first.rows && after.segments == first.rows)
                // The same job, succeeding: rows 20..<80 replaced (60..<80 by none), the rest kept.
                try await table.replaceInterval(from: 20_000_000, to: 80_000_000, on: connection, logger: logger) { writer in
                    for start in stride(from: Int64(20), to: 60, by: 7) { try await writer.write(batch(start..<min(start + 7, 60), value: 2)) }
                }
                let replaced = try await contents()
                let expected = Array(repeating: 1.0, count: 20) + Array(repeating: 2.0, count: 40) + Array(repeating: 1.0, count: 20)
                #expect(replaced.rows == expected && replaced.segments == expected)
                try await connection.close()
            } catch {
                try? await connection.close()
                throw error
            }
        }
    }

    @Test("fenced writes: over random orders of lease terms, an interval holds exactly the rows of the highest term that wrote it; a lower term is refused and writes nothing; a stalled writer's transaction is ended so the next one is not blocked; a live one computing past the idle timeout is kept")
    func fencedWrites() async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            let logger = Logger(label: "test")
            var table = OfflineTable(
                schema: "features", workspace: "rides-prod", view: "fenced", version: 1, keys: [Column(name: "id", type: .int64)],
                outputs: [Column(name: "value", type: .float64)], windowed: false)
            table.segmented = true
            table.segmentRows = 8
            func batch(value: Double) -> OutputBatch {
                let ids = Array(Int64(0)..<20)
                return OutputBatch(keys: ids.map { .int($0) }, eventTimes: ids.map { $0 * 1_000_000 }, createdTimes: ids.map { _ in nil },
                                   features: [.float64(ids.map { _ in value })])
            }
            let connection = try await url.connect(logger: logger)
            try await table.create(on: connection, logger: logger)
            let fenced = table
            func values() async throws -> [Double] {
                var rows: [Double] = []
                for try await value in try await connection.query(
                    PostgresQuery(unsafeSQL: "SELECT value FROM \(table.qualifiedName) ORDER BY id"), logger: logger).decode(Double.self) { rows.append(value) }
                return rows
            }
            var random = SeededGenerator(seed: 25)
            for round in 0..<12 {
                // Terms arrive in a random order (a writer paused, another taking over, the first waking up).
                let terms = (1...Int64.random(in: 2...6, using: &random)).map { Int64(round * 100) + $0 }.shuffled(using: &random)
                var highest: Int64 = 0
                for term in terms {
                    // A long idle timeout: on a loaded machine a live writer must never be taken for a stalled one.
                    let fence = OfflineTable.Fence(term: term, job: Int64(round), idleTimeout: .seconds(120))
                    do {
                        try await table.replaceInterval(from: 0, to: 20_000_000, fence: fence, on: connection, logger: logger) { writer in
                            try await writer.write(batch(value: Double(term)))
                        }
                        #expect(term > highest, "round \(round): term \(term) was taken after \(highest)")
                        highest = term
                    } catch let error as JobExecutionError {
                        #expect(term < highest && error.message.contains("stale"), "round \(round): term \(term) refused after \(highest)")
                    }
                    #expect(try await values() == Array(repeating: Double(highest), count: 20), "round \(round) after term \(term)")
                }
            }
            // A writer that stalls inside its transaction (its agent stopped) holding the interval is ended by
            // the server once idle past its timeout, so the next writer is not blocked for long. (Nothing more is
            // sent on the ended connection: PostgresNIO never answers a statement sent after the server closed it.)
            let stalled = try await url.connect(logger: logger)
            try await stalled.query("BEGIN", logger: logger)
            try await fenced.claim(
                OfflineTable.Fence(term: 5_000, job: 1, idleTimeout: .seconds(1)),
                from: Date(timeIntervalSince1970: 0), to: Date(timeIntervalSince1970: 20), on: stalled, logger: logger)
            let began = Date()
            try await table.replaceInterval(
                from: 0, to: 20_000_000, fence: OfflineTable.Fence(term: 6_000, job: 2, idleTimeout: .seconds(120)), on: connection, logger: logger
            ) { writer in try await writer.write(batch(value: 6_000)) }
            let waited = Date().timeIntervalSince(began)
            #expect(waited < 10, "the next writer waited \(waited) s for the stalled one")
            let deadline = Date().addingTimeInterval(5)
            while !stalled.isClosed, Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(stalled.isClosed, "the server did not end the stalled writer's session")
            #expect(try await values() == Array(repeating: 6_000, count: 20))
            // A live writer that computes for longer than the idle timeout between its writes (its lease held)
            // is kept alive and commits. (Its keep-alive runs every quarter of the timeout: 15 s leaves a
            // machine loaded as CI's can be 11 s of slack before a late one lets the server end the session.)
            try await table.replaceInterval(
                from: 0, to: 20_000_000, fence: OfflineTable.Fence(term: 7_000, job: 3, idleTimeout: .seconds(15)), on: connection, logger: logger
            ) { writer in
                try await Task.sleep(for: .seconds(20))
                try await writer.write(batch(value: 7_000))
            }
            #expect(try await values() == Array(repeating: 7_000, count: 20))
            try await connection.close()
        }
    }
}

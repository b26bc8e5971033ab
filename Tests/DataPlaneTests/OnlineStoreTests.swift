import DataPlane
import Foundation
import Shared
import Synchronization
import Testing
import TestSupport

@Suite("Online store: newest wins, durable, TTL, compaction")
struct OnlineStoreTests {
    static func directory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("larder-online-\(UUID().uuidString)").path
    }

    static let schema = OnlineTableSchema(
        view: "driver_stats", version: 1, keys: [Column(name: "driver_id", type: .int64)],
        features: [Column(name: "conv_rate", type: .float64), Column(name: "trips", type: .int64), Column(name: "city", type: .string)],
        ttlSeconds: 3_600)

    /// A row as the tests generate it: key, event and created time (seconds), values.
    struct Row: Hashable {
        var key: Int64
        var event: Int64
        var created: Int64
        var rate: Double?
        var trips: Int64?
        var city: String?
    }

    static func rows(_ rows: [Row]) -> OnlineRows {
        OnlineRows(
            keys: rows.map { .int($0.key) }, eventTimes: rows.map { $0.event * 1_000_000 }, createdTimes: rows.map { $0.created * 1_000_000 },
            features: [.float64(rows.map(\.rate)), .int64(rows.map(\.trips)), .string(rows.map(\.city))])
    }

    static func values(_ row: Row) -> [FeatureValue] {
        [row.rate.map(FeatureValue.double) ?? .null, row.trips.map(FeatureValue.int) ?? .null, row.city.map(FeatureValue.string) ?? .null]
    }

    /// The row that must be stored for each key: the greatest (event, created);
    /// among equal ones, the last written.
    static func expected(_ rows: [Row]) -> [Int64: Row] {
        var best: [Int64: Row] = [:]
        for row in rows {
            if let current = best[row.key], (row.event, row.created) < (current.event, current.created) { continue }
            best[row.key] = row
        }
        return best
    }

    static func check(_ table: OnlineTable, against expected: [Int64: Row], keys: Range<Int64>, now: Int64) {
        for key in keys {
            let found = table.lookup(.int(key), now: now * 1_000_000)
            guard let row = expected[key] else {
                #expect(found == .notFound, "key \(key)")
                continue
            }
            let record = OnlineRecord(eventTime: row.event * 1_000_000, createdTime: row.created * 1_000_000, values: values(row))
            #expect(found == .present(record), "key \(key)")
        }
    }

    @Test("random batches in any order store the newest row of each entity, in memory and after reopening", arguments: [1, 2, 3, 4])
    func newestWins(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var all: [Row] = []
        do {
            let store = try OnlineStore(directory: directory)
            let table = try store.table(for: Self.schema)
            for _ in 0..<Int.random(in: 5...20, using: &random) {
                // Batches of a few keys with times that go back and forth (backfills after newer runs).
                let batch = (0..<Int.random(in: 1...200, using: &random)).map { _ in
                    Row(
                        key: Int64.random(in: 0..<50, using: &random), event: Int64.random(in: 0..<40, using: &random),
                        created: Int64.random(in: 0..<3, using: &random),
                        rate: Bool.random(using: &random) ? Double.random(in: 0...1, using: &random) : nil,
                        trips: Bool.random(using: &random) ? Int64.random(in: -5...1_000_000_000_000, using: &random) : nil,
                        city: Bool.random(using: &random) ? ["oslo", "", "zürich, \"ch\""].randomElement(using: &random) : nil)
                }
                // Stored in slices of a random size (one hold of the lock each), duplicates of a key in different slices included.
                try table.upsert(Self.rows(batch), rowsPerLock: Int.random(in: 1...300, using: &random))
                all += batch
            }
            try table.sync()
            Self.check(table, against: Self.expected(all), keys: 0..<60, now: 40)
        }
        let reopened = try OnlineStore(directory: directory)
        let table = try #require(reopened.table(view: "driver_stats", version: 1))
        Self.check(table, against: Self.expected(all), keys: 0..<60, now: 40)
    }

    @Test("staged rows are invisible until committed, then merge newest-wins; discarded or left by a stopped agent, they never land", arguments: [5, 6, 7])
    func staging(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func batch() -> [Row] {
            (0..<Int.random(in: 1...300, using: &random)).map { _ in
                Row(
                    key: Int64.random(in: 0..<80, using: &random), event: Int64.random(in: 0..<40, using: &random),
                    created: Int64.random(in: 0..<3, using: &random), rate: Double.random(in: 0...1, using: &random),
                    trips: Bool.random(using: &random) ? Int64.random(in: 0...99, using: &random) : nil, city: "c")
            }
        }
        let store = try OnlineStore(directory: directory)
        let table = try store.table(for: Self.schema)
        let served = batch()
        try table.upsert(Self.rows(served))

        // A failing job: staged, then discarded. The served rows are untouched.
        let failing = try store.stagingTable(for: Self.schema, job: 1)
        try failing.upsert(Self.rows(batch()))
        Self.check(table, against: Self.expected(served), keys: 0..<90, now: 40)
        store.discard(failing)

        // A passing job: staged in several batches, committed; the result is as if written directly.
        let staged = try store.stagingTable(for: Self.schema, job: 2)
        var passing: [Row] = []
        for _ in 0..<Int.random(in: 1...4, using: &random) {
            let rows = batch()
            try staged.upsert(Self.rows(rows))
            passing += rows
        }
        Self.check(table, against: Self.expected(served), keys: 0..<90, now: 40)
        try store.commit(staged)
        Self.check(table, against: Self.expected(served + passing), keys: 0..<90, now: 40)

        // A job staging when the agent stopped: reopening drops its rows and keeps the store's.
        let abandoned = try store.stagingTable(for: Self.schema, job: 3)
        try abandoned.upsert(Self.rows(batch()))
        let reopened = try OnlineStore(directory: directory)
        let folder = (directory as NSString).appendingPathComponent("staging")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).isEmpty)
        #expect(reopened.schemas == [Self.schema])
        Self.check(try #require(reopened.table(view: "driver_stats", version: 1)), against: Self.expected(served + passing), keys: 0..<90, now: 40)
    }

    @Test("an older row never replaces a newer one; equal event times go to the greater created time")
    func noRegression() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let table = try OnlineStore(directory: directory).table(for: Self.schema)
        #expect(try table.upsert(Self.rows([Row(key: 1, event: 100, created: 5, rate: 0.9, trips: 9, city: "new")])) == 1)
        #expect(try table.upsert(Self.rows([Row(key: 1, event: 50, created: 99, rate: 0.1, trips: 1, city: "old")])) == 0)
        #expect(try table.upsert(Self.rows([Row(key: 1, event: 100, created: 4, rate: 0.2, trips: 2, city: "tie, older")])) == 0)
        #expect(try table.upsert(Self.rows([Row(key: 1, event: 100, created: 6, rate: 0.3, trips: 3, city: nil)])) == 1)
        Self.check(table, against: [1: Row(key: 1, event: 100, created: 6, rate: 0.3, trips: 3, city: nil)], keys: 1..<2, now: 100)
    }

    @Test("a batch with a column that does not fit the schema is refused whole: nothing stored or logged")
    func misfitBatchChangesNothing() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let table = try OnlineStore(directory: directory).table(for: Self.schema)
        let stored = (0..<600).map { Row(key: $0, event: 10, created: 0, rate: 0.5, trips: $0, city: "c\($0)") }
        try table.upsert(Self.rows(stored))
        let size = table.logSize
        // Newer rows for the same keys, more than one slice of them, with text where `trips` holds integers.
        var misfit = Self.rows(stored.map { Row(key: $0.key, event: 20, created: 0, rate: 0.9, trips: 1, city: "new") })
        misfit.features[1] = .string(Array(repeating: "1", count: misfit.count))
        #expect(throws: OnlineStoreError.self) { try table.upsert(misfit, rowsPerLock: 7) }
        #expect(table.logSize == size)
        Self.check(table, against: Self.expected(stored), keys: 0..<600, now: 10)
        let reopened = try #require(try OnlineStore(directory: directory).table(view: "driver_stats", version: 1))
        Self.check(reopened, against: Self.expected(stored), keys: 0..<600, now: 10)
    }

    @Test("reads while another thread writes in slices see whole rows, and never an entity going back in time", arguments: [21, 22])
    func readsDuringSlicedWrites(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let table = try OnlineStore(directory: directory).table(for: Self.schema)
        let keys: Int64 = 2_000
        // Every value of a row is derived from its event time, so a row mixed from two writes shows.
        func row(_ key: Int64, _ event: Int64) -> Row { Row(key: key, event: event, created: 0, rate: Double(event), trips: event, city: "t\(event)") }
        try table.upsert(Self.rows((0..<keys).map { row($0, 1) }))
        let batches = (0..<200).map { round in
            (0..<Int.random(in: 1...1_500, using: &random)).map { _ in row(Int64.random(in: 0..<keys, using: &random), Int64(round + 2)) }
        }
        let slices = (0..<batches.count).map { _ in Int.random(in: 1...64, using: &random) }
        let done = Atomic(false)
        let finished = DispatchSemaphore(value: 0)
        let failure = Mutex(String?.none)
        let writer = Thread {
            defer { finished.signal() }
            for (batch, slice) in zip(batches, slices) {
                do { try table.upsert(Self.rows(batch), rowsPerLock: slice) } catch {
                    failure.withLock { $0 = "\(error)" }
                    break
                }
            }
            done.store(true, ordering: .releasing)
        }
        writer.start()
        var seen = [Int64](repeating: 1, count: Int(keys))
        var reads = 0, torn = 0, backwards = 0
        while !done.load(ordering: .acquiring) || reads < 10_000 {
            let key = Int64.random(in: 0..<keys, using: &random)
            guard case .present(let record) = table.lookup(.int(key), now: 2 * 1_000_000) else {
                torn += 1
                continue
            }
            let event = record.eventTime / 1_000_000
            if record.values != Self.values(row(key, event)) { torn += 1 }
            if event < seen[Int(key)] { backwards += 1 }
            seen[Int(key)] = event
            reads += 1
        }
        finished.wait()
        #expect(failure.withLock { $0 } == nil)
        #expect(torn == 0 && backwards == 0, "\(torn) torn and \(backwards) backward reads of \(reads)")
        Self.check(table, against: Self.expected((0..<keys).map { row($0, 1) } + batches.flatMap { $0 }), keys: 0..<keys, now: 2)
    }

    @Test("TTL: a row older than the TTL reads as expired; compaction drops it from memory and disk, and reopening agrees")
    func ttlAndCompaction() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try OnlineStore(directory: directory)
        let table = try store.table(for: Self.schema)
        let rows = (0..<1_000).map { Row(key: $0, event: $0 < 500 ? 0 : 10_000, created: 0, rate: 0.5, trips: $0, city: "c\($0)") }
        // Written three times over: the log holds three copies until compaction.
        for _ in 0..<3 { try table.upsert(Self.rows(rows)) }
        let before = table.logSize
        let now: Int64 = 10_000 + 3_600
        #expect(table.lookup(.int(10), now: now * 1_000_000) == .expired(OnlineRecord(
            eventTime: 0, createdTime: 0, values: Self.values(rows[10]))))
        #expect(table.lookup(.int(600), now: now * 1_000_000) == .present(OnlineRecord(
            eventTime: 10_000 * 1_000_000, createdTime: 0, values: Self.values(rows[600]))))
        #expect(table.needsCompaction(now: now * 1_000_000))
        #expect(store.maintain(now: now * 1_000_000) == 500)
        #expect(table.count == 500)
        #expect(table.logSize * 5 < before)
        #expect(table.lookup(.int(10), now: now * 1_000_000) == .notFound)
        #expect(!table.needsCompaction(now: now * 1_000_000))
        let reopened = try #require(try OnlineStore(directory: directory).table(view: "driver_stats", version: 1))
        #expect(reopened.count == 500)
        Self.check(reopened, against: Self.expected(Array(rows[500...])), keys: 0..<1_000, now: now)
    }

    @Test("compaction while rows are written: nothing written meanwhile is lost, in memory or after reopening", arguments: [11, 12, 13])
    func compactionUnderWrites(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try OnlineStore(directory: directory)
        let table = try store.table(for: Self.schema)
        let now: Int64 = 10_000 + 3_600
        let keys: Int64 = 60_000
        // Half the entities past the TTL at `now`, written twice over so the log outgrows its contents.
        let initial = (0..<keys).map { Row(key: $0, event: $0 % 2 == 0 ? 0 : 10_000, created: 0, rate: 0.5, trips: $0, city: "c\($0)") }
        for _ in 0..<2 { try table.upsert(Self.rows(initial)) }
        // Batches written by another thread until the compaction has returned, newer and older than what is stored,
        // for expired and live entities, and for new ones; all within the TTL at `now` (an expired row written just
        // before the compaction looks would be dropped, one written just after kept: either is right).
        let batches = (0..<400).map { _ in
            (0..<Int.random(in: 1...300, using: &random)).map { _ in
                Row(
                    key: Int64.random(in: 0..<(keys + 1_000), using: &random), event: Int64.random(in: 10_000...12_000, using: &random),
                    created: Int64.random(in: 0..<3, using: &random), rate: Double.random(in: 0...1, using: &random),
                    trips: Bool.random(using: &random) ? Int64.random(in: 0...99, using: &random) : nil, city: Bool.random(using: &random) ? "w" : nil)
            }
        }
        let compacted = Atomic(false)
        let progress = Mutex((written: 0, duringCompaction: 0, failure: String?.none))
        let started = DispatchSemaphore(value: 0), finished = DispatchSemaphore(value: 0)
        let writer = Thread {
            defer { finished.signal() }
            for (index, batch) in batches.enumerated() {
                if index == 5 { started.signal() }
                let during = !compacted.load(ordering: .acquiring)
                do { try table.upsert(Self.rows(batch)) } catch {
                    progress.withLock { $0.failure = "\(error)" }
                    return
                }
                progress.withLock {
                    $0.written = index + 1
                    if during { $0.duringCompaction += 1 }
                }
                if compacted.load(ordering: .acquiring), index >= 5 { return }
            }
        }
        writer.start()
        started.wait()
        let dropped = try table.compact(now: now * 1_000_000)
        compacted.store(true, ordering: .releasing)
        finished.wait()
        let (written, during, failure) = progress.withLock { ($0.written, $0.duringCompaction, $0.failure) }
        #expect(failure == nil)
        #expect(during > 0, "no batch was written while compacting")
        #expect(dropped > 0)
        let live = initial.filter { $0.event >= 10_000 }
        // Expired entities are gone unless a batch wrote them again; every batch written is there, newest wins.
        let expected = Self.expected(live + batches.prefix(written).flatMap { $0 })
        Self.check(table, against: expected, keys: 0..<(keys + 1_000), now: 10_000)
        try table.sync()
        // A log a crash left half-written beside the table's is removed when the store opens.
        let leftover = (directory as NSString).appendingPathComponent("driver_stats@v1.log.0A1B.tmp")
        #expect(FileManager.default.createFile(atPath: leftover, contents: Data("LDRONL01".utf8)))
        let reopened = try #require(try OnlineStore(directory: directory).table(view: "driver_stats", version: 1))
        Self.check(reopened, against: expected, keys: 0..<(keys + 1_000), now: 10_000)
        #expect(!FileManager.default.fileExists(atPath: leftover))
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".tmp") }.isEmpty)
    }

    @Test("a frame cut short by a crash is dropped on reopening; later writes follow the whole frames")
    func tornTail() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = [Row(key: 1, event: 10, created: 0, rate: 1, trips: 1, city: "a")]
        let second = (0..<100).map { Row(key: $0, event: 20, created: 0, rate: 2, trips: $0, city: "b") }
        let path: String
        do {
            let table = try OnlineStore(directory: directory).table(for: Self.schema)
            try table.upsert(Self.rows(first))
            let whole = table.logSize
            try table.upsert(Self.rows(second))
            try table.sync()
            path = (directory as NSString).appendingPathComponent("driver_stats@v1.log")
            // Cut the second frame in the middle, as a crash during the write would.
            #expect(truncate(path, off_t(whole + (table.logSize - whole) / 2)) == 0)
        }
        do {
            let table = try #require(try OnlineStore(directory: directory).table(view: "driver_stats", version: 1))
            Self.check(table, against: Self.expected(first), keys: 0..<100, now: 10)
            try table.upsert(Self.rows(second))
            try table.sync()
        }
        let table = try #require(try OnlineStore(directory: directory).table(view: "driver_stats", version: 1))
        Self.check(table, against: Self.expected(first + second), keys: 0..<100, now: 20)
    }

    @Test("composite keys, booleans and timestamps round-trip; retiring keeps the previous version and drops older ones")
    func compositeKeysAndRetirement() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try OnlineStore(directory: directory)
        func schema(_ version: Int) -> OnlineTableSchema {
            OnlineTableSchema(
                view: "pairs", version: version, keys: [Column(name: "a", type: .int64), Column(name: "b", type: .string)],
                features: [Column(name: "flag", type: .bool), Column(name: "seen", type: .timestamp)], ttlSeconds: nil)
        }
        let key = EntityKey([.int(7), .string("x,y")])
        #expect(key.description == "7,x,y")
        for version in 1...3 {
            try store.table(for: schema(version)).upsert(OnlineRows(
                keys: [key, EntityKey([.int(7), .string("x")])], eventTimes: [5, 6], createdTimes: [0, 0],
                features: [.bool([true, nil]), .timestamp([123, 456])]))
        }
        #expect(store.table(view: "pairs", version: 3)?.lookup(key, now: 0) == .present(OnlineRecord(
            eventTime: 5, createdTime: 0, values: [.bool(true), .timestamp(123)])))
        #expect(store.retire(view: "pairs", before: 3) == [1])
        #expect(store.schemas.map(\.version) == [2, 3])
        let reopened = try OnlineStore(directory: directory)
        #expect(reopened.schemas.map(\.version) == [2, 3])
        #expect(reopened.table(view: "pairs", version: 2)?.lookup(EntityKey([.int(7), .string("x")]), now: 0) == .present(OnlineRecord(
            eventTime: 6, createdTime: 0, values: [.null, .timestamp(456)])))
        #expect(throws: OnlineStoreError.self) { try reopened.table(for: OnlineTableSchema(view: "pairs", version: 2, keys: [], features: [], ttlSeconds: nil)) }
    }
}

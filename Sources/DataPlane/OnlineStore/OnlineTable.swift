import Foundation
import Shared
import Synchronization

/// What an online table holds; written into its file, so a table reopens
/// without the control plane.
public struct OnlineTableSchema: Sendable, Hashable, Codable {
    /// The feature view.
    public var view: String
    /// Its version.
    public var version: Int
    /// The join keys, in order.
    public var keys: [Column]
    /// The features, in order.
    public var features: [Column]
    /// How long a value is served after its event time; nil means forever.
    public var ttlSeconds: Int64?

    /// Creates a schema.
    public init(view: String, version: Int, keys: [Column], features: [Column], ttlSeconds: Int64?) {
        self.view = view
        self.version = version
        self.keys = keys
        self.features = features
        self.ttlSeconds = ttlSeconds
    }
}

/// A batch of rows for an online table, by column.
public struct OnlineRows: Sendable {
    /// Each row's entity.
    public var keys: [EntityKey]
    /// Each row's event time, microseconds since the epoch.
    public var eventTimes: [Int64]
    /// Each row's created time, microseconds since the epoch (0 when the source has none).
    public var createdTimes: [Int64]
    /// One column per feature of the table, in order.
    public var features: [ColumnValues]

    /// Creates rows.
    public init(keys: [EntityKey], eventTimes: [Int64], createdTimes: [Int64], features: [ColumnValues]) {
        self.keys = keys
        self.eventTimes = eventTimes
        self.createdTimes = createdTimes
        self.features = features
    }

    /// Rows in the batch.
    public var count: Int { keys.count }
}

/// The stored row of one entity.
public struct OnlineRecord: Sendable, Hashable {
    /// Its event time, microseconds since the epoch.
    public var eventTime: Int64
    /// Its created time, microseconds since the epoch.
    public var createdTime: Int64
    /// One value per feature.
    public var values: [FeatureValue]

    /// Creates a record.
    public init(eventTime: Int64, createdTime: Int64, values: [FeatureValue]) {
        self.eventTime = eventTime
        self.createdTime = createdTime
        self.values = values
    }
}

/// The answer to a lookup.
public enum OnlineLookup: Sendable, Hashable {
    /// The entity's latest row, within its TTL.
    case present(OnlineRecord)
    /// The entity's latest row is older than the TTL allows.
    case expired(OnlineRecord)
    /// Nothing is stored for the entity.
    case notFound
}

/// The latest row of each entity of one feature-view version, in memory,
/// backed by an append-only log on disk.
///
/// **Newest wins.** A row replaces the stored one only if its (event time,
/// created time) is at least as great, so jobs may arrive in any order (a
/// backfill of last month after today's run) without moving a value back.
///
/// **Memory.** Rows live in flat arrays indexed by a slot: per entity a
/// dictionary entry and two times, and per feature one 64-bit word plus a
/// null bit (strings are kept as strings). `docs/benchmarks.md` has the
/// measured bytes per value.
public final class OnlineTable: Sendable {
    /// The table's schema.
    public let schema: OnlineTableSchema
    private let layout: SlotLayout
    private let state: ReadWriteLock<State>
    /// Held while compacting, so two compactions never overlap.
    private let compaction = Mutex(())
    /// The table's log file.
    let path: String

    struct State {
        var slots: Slots
        /// Nil when the table was opened read-only.
        var log: OnlineLog?
        /// The log's size when it was last written whole (0 after a replay).
        var baseline = 0
        /// Whether the file was deleted (a retired version): a compaction then does not put it back.
        var deleted = false
    }

    /// Opens the table at `path`, creating it for `schema` when missing.
    /// A `readOnly` table only reads the file, and refuses writes.
    init(path: String, schema: OnlineTableSchema, readOnly: Bool = false) throws(OnlineStoreError) {
        let layout = try SlotLayout(schema)
        self.path = path
        self.schema = schema
        self.layout = layout
        if FileManager.default.fileExists(atPath: path) {
            var slots = Slots(layout)
            let decoder = FrameDecoder(schema: schema, types: layout.types)
            let log = try OnlineLog.open(path: path, readOnly: readOnly, header: { bytes throws(OnlineStoreError) in
                guard let stored = try? JSONDecoder().decode(OnlineTableSchema.self, from: Data(bytes)), stored == schema else {
                    throw .schemaMismatch("\(path) holds another schema")
                }
            }, frame: { payload throws(OnlineStoreError) in _ = slots.store(try decoder.decode(payload), layout: layout) })
            self.state = ReadWriteLock(State(slots: slots, log: log))
        } else {
            guard !readOnly else { throw .io("\(path) does not exist") }
            let log = try OnlineLog.create(path: path, header: try Self.header(schema))
            self.state = ReadWriteLock(State(slots: Slots(layout), log: log, baseline: log.size))
        }
    }

    static func header(_ schema: OnlineTableSchema) throws(OnlineStoreError) -> [UInt8] {
        do { return Array(try JSONEncoder().encode(schema)) } catch { throw .io("cannot encode the schema of \(schema.view)") }
    }

    /// Opens an existing table file, reading its schema from it.
    static func open(path: String, readOnly: Bool) throws(OnlineStoreError) -> OnlineTable {
        guard let schema = try? JSONDecoder().decode(OnlineTableSchema.self, from: Data(try OnlineLog.header(path: path))) else {
            throw .io("\(path) has no readable schema")
        }
        return try OnlineTable(path: path, schema: schema, readOnly: readOnly)
    }

    /// Entities stored.
    public var count: Int { state.withReadLock { $0.slots.index.count } }

    /// The newest event time stored (microseconds since the epoch), if any row is.
    public var newestEventTime: Int64? { state.withReadLock { $0.slots.newest == Int64.min ? nil : $0.slots.newest } }

    /// Bytes in the table's log file.
    public var logSize: Int {
        state.withReadLock { $0.log?.size } ?? ((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0)
    }

    /// Rows an upsert stores and logs per hold of the table's lock (see `upsert`).
    public static let rowsPerLock = 128

    /// Writes `rows`: each replaces its entity's stored row unless that one is
    /// newer. Returns how many rows were stored.
    ///
    /// The rows are checked against the schema first, so a batch that does not
    /// fit changes nothing. They are then stored `rowsPerLock` at a time, each
    /// slice under its own hold of the lock and logged as its own frame: reads
    /// of the table (the feature server's, on its event loops) wait for one
    /// slice at most, not for a whole materialization batch. A reader may see
    /// part of a batch, as it may see one batch before the next; after a crash,
    /// the slices logged so far are there, and the job or push that wrote them
    /// is retried (a row never replaces a newer one, so writing it again is harmless).
    @discardableResult
    public func upsert(_ rows: OnlineRows, rowsPerLock: Int = OnlineTable.rowsPerLock) throws(OnlineStoreError) -> Int {
        guard rows.features.count == schema.features.count, rows.eventTimes.count == rows.count, rows.createdTimes.count == rows.count else {
            throw .schemaMismatch("expected \(schema.features.count) feature columns and one time per row")
        }
        for (position, column) in rows.features.enumerated() {
            guard column.count == rows.count else {
                throw .schemaMismatch("feature \(schema.features[position].name) has \(column.count) values for \(rows.count) rows")
            }
            guard layout.accepts(column, feature: position) else {
                throw .schemaMismatch("feature \(schema.features[position].name) is \(schema.features[position].type.rawValue)")
            }
        }
        var stored = 0, start = 0
        repeat {
            let slice = start..<min(start + max(rowsPerLock, 1), rows.count)
            stored += try state.withWriteLock { state throws(OnlineStoreError) -> Int in
                guard let log = state.log else { throw .io("the table of \(schema.view) v\(schema.version) is open read-only") }
                let (keys, slots) = state.slots.store(rows, rows: slice, layout: layout)
                if !slots.isEmpty { try log.append(FrameEncoder.encode(keys: keys, slots: slots, of: state.slots, layout: layout)) }
                return slots.count
            }
            start = slice.upperBound
        } while start < rows.count
        return stored
    }

    /// Makes every write so far durable. The file is synced outside the
    /// table's lock (through a second descriptor), so reads go on meanwhile.
    public func sync() throws(OnlineStoreError) {
        let descriptor = state.withReadLock { state in state.log.map { dup($0.descriptor) } }
        guard let descriptor else { return }
        guard descriptor >= 0 else { throw .io("cannot sync \(path): \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw .io("cannot sync \(path): \(String(cString: strerror(errno)))") }
    }

    /// The stored row of `key`, judged against the TTL at `now` (microseconds).
    public func lookup(_ key: EntityKey, now: Int64) -> OnlineLookup {
        state.withReadLock { state in
            guard let slot = state.slots.index[key].map(Int.init) else { return .notFound }
            let record = state.slots.record(slot, layout: layout)
            if let ttl = schema.ttlSeconds, record.eventTime < now - ttl * 1_000_000 { return .expired(record) }
            return .present(record)
        }
    }

    /// Copies the stored values of `keys` into rows of `grid` (row `i` for
    /// `keys[i]`) under one lock: for each `(feature, column)` of `reads`, the
    /// table's feature `feature` into column `column`, with its status and
    /// event time judged against the TTL at `now` (microseconds). Cells of
    /// keys not stored keep the grid's `notFound`.
    func gather(_ keys: [EntityKey], now: Int64, reads: [(feature: Int, column: Int)], into grid: inout FeatureGrid) {
        let cutoff = schema.ttlSeconds.map { now - $0 * 1_000_000 } ?? Int64.min
        let width = grid.width
        state.withReadLock { state in
            for (row, key) in keys.enumerated() {
                guard let slot = state.slots.index[key].map(Int.init) else { continue }
                let event = state.slots.eventTimes[slot], base = row * width
                if event < cutoff {
                    for read in reads {
                        grid.statuses[base + read.column] = .expired
                        grid.eventTimes[base + read.column] = event
                    }
                    continue
                }
                for read in reads {
                    let value = state.slots.value(slot, read.feature, layout: layout)
                    grid.values[base + read.column] = value
                    grid.statuses[base + read.column] = FeatureStatus(of: value)
                    grid.eventTimes[base + read.column] = event
                }
            }
        }
    }

    /// Whether compacting would reclaim space: some entity is past the TTL at
    /// `now` (microseconds), or the log has more than doubled since it was last
    /// written whole (every job appends its rows; most replace older ones).
    public func needsCompaction(now: Int64) -> Bool {
        state.withReadLock { state in
            guard let log = state.log else { return false }
            if log.size > 2 * state.baseline + (8 << 20) { return true }
            guard let ttl = schema.ttlSeconds else { return false }
            let cutoff = now - ttl * 1_000_000
            return state.slots.eventTimes.contains { $0 < cutoff }
        }
    }

    /// Writes every stored row into `target`, which has the same schema, in
    /// chunks (each replaces its entity's row there unless that one is newer).
    /// Returns how many rows `target` stored.
    func copy(into target: OnlineTable) throws(OnlineStoreError) -> Int {
        guard target.schema == schema else { throw .schemaMismatch("\(target.schema.view) v\(target.schema.version) has another schema") }
        let (keys, slots) = state.withReadLock { state in (Array(state.slots.index.keys), state.slots.index.values.map { Int($0) }) }
        let decoder = FrameDecoder(schema: schema, types: layout.types)
        var stored = 0
        var start = 0
        while start < keys.count {
            let end = min(start + Self.rowsPerLock, keys.count)
            let frame = state.withReadLock { state in
                FrameEncoder.encode(keys: Array(keys[start..<end]), slots: Array(slots[start..<end]), of: state.slots, layout: layout)
            }
            stored += try target.upsert(try decoder.decode(frame))
            start = end
        }
        return stored
    }

    /// Every stored entity and its slot, as of now (for reading the table in chunks with `rows(keys:slots:)`).
    public func entries() -> (keys: [EntityKey], slots: [Int]) {
        state.withReadLock { state in (Array(state.slots.index.keys), state.slots.index.values.map { Int($0) }) }
    }

    /// The stored rows of `keys` at `slots` (from `entries()`).
    public func rows(keys: [EntityKey], slots: [Int]) throws(OnlineStoreError) -> OnlineRows {
        let frame = state.withReadLock { state in FrameEncoder.encode(keys: keys, slots: slots, of: state.slots, layout: layout) }
        return try FrameDecoder(schema: schema, types: layout.types).decode(frame)
    }

    /// Deletes the table's file: for retired versions.
    func deleteFile() {
        state.withWriteLock { state in
            state.deleted = true
            if state.log != nil { _ = unlink(path) }
        }
    }

    /// Rewrites the log with only the rows still within the TTL at `now`
    /// (microseconds), and forgets the others: space of expired entities is
    /// reclaimed on disk and in memory. Returns how many entities were dropped.
    ///
    /// Reads and writes go on while it runs: the live rows are encoded a chunk
    /// per lock, the new log is written aside and synced, and its rows indexed,
    /// all outside the table's lock; rows written meanwhile are appended to the
    /// old log as usual and copied over from its tail. The lock is held again
    /// only to copy the last of that tail and put the new log in place.
    @discardableResult
    public func compact(now: Int64) throws(OnlineStoreError) -> Int {
        try compaction.withLock { _ throws(OnlineStoreError) -> Int in
            let cutoff = schema.ttlSeconds.map { now - $0 * 1_000_000 } ?? Int64.min
            // The live entities and where the old log ends now; slots stay where they are until the swap.
            // The old log is read through a descriptor of its own: the same file even if the table is retired and another takes its path.
            let (live, total, start, reader) = try state.withReadLock { state throws(OnlineStoreError) in
                guard let log = state.log else { throw .io("the table of \(schema.view) v\(schema.version) is open read-only") }
                let live = state.slots.index.filter { state.slots.eventTimes[Int($0.value)] >= cutoff }
                return (live.map { ($0.key, Int($0.value)) }, state.slots.index.count, log.size, try log.reader())
            }
            defer { close(reader) }
            let pending = try OnlineLog.Pending(path: path, header: try Self.header(schema))
            var slots = Slots(layout)
            let decoder = FrameDecoder(schema: schema, types: layout.types)
            var first = 0
            while first < live.count {
                let chunk = live[first..<min(first + Self.rowsPerLock, live.count)]
                let frame = state.withReadLock { state in
                    FrameEncoder.encode(keys: chunk.map(\.0), slots: chunk.map(\.1), of: state.slots, layout: layout)
                }
                try pending.append(frame: frame)
                _ = slots.store(try decoder.decode(frame), layout: layout)
                first += chunk.count
            }
            try pending.sync()
            // Rows written since: copied from the old log's tail, outside the lock while it keeps growing.
            var copied = start
            func copyTail(upTo end: Int) throws(OnlineStoreError) {
                guard end > copied else { return }
                let tail = try OnlineLog.bytes(reader, path: path, from: copied, to: end)
                try pending.append(bytes: tail)
                for payload in try OnlineLog.payloads(in: tail) { _ = slots.store(try decoder.decode(payload), layout: layout) }
                copied = end
            }
            for _ in 0..<3 {
                let end = state.withReadLock { $0.log?.size ?? 0 }
                if end - copied < 1 << 16 { break }
                try copyTail(upTo: end)
            }
            // Synced before the swap: those rows may have been synced in the old log already.
            if copied > start { try pending.sync() }
            return try state.withWriteLock { state throws(OnlineStoreError) -> Int in
                guard let log = state.log, !state.deleted else {
                    pending.discard()
                    return 0
                }
                if log.size > copied {
                    try copyTail(upTo: log.size)
                    try pending.sync()
                }
                try pending.install(at: path)
                let installed = try OnlineLog(appendingTo: path)
                state = State(slots: slots, log: installed, baseline: installed.size)
                return total - live.count
            }
        }
    }
}

/// How a table's features are laid out in its slots.
struct SlotLayout: Sendable {
    let schema: OnlineTableSchema
    let types: [StoredType]
    /// For each feature, its index among word features or among string features.
    let positions: [Int]
    let wordFeatures: Int
    let stringFeatures: Int
    let nullWords: Int

    init(_ schema: OnlineTableSchema) throws(OnlineStoreError) {
        var types: [StoredType] = [], positions: [Int] = []
        var words = 0, strings = 0
        for feature in schema.features {
            let type = try StoredType(feature.type)
            types.append(type)
            if type == .string { positions.append(strings); strings += 1 } else { positions.append(words); words += 1 }
        }
        self.schema = schema
        self.types = types
        self.positions = positions
        self.wordFeatures = words
        self.stringFeatures = strings
        self.nullWords = (schema.features.count + 63) / 64
    }

    /// Whether `column` can be stored as feature `feature` (integers go into double features too).
    func accepts(_ column: ColumnValues, feature: Int) -> Bool {
        switch (column, types[feature]) {
        case (.int64, .int), (.timestamp, .timestamp), (.int64, .double), (.float64, .double), (.bool, .bool), (.string, .string): true
        default: false
        }
    }
}

/// The stored rows of a table, one slot per entity.
struct Slots {
    var index: [EntityKey: Int32] = [:]
    var eventTimes: [Int64] = []
    var createdTimes: [Int64] = []
    /// `wordFeatures` words per slot.
    var words: [UInt64] = []
    /// `nullWords` words of null bits per slot.
    var nulls: [UInt64] = []
    /// Per string feature, one value per slot.
    var strings: [[String?]]
    /// The newest event time stored.
    var newest = Int64.min

    init(_ layout: SlotLayout) {
        strings = Array(repeating: [], count: layout.stringFeatures)
    }

    /// Whether feature `feature` of `slot` is null.
    @inline(__always)
    func isNull(_ slot: Int, _ feature: Int, layout: SlotLayout) -> Bool {
        nulls[slot * layout.nullWords + feature / 64] & (UInt64(1) << UInt64(feature % 64)) != 0
    }

    /// The value of feature `feature` of `slot`.
    @inline(__always)
    func value(_ slot: Int, _ feature: Int, layout: SlotLayout) -> FeatureValue {
        if isNull(slot, feature, layout: layout) { return .null }
        let type = layout.types[feature]
        if type == .string { return strings[layout.positions[feature]][slot].map(FeatureValue.string) ?? .null }
        return type.value(bits: words[slot * layout.wordFeatures + layout.positions[feature]])
    }

    func record(_ slot: Int, layout: SlotLayout) -> OnlineRecord {
        OnlineRecord(
            eventTime: eventTimes[slot], createdTime: createdTimes[slot],
            values: (0..<layout.types.count).map { value(slot, $0, layout: layout) })
    }

    /// Stores the rows of `rows` that are at least as new as what is stored;
    /// returns their keys and slots.
    mutating func store(_ rows: OnlineRows, rows range: Range<Int>? = nil, layout: SlotLayout) -> (keys: [EntityKey], slots: [Int]) {
        let range = range ?? 0..<rows.count
        // Pick the rows that win, and the slot each goes to.
        var winners: [Int] = [], slots: [Int] = [], keys: [EntityKey] = []
        winners.reserveCapacity(range.count)
        slots.reserveCapacity(range.count)
        keys.reserveCapacity(range.count)
        for row in range {
            let event = rows.eventTimes[row], created = rows.createdTimes[row], key = rows.keys[row]
            let slot: Int
            if let existing = index[key] {
                slot = Int(existing)
                if (event, created) < (eventTimes[slot], createdTimes[slot]) { continue }
                eventTimes[slot] = event
                createdTimes[slot] = created
            } else {
                slot = eventTimes.count
                index[key] = Int32(slot)
                eventTimes.append(event)
                createdTimes.append(created)
                words.append(contentsOf: repeatElement(0, count: layout.wordFeatures))
                nulls.append(contentsOf: repeatElement(0, count: layout.nullWords))
                for position in 0..<layout.stringFeatures { strings[position].append(nil) }
            }
            if event > newest { newest = event }
            winners.append(row)
            slots.append(slot)
            keys.append(key)
        }
        guard !winners.isEmpty else { return ([], []) }
        // Then copy their values column by column.
        for (feature, column) in rows.features.enumerated() {
            store(column, feature: feature, winners: winners, slots: slots, layout: layout)
        }
        return (keys, slots)
    }

    /// Copies the winners' values of one feature (a column `layout.accepts`; others are skipped).
    private mutating func store(_ column: ColumnValues, feature: Int, winners: [Int], slots: [Int], layout: SlotLayout) {
        let type = layout.types[feature], position = layout.positions[feature]
        let wordFeatures = layout.wordFeatures, nullWords = layout.nullWords
        let nullWord = feature / 64, nullBit = UInt64(1) << UInt64(feature % 64)
        func words<T>(_ values: [T?], _ bits: (T) -> UInt64) {
            for (row, slot) in zip(winners, slots) {
                if let value = values[row] {
                    self.words[slot * wordFeatures + position] = bits(value)
                    nulls[slot * nullWords + nullWord] &= ~nullBit
                } else {
                    nulls[slot * nullWords + nullWord] |= nullBit
                }
            }
        }
        switch (column, type) {
        case (.int64(let values), .int), (.timestamp(let values), .timestamp): words(values) { UInt64(bitPattern: $0) }
        case (.int64(let values), .double): words(values) { Double($0).bitPattern }
        case (.float64(let values), .double): words(values) { $0.bitPattern }
        case (.bool(let values), .bool): words(values) { $0 ? 1 : 0 }
        case (.string(let values), .string):
            for (row, slot) in zip(winners, slots) {
                strings[position][slot] = values[row]
                if values[row] == nil { nulls[slot * nullWords + nullWord] |= nullBit } else { nulls[slot * nullWords + nullWord] &= ~nullBit }
            }
        default:
            assertionFailure("a column the layout does not accept reached the store")
        }
    }
}

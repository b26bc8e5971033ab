import Foundation
import Logging
import PostgresNIO
import Shared
import Synchronization

/// Reads, from a feature view version's offline table, the rows a chunk of
/// entity rows can match: those of the chunk's entities with an event time in
/// `[earliest - ttl, latest]`. Rows of other entities are dropped as they
/// arrive, so memory holds only candidates.
///
/// On PostgreSQL 14 and later the table is read in ranges of pages (a TID
/// range scan), each range's columns aggregated into arrays by the server
/// and parsed here from their binary form: one result row per range instead
/// of one per table row, which is where a row-by-row read spends its time.
/// The ranges are read in one REPEATABLE READ transaction (two, sharing an
/// exported snapshot, when reading over two connections), so they see one
/// snapshot of the table. Older servers are read row by row.
struct OfflineCandidates: Sendable {
    let table: OfflineTable
    let view: ResolvedRequest.ViewRead
    /// Pages per range of a bulk read (1,000: about 100,000 rows of a narrow
    /// table); nil reads row by row.
    var pagesPerRange: Int? = 1_000
    /// Whether rows may hold a created time (views whose source declares none never do: the column is not read).
    var hasCreated = true
    /// A second connection's URL: the ranges are then read over two connections sharing one snapshot,
    /// so the server prepares one range while the agent parses another.
    var parallel: PostgresURL?
    /// Whether the table's segments, when it has them, are read instead of its rows.
    var useSegments = true
    let logger: Logger

    /// The candidate rows of `entities` (each key's index in the chunk) between `from` (nil: the beginning) and `to` (microseconds, inclusive).
    func read(entities: [EntityKey: Int32], from: Int64?, to: Int64, on connection: PostgresConnection) async throws -> CandidateRows {
        let segments = try await readsSegments(on: connection)
        if try await readsInOrder(segments: segments, on: connection) {
            var rows = CandidateRows(types: view.reads.map(\.type))
            try await readInOrder(entities: entities, from: from, to: to, segments: segments, on: connection) { part, estimate in
                if rows.count == 0 { rows.reserve(estimate) }
                rows.append(part)
            }
            return rows
        }
        return try await readRows(entities: entities, from: from, to: to, on: connection)
    }

    /// Whether the table's segments are read instead of its rows: it has a segments table, and `useSegments`.
    func readsSegments(on connection: PostgresConnection) async throws -> Bool {
        guard useSegments else { return false }
        return try await table.hasSegments(on: connection, logger: logger)
    }

    /// Whether the table is read in parts that follow its event-time order as far as it keeps it: its
    /// segments (ordered by their earliest time), or its ranges of pages.
    func readsInOrder(segments: Bool, on connection: PostgresConnection) async throws -> Bool {
        if segments { return true }
        return try await readsInRanges(on: connection)
    }

    /// Reads the candidates in parts (see `readsInOrder`), handing each to `consume` with the rows expected in all.
    func readInOrder(
        entities: [EntityKey: Int32], from: Int64?, to: Int64, segments: Bool, on connection: PostgresConnection,
        consume: (CandidateRows, _ estimate: Int) async throws -> Void
    ) async throws {
        if segments {
            try await readSegments(entities: entities, from: from, to: to, on: connection, consume: consume)
        } else if let pagesPerRange {
            try await readInRanges(entities: entities, from: from, to: to, pagesPerRange: pagesPerRange, on: connection, consume: consume)
        }
    }

    /// Reads the segments that may hold rows between `from` (nil: the
    /// beginning) and `to`, in order of their earliest event time, in one
    /// REPEATABLE READ transaction, and hands each one's candidate rows (of
    /// the chunk's entities, in the time bounds) to `consume`, with the rows
    /// the segments hold in all.
    func readSegments(
        entities: [EntityKey: Int32], from: Int64?, to: Int64, on connection: PostgresConnection,
        consume: (CandidateRows, _ estimate: Int) async throws -> Void
    ) async throws {
        let lookup = EntityLookup(entities, keys: view.keys)
        let keyTypes = view.keys.map(\.type)
        let window = (from ?? Int64.min)...to
        try await connection.inTransaction(logger: logger, begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { connection in
            // The table's columns in their stored order: a segment keeps them so.
            var names: [String] = []
            var attributes = PostgresQuery(unsafeSQL: """
                SELECT attname::text FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum
                """)
            attributes.binds.append(table.qualifiedName)
            for try await (name) in try await connection.query(attributes, logger: logger).decode(String.self) { names.append(name) }
            func position(_ column: String) throws -> Int {
                guard let index = names.firstIndex(of: column) else {
                    throw JobExecutionError("offline store: \(table.schema).\(table.name) has no column '\(column)'", retryable: false)
                }
                return index
            }
            let keyColumns = try view.keys.map { try position($0.name) }
            let event = try position("event_timestamp"), created = try position("created_timestamp")
            let features = try view.reads.map { try position($0.feature) }
            let wanted = Set(keyColumns + [event] + (hasCreated ? [created] : []) + features)

            let filter = timeFilter(from: from, to: to, firstParameter: 1, earliest: "first_event", latest: "last_event")
            let bounds = filter.sql
            var estimate = 0
            var total = PostgresQuery(unsafeSQL: "SELECT coalesce(sum(row_count), 0)::bigint FROM \(table.qualifiedSegmentsName) WHERE \(bounds)")
            for bind in filter.binds { total.binds.append(bind) }
            for try await (rows) in try await connection.query(total, logger: logger).decode(Int64.self) { estimate = Int(rows) }
            var segments = PostgresQuery(unsafeSQL: "SELECT data FROM \(table.qualifiedSegmentsName) WHERE \(bounds) ORDER BY first_event, id")
            for bind in filter.binds { segments.binds.append(bind) }
            for try await (data) in try await connection.query(segments, logger: logger).decode(ByteBuffer.self) {
                let segment: OfflineSegment
                do { segment = try OfflineSegment(decoding: data, only: wanted) } catch {
                    throw JobExecutionError("offline store: \(table.schema).\(table.segmentsName): \(error)", retryable: false)
                }
                func parsed(_ column: Int) -> ArrayColumns.Parsed {
                    switch segment.columns[column] {
                    case .fixed(let bits, let nulls): return ArrayColumns.Parsed(bits: bits, nulls: nulls ?? Array(repeating: false, count: segment.count))
                    case .text(let values): return ArrayColumns.Parsed(texts: values)
                    case .skipped: return ArrayColumns.Parsed()
                    }
                }
                var part = CandidateRows(types: view.reads.map(\.type))
                part.append(
                    keys: keyColumns.map(parsed), times: parsed(event), created: hasCreated ? parsed(created) : nil, features: features.map(parsed),
                    lookup: lookup, keyTypes: keyTypes, window: window)
                try await consume(part, estimate)
            }
        }
    }

    /// About how many rows a scan between `from` and `to` reads: those of the segments in the
    /// bounds when the segments are read, else the table's estimated row count.
    func estimatedRows(from: Int64?, to: Int64, segments: Bool, on connection: PostgresConnection) async throws -> Int {
        var query: PostgresQuery
        if segments {
            let filter = timeFilter(from: from, to: to, firstParameter: 1, earliest: "first_event", latest: "last_event")
            query = PostgresQuery(unsafeSQL: "SELECT coalesce(sum(row_count), 0)::bigint FROM \(table.qualifiedSegmentsName) WHERE \(filter.sql)")
            for bind in filter.binds { query.binds.append(bind) }
        } else {
            query = PostgresQuery(unsafeSQL: "SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::regclass")
            query.binds.append(table.qualifiedName)
        }
        for try await (rows) in try await connection.query(query, logger: logger).decode(Int64.self) { return Int(rows) }
        return 0
    }

    /// Whether the table can be read in ranges of pages (PostgreSQL 14 and later).
    func readsInRanges(on connection: PostgresConnection) async throws -> Bool {
        guard pagesPerRange != nil else { return false }
        var version = 0
        for try await (number) in try await connection.query("SELECT current_setting('server_version_num')::int", logger: logger).decode(Int.self) {
            version = number
        }
        return version >= 140_000
    }

    /// The bounds bound as parameters, a millisecond wider than asked: binding
    /// a time may round it; the join itself compares exactly.
    /// A row qualifies when `earliest` (`event_timestamp`) is at most `to` and `latest` at least `from`:
    /// a segment's `first_event` and `last_event`.
    func timeFilter(
        from: Int64?, to: Int64, firstParameter: Int, earliest: String = "event_timestamp", latest: String = "event_timestamp"
    ) -> (sql: String, binds: [Date]) {
        var binds = [Date(timeIntervalSince1970: Double(to + 1_000) / 1_000_000)]
        var sql = "\(earliest) <= $\(firstParameter)"
        if let from {
            binds.append(Date(timeIntervalSince1970: Double(from - 1_000) / 1_000_000))
            sql += " AND \(latest) >= $\(firstParameter + 1)"
        }
        return (sql, binds)
    }

    /// Reads the table in ranges of pages, each as one row of arrays, and
    /// hands each range's candidate rows to `consume` in the table's order,
    /// with the table's estimated row count.
    func readInRanges(
        entities: [EntityKey: Int32], from: Int64?, to: Int64, pagesPerRange: Int, on connection: PostgresConnection,
        consume: (CandidateRows, _ estimate: Int) async throws -> Void
    ) async throws {
        let columns = view.keys.map { SQLIdentifier.quote($0.name) } + ["event_timestamp"] + (hasCreated ? ["created_timestamp"] : [])
            + view.reads.map { SQLIdentifier.quote($0.feature) }
        let filter = timeFilter(from: from, to: to, firstParameter: 3)
        let statement = """
            SELECT \(columns.map { "array_agg(\($0))" }.joined(separator: ", ")) FROM \(table.qualifiedName)
            WHERE ctid >= format('(%s,0)', $1::bigint)::tid AND ctid < format('(%s,0)', $2::bigint)::tid AND \(filter.sql)
            """
        let lookup = EntityLookup(entities, keys: view.keys)
        try await connection.inTransaction(logger: logger, begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { connection in
            // The table's pages, and its estimated rows (room for all of them, when collecting: the columns never grow by copying).
            var pages: Int64 = 0, estimate: Int64 = 0
            var size = PostgresQuery(unsafeSQL: """
                SELECT pg_relation_size(oid) / current_setting('block_size')::bigint, GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::regclass
                """)
            size.binds.append(table.qualifiedName)
            for try await (count, rows) in try await connection.query(size, logger: logger).decode((Int64, Int64).self) {
                pages = count
                estimate = rows
            }
            let reserve = Int(min(estimate, 200_000_000))
            let ranges = Array(stride(from: Int64(0), to: pages, by: pagesPerRange))
            /// Reads range `first` on `connection`: one row of arrays, parsed.
            @Sendable func readRange(_ first: Int64, on connection: PostgresConnection) async throws -> CandidateRows {
                var query = PostgresQuery(unsafeSQL: statement)
                query.binds.append(first)
                query.binds.append(first + Int64(pagesPerRange))
                for bind in filter.binds { query.binds.append(bind) }
                var part = CandidateRows(types: view.reads.map(\.type))
                for try await row in try await connection.query(query, logger: logger) {
                    try ArrayColumns(row: row, keyCount: view.keys.count, hasCreated: hasCreated)
                        .append(to: &part, lookup: lookup, keyTypes: view.keys.map(\.type), featureTypes: view.reads.map(\.type))
                }
                return part
            }
            /// Reads `positions` of `ranges` on `connection`, one after another. `ready(p)` waits until
            /// position p may be read; `deliver` takes each range's rows. (Sending a range's query before
            /// the previous range is parsed was tried: through PostgresNIO it made the read slower.)
            @Sendable func read(
                _ positions: [Int], on connection: PostgresConnection, ready: (Int) async throws -> Void,
                deliver: (Int, CandidateRows) async throws -> Void
            ) async throws {
                for position in positions {
                    try await ready(position)
                    try await deliver(position, try await readRange(ranges[position], on: connection))
                }
            }
            // One connection: the ranges in order. With a second one on the same exported snapshot,
            // the connections read every other range, and the ranges are handed on in order as they complete.
            var snapshot = ""
            if parallel != nil, ranges.count > 1 {
                for try await (id) in try await connection.query("SELECT pg_export_snapshot()", logger: logger).decode(String.self) { snapshot = id }
            }
            guard let parallel, !snapshot.isEmpty, snapshot.allSatisfy({ $0.isHexDigit || $0 == "-" }) else {
                try await read(Array(ranges.indices), on: connection, ready: { _ in }) { _, part in try await consume(part, reserve) }
                return
            }
            let second = try await parallel.connect(logger: logger)
            do {
                try await second.inTransaction(logger: logger, begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { second in
                    try await second.execute(PostgresQuery(unsafeSQL: "SET TRANSACTION SNAPSHOT '\(snapshot)'"), logger: logger)
                    let (parts, continuation) = AsyncThrowingStream.makeStream(of: (Int, CandidateRows).self)
                    let handedOn = RangesHandedOn()
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            try await withThrowingTaskGroup(of: Void.self) { readers in
                                for (index, reader) in [connection, second].enumerated() {
                                    readers.addTask {
                                        // A reader stays at most two ranges ahead of those handed on, so memory holds a few ranges at most.
                                        try await read(Array(stride(from: index, to: ranges.count, by: 2)), on: reader) { position in
                                            while position > handedOn.count.load(ordering: .acquiring) + 2 { try await Task.sleep(for: .milliseconds(1)) }
                                        } deliver: { position, part in
                                            continuation.yield((position, part))
                                        }
                                    }
                                }
                                do {
                                    try await readers.waitForAll()
                                    continuation.finish()
                                } catch {
                                    continuation.finish(throwing: error)
                                    throw error
                                }
                            }
                        }
                        var waiting: [Int: CandidateRows] = [:]
                        var next = 0
                        for try await (position, part) in parts {
                            waiting[position] = part
                            while let ready = waiting.removeValue(forKey: next) {
                                try await consume(ready, reserve)
                                next += 1
                                handedOn.count.store(next, ordering: .releasing)
                            }
                        }
                        try await group.waitForAll()
                    }
                }
                try await second.close()
            } catch {
                try? await second.close()
                throw error
            }
        }
    }

    /// Reads the rows one by one (servers before PostgreSQL 14, which cannot scan a range of pages).
    func readRows(entities: [EntityKey: Int32], from: Int64?, to: Int64, on connection: PostgresConnection) async throws -> CandidateRows {
        var rows = CandidateRows(types: view.reads.map(\.type))
        let keys = view.keys.map { SQLIdentifier.quote($0.name) }
        let features = view.reads.map { SQLIdentifier.quote($0.feature) }
        var query = PostgresQuery(unsafeSQL: """
            SELECT \((keys + ["event_timestamp", "created_timestamp"] + features).joined(separator: ", "))
            FROM \(table.qualifiedName) WHERE \(timeFilter(from: from, to: to, firstParameter: 1).sql)
            """)
        for bind in timeFilter(from: from, to: to, firstParameter: 1).binds { query.binds.append(bind) }
        let keyCount = keys.count
        let keyTypes = view.keys.map(\.type)
        var parts: [EntityKey.Part] = []
        for try await row in try await connection.query(query, logger: logger) {
            let cells = row.makeRandomAccess()
            let key: EntityKey
            if keyCount == 1 {
                key = keyTypes[0].isInteger ? .int(try cells[0].decode(Int64.self)) : .string(try cells[0].decode(String.self))
            } else {
                parts.removeAll(keepingCapacity: true)
                for index in 0..<keyCount {
                    parts.append(keyTypes[index].isInteger ? .int(try cells[index].decode(Int64.self)) : .string(try cells[index].decode(String.self)))
                }
                key = EntityKey(parts)
            }
            guard let entity = entities[key] else { continue }
            rows.entity.append(entity)
            rows.times.append(MaterializationPlan.micros(try cells[keyCount].decode(Date.self)))
            rows.created.append(hasCreated ? try cells[keyCount + 1].decode(Date?.self).map(MaterializationPlan.micros) ?? CandidateRows.noCreated : CandidateRows.noCreated)
            for (position, read) in view.reads.enumerated() {
                let cell = cells[keyCount + 2 + position]
                let value: FeatureValue
                switch read.type {
                case .int64, .int32: value = try cell.decode(Int64?.self).map(FeatureValue.int) ?? .null
                case .float64, .float32: value = try cell.decode(Double?.self).map(FeatureValue.double) ?? .null
                case .bool: value = try cell.decode(Bool?.self).map(FeatureValue.bool) ?? .null
                case .timestamp: value = try cell.decode(Date?.self).map { .timestamp(MaterializationPlan.micros($0)) } ?? .null
                default: value = try cell.decode(String?.self).map(FeatureValue.string) ?? .null
                }
                rows.columns[position].append(value)
            }
        }
        return rows
    }
}

/// How many ranges of a parallel read were handed on, in order.
final class RangesHandedOn: Sendable {
    let count = Atomic(0)
}

/// The chunk's entities by key, with a dictionary of plain integers or
/// strings for the common single key (hashing an `EntityKey` costs more).
struct EntityLookup: Sendable {
    let byKey: [EntityKey: Int32]
    let byInteger: [Int64: Int32]?
    let byString: [String: Int32]?

    init(_ entities: [EntityKey: Int32], keys: [Column]) {
        byKey = entities
        var integers: [Int64: Int32]?, strings: [String: Int32]?
        if keys.count == 1, keys[0].type.isInteger {
            integers = Dictionary(minimumCapacity: entities.count)
            for (key, entity) in entities { if case .int(let value) = key { integers![value] = entity } }
        } else if keys.count == 1 {
            strings = Dictionary(minimumCapacity: entities.count)
            for (key, entity) in entities { if case .string(let value) = key { strings![value] = entity } }
        }
        byInteger = integers
        byString = strings
    }
}

/// One result row of a bulk read: each column an array in PostgreSQL's
/// binary array format (a header; then per element its length, -1 for null,
/// and its bytes), parsed in place into typed columns.
struct ArrayColumns {
    let cells: [ByteBuffer?]
    let keyCount: Int
    let hasCreated: Bool

    init(row: PostgresRow, keyCount: Int, hasCreated: Bool) {
        var cells: [ByteBuffer?] = []
        for cell in row { cells.append(cell.bytes) }
        self.cells = cells
        self.keyCount = keyCount
        self.hasCreated = hasCreated
    }

    /// PostgreSQL's epoch (2000-01-01) in microseconds since 1970.
    static let postgresEpoch: Int64 = 946_684_800_000_000

    /// A column parsed: fixed-width values as 64-bit patterns (null flags
    /// beside), or text.
    struct Parsed {
        var bits: [Int64] = []
        var nulls: [Bool] = []
        var texts: [String?] = []
    }

    /// Parses a one-dimensional array of `type`.
    static func parse(_ buffer: ByteBuffer, type: ValueType) throws -> Parsed {
        try buffer.withUnsafeReadableBytes { raw -> Parsed in
            var offset = 0
            func int32() throws -> Int32 {
                guard offset + 4 <= raw.count else { throw JobExecutionError("offline store: a cut array", retryable: false) }
                defer { offset += 4 }
                return Int32(bigEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int32.self))
            }
            let dimensions = try int32()
            _ = try int32()   // has nulls
            _ = try int32()   // element type
            var parsed = Parsed()
            guard dimensions == 1 else { return parsed }
            let count = Int(try int32())
            _ = try int32()   // lower bound
            let text = type == .string || type == .bytes
            if text { parsed.texts.reserveCapacity(count) } else {
                parsed.bits.reserveCapacity(count)
                parsed.nulls.reserveCapacity(count)
            }
            for _ in 0..<count {
                let length = Int(try int32())
                if length < 0 {
                    if text { parsed.texts.append(nil) } else {
                        parsed.bits.append(0)
                        parsed.nulls.append(true)
                    }
                    continue
                }
                guard offset + length <= raw.count else { throw JobExecutionError("offline store: a cut array", retryable: false) }
                if text {
                    parsed.texts.append(String(decoding: UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + length)]), as: UTF8.self))
                } else {
                    let value: Int64
                    switch (type, length) {
                    case (_, 8): value = Int64(bigEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int64.self))
                    case (.float32, 4): value = Int64(bitPattern: Double(Float(bitPattern: UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))).bitPattern)
                    case (_, 4): value = Int64(Int32(bigEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int32.self)))
                    case (_, 1): value = Int64(raw[offset])
                    default: throw JobExecutionError("offline store: an array element of \(length) bytes for \(type.rawValue)", retryable: false)
                    }
                    parsed.bits.append(type == .timestamp ? value + postgresEpoch : value)
                    parsed.nulls.append(false)
                }
                offset += length
            }
            return parsed
        }
    }

    /// Appends the rows of the chunk's entities to `rows`.
    func append(to rows: inout CandidateRows, lookup: EntityLookup, keyTypes: [ValueType], featureTypes: [ValueType]) throws {
        // No row in the range: every aggregate is null.
        guard !cells.contains(where: { $0 == nil }) else { return }
        let buffers = cells.map { $0! }
        let keys = try zip(buffers.prefix(keyCount), keyTypes).map { try Self.parse($0, type: $1.isInteger ? .int64 : .string) }
        let times = try Self.parse(buffers[keyCount], type: .timestamp)
        let created = hasCreated ? try Self.parse(buffers[keyCount + 1], type: .timestamp) : nil
        let base = keyCount + (hasCreated ? 2 : 1)
        let features = try featureTypes.enumerated().map { try Self.parse(buffers[base + $0.offset], type: $0.element) }
        rows.append(keys: keys, times: times, created: created, features: features, lookup: lookup, keyTypes: keyTypes, window: nil)
    }
}

extension CandidateRows {
    /// Appends the parsed rows whose entity is one of the chunk's (and whose
    /// event time is in `window`, when given), copied column by column: whole
    /// columns when every row is kept, as for a table of the chunk's entities alone.
    mutating func append(
        keys: [ArrayColumns.Parsed], times: ArrayColumns.Parsed, created: ArrayColumns.Parsed?, features: [ArrayColumns.Parsed],
        lookup: EntityLookup, keyTypes: [ValueType], window: ClosedRange<Int64>?
    ) {
        // Each row's entity in the chunk (-1: another entity, or no event time, or a time outside the window).
        let count = times.bits.count
        var entities = [Int32](repeating: -1, count: count)
        var kept = 0
        var parts: [EntityKey.Part] = []
        for row in 0..<count where !times.nulls[row] {
            if let window, !window.contains(times.bits[row]) { continue }
            let entity: Int32?
            if let integers = lookup.byInteger {
                entity = integers[keys[0].bits[row]]
            } else if let strings = lookup.byString {
                entity = keys[0].texts[row].flatMap { strings[$0] }
            } else {
                parts.removeAll(keepingCapacity: true)
                for (column, type) in zip(keys, keyTypes) {
                    parts.append(type.isInteger ? .int(column.bits[row]) : .string(column.texts[row] ?? ""))
                }
                entity = lookup.byKey[EntityKey(parts)]
            }
            if let entity {
                entities[row] = entity
                kept += 1
            }
        }
        let createdTimes = created.map { column in zip(column.bits, column.nulls).map { $1 ? CandidateRows.noCreated : $0 } }
            ?? [Int64](repeating: CandidateRows.noCreated, count: count)
        if kept == count {
            entity.append(contentsOf: entities)
            self.times.append(contentsOf: times.bits)
            self.created.append(contentsOf: createdTimes)
            for (position, column) in features.enumerated() { columns[position].append(parsed: column) }
            return
        }
        let rowsKept = entities.indices.filter { entities[$0] >= 0 }
        for row in rowsKept {
            entity.append(entities[row])
            self.times.append(times.bits[row])
            self.created.append(createdTimes[row])
        }
        for (position, column) in features.enumerated() { columns[position].append(parsed: column, rows: rowsKept) }
    }
}

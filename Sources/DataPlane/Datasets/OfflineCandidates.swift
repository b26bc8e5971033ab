import Foundation
import Logging
import PostgresNIO
import Shared

/// Reads, from a feature view version's offline table, the rows a chunk of
/// entity rows can match: those of the chunk's entities with an event time in
/// `[earliest - ttl, latest]`. Rows of other entities are dropped as they
/// arrive, so memory holds only candidates.
///
/// On PostgreSQL 14 and later the table is read in ranges of pages (a TID
/// range scan), each range's columns aggregated into arrays by the server
/// and parsed here from their binary form: one result row per range instead
/// of one per table row, which is where a row-by-row read spends its time.
/// The ranges are read in one REPEATABLE READ transaction, so they see one
/// snapshot of the table. Older servers are read row by row.
struct OfflineCandidates {
    let table: OfflineTable
    let view: ResolvedRequest.ViewRead
    /// Pages per range of a bulk read (1,000: about 100,000 rows of a narrow
    /// table); nil reads row by row.
    var pagesPerRange: Int? = 1_000
    let logger: Logger

    /// Whether the table exists.
    func exists(on connection: PostgresConnection) async throws -> Bool {
        var query = PostgresQuery(unsafeSQL: "SELECT to_regclass($1) IS NOT NULL")
        query.binds.append(table.qualifiedName)
        for try await (found) in try await connection.query(query, logger: logger).decode(Bool.self) { return found }
        return false
    }

    /// The candidate rows of `entities` (each key's index in the chunk) between `from` (nil: the beginning) and `to` (microseconds, inclusive).
    func read(entities: [EntityKey: Int32], from: Int64?, to: Int64, on connection: PostgresConnection) async throws -> CandidateRows {
        var version = 0
        for try await (number) in try await connection.query("SELECT current_setting('server_version_num')::int", logger: logger).decode(Int.self) {
            version = number
        }
        if version >= 140_000, let pagesPerRange {
            return try await readInRanges(entities: entities, from: from, to: to, pagesPerRange: pagesPerRange, on: connection)
        }
        return try await readRows(entities: entities, from: from, to: to, on: connection)
    }

    /// The bounds bound as parameters, a millisecond wider than asked: binding
    /// a time may round it; the join itself compares exactly.
    func timeFilter(from: Int64?, to: Int64, firstParameter: Int) -> (sql: String, binds: [Date]) {
        var binds = [Date(timeIntervalSince1970: Double(to + 1_000) / 1_000_000)]
        var sql = "event_timestamp <= $\(firstParameter)"
        if let from {
            binds.append(Date(timeIntervalSince1970: Double(from - 1_000) / 1_000_000))
            sql += " AND event_timestamp >= $\(firstParameter + 1)"
        }
        return (sql, binds)
    }

    /// Reads the table in ranges of pages, each as one row of arrays.
    func readInRanges(entities: [EntityKey: Int32], from: Int64?, to: Int64, pagesPerRange: Int, on connection: PostgresConnection) async throws -> CandidateRows {
        let columns = view.keys.map { SQLIdentifier.quote($0.name) } + ["event_timestamp", "created_timestamp"] + view.reads.map { SQLIdentifier.quote($0.feature) }
        let filter = timeFilter(from: from, to: to, firstParameter: 3)
        let statement = """
            SELECT \(columns.map { "array_agg(\($0))" }.joined(separator: ", ")) FROM \(table.qualifiedName)
            WHERE ctid >= format('(%s,0)', $1::bigint)::tid AND ctid < format('(%s,0)', $2::bigint)::tid AND \(filter.sql)
            """
        var rows = CandidateRows(types: view.reads.map(\.type))
        try await connection.inTransaction(logger: logger, begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { connection in
            var pages: Int64 = 0
            var size = PostgresQuery(unsafeSQL: "SELECT pg_relation_size($1::regclass) / current_setting('block_size')::bigint")
            size.binds.append(table.qualifiedName)
            for try await (count) in try await connection.query(size, logger: logger).decode(Int64.self) { pages = count }
            var first: Int64 = 0
            while first < pages {
                var query = PostgresQuery(unsafeSQL: statement)
                query.binds.append(first)
                query.binds.append(first + Int64(pagesPerRange))
                for bind in filter.binds { query.binds.append(bind) }
                first += Int64(pagesPerRange)
                for try await row in try await connection.query(query, logger: logger) {
                    try ArrayColumns(row: row, keys: view.keys, reads: view.reads).append(to: &rows, entities: entities)
                }
            }
        }
        return rows
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
            rows.created.append(try cells[keyCount + 1].decode(Date?.self).map(MaterializationPlan.micros) ?? CandidateRows.noCreated)
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

/// One result row of a bulk read: each column an array in PostgreSQL's
/// binary array format (a header, then each element's length, -1 for null,
/// and its bytes), read in place.
struct ArrayColumns {
    let keys: [ByteBuffer]
    let times: ByteBuffer
    let created: ByteBuffer
    let features: [ByteBuffer]
    let keyTypes: [ValueType]
    let featureTypes: [ValueType]
    let isEmpty: Bool

    init(row: PostgresRow, keys keyColumns: [Column], reads: [(feature: String, type: ValueType, column: Int)]) throws {
        var cells: [ByteBuffer?] = []
        for cell in row { cells.append(cell.bytes) }
        // No row in the range: every aggregate is null.
        isEmpty = cells.contains { $0 == nil }
        let buffers = cells.map { $0 ?? ByteBuffer() }
        keys = Array(buffers.prefix(keyColumns.count))
        times = buffers[keyColumns.count]
        created = buffers[keyColumns.count + 1]
        features = Array(buffers.dropFirst(keyColumns.count + 2))
        keyTypes = keyColumns.map(\.type)
        featureTypes = reads.map(\.type)
    }

    /// PostgreSQL's epoch (2000-01-01) in microseconds since 1970.
    static let postgresEpoch: Int64 = 946_684_800_000_000

    /// Each element's bytes (nil for null) of a one-dimensional array.
    static func elements(_ buffer: ByteBuffer) throws -> [ByteBuffer?] {
        var buffer = buffer
        guard let dimensions = buffer.readInteger(as: Int32.self), buffer.readInteger(as: Int32.self) != nil, buffer.readInteger(as: UInt32.self) != nil else {
            throw JobExecutionError("offline store: an unreadable array", retryable: false)
        }
        guard dimensions == 1, let count = buffer.readInteger(as: Int32.self), buffer.readInteger(as: Int32.self) != nil else { return [] }
        var elements: [ByteBuffer?] = []
        elements.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let length = buffer.readInteger(as: Int32.self) else { throw JobExecutionError("offline store: a cut array", retryable: false) }
            if length < 0 {
                elements.append(nil)
            } else {
                guard let bytes = buffer.readSlice(length: Int(length)) else { throw JobExecutionError("offline store: a cut array", retryable: false) }
                elements.append(bytes)
            }
        }
        return elements
    }

    /// The value of one element of a column of `type`.
    static func value(_ element: ByteBuffer?, type: ValueType) -> FeatureValue {
        guard var bytes = element else { return .null }
        switch type {
        case .int64: return bytes.readInteger(as: Int64.self).map(FeatureValue.int) ?? .null
        case .int32: return bytes.readInteger(as: Int32.self).map { .int(Int64($0)) } ?? .null
        case .float64: return bytes.readInteger(as: UInt64.self).map { .double(Double(bitPattern: $0)) } ?? .null
        case .float32: return bytes.readInteger(as: UInt32.self).map { .double(Double(Float(bitPattern: $0))) } ?? .null
        case .bool: return bytes.readInteger(as: UInt8.self).map { .bool($0 != 0) } ?? .null
        case .timestamp: return bytes.readInteger(as: Int64.self).map { .timestamp($0 + postgresEpoch) } ?? .null
        default: return .string(bytes.readString(length: bytes.readableBytes) ?? "")
        }
    }

    /// Appends the rows of `entities` to `rows`.
    func append(to rows: inout CandidateRows, entities: [EntityKey: Int32]) throws {
        guard !isEmpty else { return }
        let keyColumns = try keys.map(Self.elements)
        let timeColumn = try Self.elements(times)
        let createdColumn = try Self.elements(created)
        let featureColumns = try features.map(Self.elements)
        var parts: [EntityKey.Part] = []
        for row in timeColumn.indices {
            let key: EntityKey
            if keyColumns.count == 1 {
                key = Self.key(keyColumns[0][row], type: keyTypes[0])
            } else {
                parts.removeAll(keepingCapacity: true)
                for (column, type) in zip(keyColumns, keyTypes) {
                    switch Self.key(column[row], type: type) {
                    case .int(let value): parts.append(.int(value))
                    case .string(let value): parts.append(.string(value))
                    case .composite: break
                    }
                }
                key = EntityKey(parts)
            }
            guard let entity = entities[key], case .timestamp(let time) = Self.value(timeColumn[row], type: .timestamp) else { continue }
            rows.entity.append(entity)
            rows.times.append(time)
            if case .timestamp(let created) = Self.value(createdColumn[row], type: .timestamp) {
                rows.created.append(created)
            } else {
                rows.created.append(CandidateRows.noCreated)
            }
            for (position, column) in featureColumns.enumerated() {
                rows.columns[position].append(Self.value(column[row], type: featureTypes[position]))
            }
        }
    }

    /// A join key element.
    static func key(_ element: ByteBuffer?, type: ValueType) -> EntityKey {
        switch value(element, type: type) {
        case .int(let number): return .int(number)
        case .string(let text): return .string(text)
        default: return .string("")
        }
    }
}

import Foundation
import Logging
import PostgresNIO
import Shared

/// One feature-view version's table in the offline store: a table in the
/// customer's PostgreSQL, in the schema the agent's configuration names.
///
/// Columns: the join keys, `event_timestamp`, `created_timestamp` (null when
/// the source has none), then the features; a BRIN index on `event_timestamp`. A job replaces its interval in
/// one transaction — delete what the interval held, COPY the new rows in —
/// so a rerun, or a retry after a crash half-way, leaves exactly one copy of
/// each row.
///
/// Its name is `<workspace>__<view>__v<version>` (`OfflineRelationName`), so
/// workspaces sharing one offline schema never share a table. A table from
/// before workspaces were in the names (`<view>__v<version>`) is adopted —
/// renamed, with its segments, index and fences — by the first write of its
/// workspace, and read under its old name until then.
///
/// A materialized view's table has a second table beside it,
/// `<name>__segments`: the same rows again, in runs of at most
/// `segmentRows` kept column by column (`OfflineSegment`), each with the
/// lowest and highest event time it holds. Training datasets read the runs
/// instead of the rows. Both are written in the same transaction, and a
/// replace cuts the runs it overlaps, so they always hold the table's rows
/// exactly. The segments table is made only together with a new table: a
/// table made without it (by an older release) is read row by row.
struct OfflineTable: Sendable {
    let schema: String
    let workspace: String
    let view: String
    let version: Int
    let keys: [Column]
    let outputs: [Column]
    /// Whether rows sit at window boundaries (aggregation views).
    let windowed: Bool
    /// Whether a new table gets a segments table (materialized views; views fed by pushes do not).
    var segmented = false
    /// Rows per segment (and per COPY) as a job writes them.
    var segmentRows = 65_536

    /// The table of a materialization's view version.
    init(schema: String, plan: MaterializationPlan) {
        self.init(
            schema: schema, workspace: plan.workspace, view: plan.view, version: plan.version, keys: plan.keys, outputs: plan.outputs,
            windowed: !plan.aggregations.isEmpty)
        segmented = true
    }

    /// The table of `workspace`'s `view` at `version`.
    init(schema: String, workspace: String, view: String, version: Int, keys: [Column], outputs: [Column], windowed: Bool) {
        self.schema = schema
        self.workspace = workspace
        self.view = view
        self.version = version
        self.keys = keys
        self.outputs = outputs
        self.windowed = windowed
        name = OfflineRelationName.make(workspace: workspace, "\(view)__v\(version)")
    }

    /// The table's name: `<workspace>__<view>__v<version>` (see `OfflineRelationName`);
    /// the old name while a table from before is read and not yet adopted.
    private(set) var name: String

    /// The name tables had before the workspace was part of it.
    var legacyName: String { "\(view)__v\(version)" }

    /// This table as it can be read now: under its name, or under its old
    /// name when only a table from before workspaces were in the names exists
    /// (until the first write adopts it).
    func resolvedForReading(on connection: PostgresConnection, logger: Logger) async throws -> OfflineTable {
        if try await exists(on: connection, logger: logger) { return self }
        var legacy = self
        legacy.name = legacyName
        return try await legacy.exists(on: connection, logger: logger) ? legacy : self
    }

    /// The schema-qualified, quoted name.
    var qualifiedName: String { SQLIdentifier.quote(schema) + "." + SQLIdentifier.quote(name) }

    /// The segments table's name, `<view>__v<version>__segments`.
    var segmentsName: String { name + "__segments" }

    /// The segments table's schema-qualified, quoted name.
    var qualifiedSegmentsName: String { SQLIdentifier.quote(schema) + "." + SQLIdentifier.quote(segmentsName) }

    /// Whether the table exists.
    func exists(on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        try await Self.relationExists(qualifiedName, on: connection, logger: logger)
    }

    /// Whether the table has a segments table.
    func hasSegments(on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        guard OfflineRelationName.isValid(segmentsName) else { return false }
        return try await Self.relationExists(qualifiedSegmentsName, on: connection, logger: logger)
    }

    /// Whether the relation `qualifiedName` (schema-qualified, quoted) exists.
    static func relationExists(_ qualifiedName: String, on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        var query = PostgresQuery(unsafeSQL: "SELECT to_regclass($1) IS NOT NULL")
        query.binds.append(qualifiedName)
        for try await (found) in try await connection.query(query, logger: logger).decode(Bool.self) { return found }
        return false
    }

    /// The columns, in order, with their SQL types.
    var columns: [(name: String, type: ValueType)] {
        keys.map { ($0.name, $0.type) } + [("event_timestamp", .timestamp), ("created_timestamp", .timestamp)]
            + outputs.map { ($0.name, $0.type) }
    }

    /// Whether the stores can hold values of `type`.
    static func supports(_ type: ValueType) -> Bool {
        switch type {
        case .int64, .int32, .float64, .float32, .bool, .string, .bytes, .timestamp: return true
        default: return false
        }
    }

    /// The PostgreSQL type of a column of `type`.
    static func sqlType(_ type: ValueType) -> String {
        switch type {
        case .int64: return "bigint"
        case .int32: return "integer"
        case .float64: return "double precision"
        case .float32: return "real"
        case .bool: return "boolean"
        case .timestamp: return "timestamptz"
        default: return "text"
        }
    }

    /// Creates the schema and table if missing. Serialised by an advisory
    /// lock, so jobs of one view starting together do not race on the DDL.
    func create(on connection: PostgresConnection, logger: Logger) async throws {
        guard Identifier.isValid(schema), OfflineRelationName.isValid(name) else {
            throw JobExecutionError(
                "offline store: '\(schema).\(name)' is not a valid table name (at most \(Identifier.maximumLength) characters)", retryable: false)
        }
        // Feature columns may be null; keys and event times never are.
        var definitions: [String] = []
        for (index, column) in columns.enumerated() {
            let nullable = index >= keys.count + 1
            definitions.append(SQLIdentifier.quote(column.name) + " " + Self.sqlType(column.type) + (nullable ? "" : " NOT NULL"))
        }
        try await connection.inTransaction(logger: logger) { connection in
            try await connection.execute("SELECT pg_advisory_xact_lock(hashtext(\(qualifiedName)))", logger: logger)
            try await connection.execute(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(SQLIdentifier.quote(schema))"), logger: logger)
            // Per table and interval, the highest lease term that wrote it (see `replaceInterval`).
            try await connection.execute(PostgresQuery(unsafeSQL: """
                CREATE TABLE IF NOT EXISTS \(qualifiedFencesName) (relation text NOT NULL, interval_start timestamptz NOT NULL,
                interval_end timestamptz NOT NULL, lease_term bigint NOT NULL, job bigint, written_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (relation, interval_start, interval_end))
                """), logger: logger)
            try await adoptLegacyTable(on: connection, logger: logger)
            let existed = try await exists(on: connection, logger: logger)
            try await connection.execute(
                PostgresQuery(unsafeSQL: "CREATE TABLE IF NOT EXISTS \(qualifiedName) (\(definitions.joined(separator: ", ")))"), logger: logger)
            if segmented, !existed, OfflineRelationName.isValid(segmentsName) {
                // Segments left from a table dropped by hand describe rows that are gone.
                try await connection.execute(PostgresQuery(unsafeSQL: "DROP TABLE IF EXISTS \(qualifiedSegmentsName)"), logger: logger)
                // Kept uncompressed: a segment is read whole, and compressing it would cost the server what it saves.
                try await connection.execute(PostgresQuery(unsafeSQL: """
                    CREATE TABLE \(qualifiedSegmentsName) (id bigserial PRIMARY KEY, first_event timestamptz NOT NULL,
                    last_event timestamptz NOT NULL, row_count integer NOT NULL, data bytea NOT NULL)
                    """), logger: logger)
                try await connection.execute(
                    PostgresQuery(unsafeSQL: "ALTER TABLE \(qualifiedSegmentsName) ALTER COLUMN data SET STORAGE EXTERNAL"), logger: logger)
            }
            // A BRIN index on event time: rows arrive roughly in time order, so it stays
            // small and costs little to keep up (a B-tree on keys and time made loading
            // three to four times slower); it serves the interval replace and time-range reads.
            try await connection.execute(
                PostgresQuery(unsafeSQL: "CREATE INDEX IF NOT EXISTS \(SQLIdentifier.quote(name + "_time")) ON \(qualifiedName) USING brin (event_timestamp)"),
                logger: logger)
        }
    }

    /// Renames the table from before workspaces were in the names, if there
    /// is one and no table of the new name: with its segments table, its
    /// index and its fences (the caller's transaction). Serialised on the old
    /// name, so two agents cannot both take it.
    func adoptLegacyTable(on connection: PostgresConnection, logger: Logger) async throws {
        guard legacyName != name, OfflineRelationName.isValid(legacyName) else { return }
        let quotedSchema = SQLIdentifier.quote(schema)
        let legacy = quotedSchema + "." + SQLIdentifier.quote(legacyName)
        try await connection.execute("SELECT pg_advisory_xact_lock(hashtext(\(legacy)))", logger: logger)
        guard try await !exists(on: connection, logger: logger), try await Self.relationExists(legacy, on: connection, logger: logger) else { return }
        let renames = [
            "ALTER TABLE \(legacy) RENAME TO \(SQLIdentifier.quote(name))",
            "ALTER TABLE IF EXISTS \(quotedSchema).\(SQLIdentifier.quote(legacyName + "__segments")) RENAME TO \(SQLIdentifier.quote(segmentsName))",
            "ALTER INDEX IF EXISTS \(quotedSchema).\(SQLIdentifier.quote(legacyName + "_time")) RENAME TO \(SQLIdentifier.quote(name + "_time"))",
        ]
        for rename in renames { try await connection.execute(PostgresQuery(unsafeSQL: rename), logger: logger) }
        var fences = PostgresQuery(unsafeSQL: "UPDATE \(qualifiedFencesName) SET relation = $1 WHERE relation = $2")
        fences.binds.append(name)
        fences.binds.append(legacyName)
        try await connection.execute(fences, logger: logger)
        logger.notice("adopted an offline table from before workspaces were in table names", metadata: [
            "larder.table": .string("\(schema).\(legacyName)"), "larder.renamed_to": .string(name),
        ])
    }

    /// Replaces the rows of the job's interval with those `produce` writes,
    /// in one transaction. Plain views own `[start, end)`; aggregation rows
    /// sit at window boundaries and own `(start, end]`. Segments wholly inside
    /// the interval go; those reaching past it are cut to the rows outside.
    func replaceInterval(
        from startMicros: Int64, to endMicros: Int64, fence: Fence? = nil, on connection: PostgresConnection, logger: Logger,
        produce: (OfflineIntervalWriter) async throws -> Void
    ) async throws {
        let start = Date(timeIntervalSince1970: Double(startMicros) / 1_000_000)
        let end = Date(timeIntervalSince1970: Double(endMicros) / 1_000_000)
        let range = windowed ? "event_timestamp > $1 AND event_timestamp <= $2" : "event_timestamp >= $1 AND event_timestamp < $2"
        try await connection.inTransaction(logger: logger) { connection in
            if let fence { try await claim(fence, from: start, to: end, on: connection, logger: logger) }
            // While the lease is held, the transaction is kept from looking idle: a job that computes for
            // long between writes (a long aggregation pass) is not ended by the idle timeout meant for a
            // stalled agent. A stalled agent stalls this too, and the server ends its transaction.
            let keepAlive = fence.map { fence in
                Task {
                    while !Task.isCancelled {
                        try await Task.sleep(for: fence.idleTimeout / 4)
                        guard fence.leaseHeld(), !Task.isCancelled else { return }
                        try connection.requireOpen()
                        try await connection.execute("SELECT 1", logger: logger)
                    }
                }
            }
            defer { keepAlive?.cancel() }
            let segments = try await hasSegments(on: connection, logger: logger)
            var delete = PostgresQuery(unsafeSQL: "DELETE FROM \(qualifiedName) WHERE \(range)")
            delete.binds.append(start)
            delete.binds.append(end)
            try await connection.execute(delete, logger: logger)
            if segments { try await cutSegments(from: startMicros, to: endMicros, on: connection, logger: logger) }
            // COPY names the table unqualified: the schema comes from the search path, for this transaction only.
            try await connection.execute(PostgresQuery(unsafeSQL: "SET LOCAL search_path TO \(SQLIdentifier.quote(schema))"), logger: logger)
            let writer = OfflineIntervalWriter(table: self, segments: segments, connection: connection, logger: logger)
            do {
                try await produce(writer)
                try await writer.finish()
            } catch {
                await writer.settle()
                throw error
            }
        }
    }

    /// The lease a write is made under: its term, its job, and how long the
    /// database may leave its transaction idle before ending it.
    struct Fence: Sendable {
        /// The claim's term (`ClaimedJob.leaseTerm`).
        var term: Int64
        /// The job, recorded with the term.
        var job: Int64
        /// The longest the write's transaction may sit idle (its agent paused or cut off) before
        /// PostgreSQL ends it, freeing the interval for the agent that took the job over.
        var idleTimeout: Duration
        /// Whether the job's lease is still held: while it is, the transaction is kept from
        /// sitting idle (a statement every quarter of `idleTimeout`), however long the job computes.
        var leaseHeld: @Sendable () -> Bool = { true }
    }

    /// The fences table, beside the views' tables.
    var qualifiedFencesName: String { SQLIdentifier.quote(schema) + ".larder_fences" }

    /// Takes the interval for `fence`'s term, in the writing transaction: the
    /// row stays locked until it commits, so writers of one interval take
    /// turns, and a writer whose term is lower than the last one's is refused
    /// (its transaction then rolls back, writing nothing).
    func claim(_ fence: Fence, from start: Date, to end: Date, on connection: PostgresConnection, logger: Logger) async throws {
        let milliseconds = max(1_000, fence.idleTimeout.components.seconds * 1_000)
        try await connection.execute(PostgresQuery(unsafeSQL: "SET LOCAL idle_in_transaction_session_timeout = \(milliseconds)"), logger: logger)
        var upsert = PostgresQuery(unsafeSQL: """
            INSERT INTO \(qualifiedFencesName) AS f (relation, interval_start, interval_end, lease_term, job) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (relation, interval_start, interval_end)
            DO UPDATE SET lease_term = EXCLUDED.lease_term, job = EXCLUDED.job, written_at = now() WHERE f.lease_term <= EXCLUDED.lease_term
            RETURNING lease_term
            """)
        upsert.binds.append(name)
        upsert.binds.append(start)
        upsert.binds.append(end)
        upsert.binds.append(fence.term)
        upsert.binds.append(fence.job)
        var taken = false
        for try await _ in try await connection.query(upsert, logger: logger).decode(Int64.self) { taken = true }
        guard taken else {
            throw JobExecutionError(
                "offline store: a writer with a newer lease has written this interval of \(name); this attempt's lease (term \(fence.term)) is stale "
                    + "and it writes nothing", retryable: false)
        }
    }

    /// Whether an event time lies in the interval a job replaces.
    func owns(_ time: Int64, from start: Int64, to end: Int64) -> Bool {
        windowed ? time > start && time <= end : time >= start && time < end
    }

    /// Removes the interval's rows from the segments: a segment wholly inside goes, one reaching past
    /// it is replaced by a segment of its rows outside.
    func cutSegments(from start: Int64, to end: Int64, on connection: PostgresConnection, logger: Logger) async throws {
        var overlapping = PostgresQuery(unsafeSQL: """
            SELECT id, data FROM \(qualifiedSegmentsName) WHERE last_event >= $1 AND first_event <= $2 ORDER BY id
            """)
        // A millisecond wider than the interval: binding a time may round it. Rows are then compared exactly.
        overlapping.binds.append(Date(timeIntervalSince1970: Double(start - 1_000) / 1_000_000))
        overlapping.binds.append(Date(timeIntervalSince1970: Double(end + 1_000) / 1_000_000))
        var gone: [Int64] = []
        var kept: [OfflineSegment] = []
        let event = keys.count
        for try await (id, data) in try await connection.query(overlapping, logger: logger).decode((Int64, ByteBuffer).self) {
            let segment = try OfflineSegment(decoding: data)
            guard case .fixed(let times, _) = segment.columns[event] else { continue }
            let outside = times.indices.filter { !owns(times[$0], from: start, to: end) }
            if outside.count == segment.count { continue }
            gone.append(id)
            if !outside.isEmpty { kept.append(segment.rows(outside)) }
        }
        guard !gone.isEmpty else { return }
        var remove = PostgresQuery(unsafeSQL: "DELETE FROM \(qualifiedSegmentsName) WHERE id = ANY($1)")
        remove.binds.append(gone)
        try await connection.execute(remove, logger: logger)
        for segment in kept { try await insert(segment, on: connection, logger: logger) }
    }

    /// Adds `segment` to the segments table.
    func insert(_ segment: OfflineSegment, on connection: PostgresConnection, logger: Logger) async throws {
        guard segment.count > 0, case .fixed(let times, _) = segment.columns[keys.count] else { return }
        var insert = PostgresQuery(unsafeSQL: """
            INSERT INTO \(qualifiedSegmentsName) (first_event, last_event, row_count, data) VALUES ($1, $2, $3, $4)
            """)
        insert.binds.append(Date(timeIntervalSince1970: Double(times.min()!) / 1_000_000))
        insert.binds.append(Date(timeIntervalSince1970: Double(times.max()!) / 1_000_000))
        insert.binds.append(Int32(segment.count))
        insert.binds.append(segment.encoded())
        try await connection.execute(insert, logger: logger)
    }
}

/// Writes a job's rows into its offline table, inside the transaction that
/// replaces the interval: the batches are gathered into runs of
/// `segmentRows` rows, and each run is sent — encoded, one COPY and, for a
/// table with segments, one segment — on a task of its own while the job
/// produces the next run (one run in flight at most: the connection does
/// one thing at a time, and memory holds two runs).
final class OfflineIntervalWriter {
    let table: OfflineTable
    let segments: Bool
    let connection: PostgresConnection
    let logger: Logger
    private var batches: [OutputBatch] = []
    private var pending = 0
    private var sending: Task<Void, Error>?

    init(table: OfflineTable, segments: Bool, connection: PostgresConnection, logger: Logger) {
        self.table = table
        self.segments = segments
        self.connection = connection
        self.logger = logger
    }

    /// Adds a batch of rows; hands the run on once it holds `segmentRows` rows.
    func write(_ batch: OutputBatch) async throws {
        guard batch.count > 0 else { return }
        batches.append(batch)
        pending += batch.count
        if pending >= table.segmentRows { try await handOn() }
    }

    /// Sends the run gathered (after the one in flight), and waits until every run is written.
    func finish() async throws {
        try await handOn()
        try await sending?.value
        sending = nil
    }

    /// Waits for the run in flight, whatever its outcome: before a failed transaction ends.
    func settle() async {
        _ = try? await sending?.value
        sending = nil
    }

    private func handOn() async throws {
        try await sending?.value
        sending = nil
        guard pending > 0 else { return }
        let run = batches
        batches.removeAll(keepingCapacity: true)
        pending = 0
        let table = table, segments = segments, connection = connection, logger = logger
        try connection.requireOpen()
        sending = Task { try await table.write(run, segments: segments, on: connection, logger: logger) }
    }
}

extension OfflineTable {
    /// Writes a run of rows: one COPY and, with `segments`, one segment.
    func write(_ run: [OutputBatch], segments: Bool, on connection: PostgresConnection, logger: Logger) async throws {
        var encoder = CopyTextEncoder()
        for batch in run { batch.encode(into: &encoder) }
        let rows = encoder.buffer
        try await connection.copyFrom(table: name, columns: columns.map(\.name), logger: logger) { writer in
            try await writer.write(rows)
        }
        guard segments else { return }
        var builder = OfflineSegmentBuilder(columns: columns)
        for batch in run { builder.append(batch, keyCount: keys.count) }
        try connection.requireOpen()
        try await insert(builder.take(), on: connection, logger: logger)
    }
}

/// Writes rows in PostgreSQL's COPY text format: tab-separated, `\N` for null,
/// backslash escapes, timestamps in UTC with microseconds.
///
/// Bytes go into a plain array (one `ByteBuffer` per batch); the text of the
/// last timestamp is kept, since rows of a batch mostly share a few times.
struct CopyTextEncoder {
    private(set) var bytes: [UInt8] = []
    private var lastMicros = Int64.min
    private var lastTimestamp: [UInt8] = []

    /// Forgets the bytes written, keeping the capacity.
    mutating func reset() { bytes.removeAll(keepingCapacity: true) }

    /// The bytes written, as a buffer for the COPY stream.
    var buffer: ByteBuffer { ByteBuffer(bytes: bytes) }

    @inline(__always) mutating func null() { bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "N")) }
    @inline(__always) mutating func separator() { bytes.append(UInt8(ascii: "\t")) }
    @inline(__always) mutating func endRow() { bytes.append(UInt8(ascii: "\n")) }

    mutating func int(_ value: Int64) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        if magnitude < 10 {
            bytes.append(UInt8(ascii: "0") + UInt8(magnitude))
            return
        }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)   // 24 bytes: room for 20 digits
        var count = 0
        withUnsafeMutableBytes(of: &digits) { raw in
            while magnitude > 0 {
                raw[23 - count] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                count += 1
            }
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[(24 - count)...]))
        }
    }

    mutating func double(_ value: Double) {
        if value.isNaN {
            bytes.append(contentsOf: "NaN".utf8)
        } else if value.isInfinite {
            bytes.append(contentsOf: (value < 0 ? "-Infinity" : "Infinity").utf8)
        } else if let integer = Int64(exactly: value), integer.magnitude < 1 << 53 {
            int(integer)
        } else {
            bytes.append(contentsOf: value.description.utf8)
        }
    }

    @inline(__always) mutating func bool(_ value: Bool) { bytes.append(UInt8(ascii: value ? "t" : "f")) }

    mutating func string(_ value: String) {
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "\t"): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "t"))
            case UInt8(ascii: "\n"): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "n"))
            case UInt8(ascii: "\r"): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "r"))
            default: bytes.append(byte)
            }
        }
    }

    /// Microseconds since the epoch as `YYYY-MM-DD HH:MM:SS.ffffff+00`.
    mutating func timestamp(_ micros: Int64) {
        if micros != lastMicros {
            lastTimestamp = Self.format(micros)
            lastMicros = micros
        }
        bytes.append(contentsOf: lastTimestamp)
    }

    static func format(_ micros: Int64) -> [UInt8] {
        var text: [UInt8] = []
        text.reserveCapacity(29)
        TimestampText.append(micros, style: .postgres, to: &text)
        return text
    }

    /// Appends the value of `column` at `row`.
    mutating func value(_ column: ColumnValues, _ row: Int) {
        switch column {
        case .int64(let values): if let value = values[row] { int(value) } else { null() }
        case .float64(let values): if let value = values[row] { double(value) } else { null() }
        case .bool(let values): if let value = values[row] { bool(value) } else { null() }
        case .string(let values): if let value = values[row] { string(value) } else { null() }
        case .timestamp(let values): if let value = values[row] { timestamp(value) } else { null() }
        }
    }
}

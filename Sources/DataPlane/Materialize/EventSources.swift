import Foundation
import Logging
import PostgresNIO
import Shared

/// Reads the rows of a source whose event time falls in an interval, in
/// batches of typed columns, in bounded memory.
protocol EventSource {
    /// The next batch, or nil when the source is exhausted.
    mutating func next() async throws -> ColumnBatch?
}

/// A `FileSource`: its CSV files (paths or `*`/`?` patterns, inside the
/// connection's folder), keeping the rows in `[from, to)`.
struct CSVEventSource: EventSource {
    let files: [URL]
    let columns: [(name: String, type: ValueType)]
    let timestampColumn: Int
    let from: Int64
    let to: Int64
    private var current: ParallelCSVReader?
    private var nextFile = 0

    init(files: [URL], columns: [(name: String, type: ValueType)], timestampColumn: Int, from: Int64, to: Int64) {
        self.files = files
        self.columns = columns
        self.timestampColumn = timestampColumn
        self.from = from
        self.to = to
    }

    mutating func next() async throws -> ColumnBatch? {
        do { return try nextBatch() } catch let failure as CSVReader.Failure {
            // A malformed file stays malformed: the job fails for good, naming the file, line and column.
            throw JobExecutionError(failure.withoutValue, retryable: false, localDetail: failure.description)
        }
    }

    private mutating func nextBatch() throws -> ColumnBatch? {
        while true {
            if current == nil {
                guard nextFile < files.count else { return nil }
                current = try ParallelCSVReader(path: files[nextFile].path, schema: columns)
                nextFile += 1
            }
            guard let batch = try current!.next() else {
                current = nil
                continue
            }
            // Keep the rows of the interval.
            guard case .timestamp(let times) = batch.columns[timestampColumn] else { return batch }
            var keep: [Int] = []
            keep.reserveCapacity(times.count)
            for (row, time) in times.enumerated() where time.map({ $0 >= from && $0 < to }) ?? false { keep.append(row) }
            if keep.count == batch.count { return batch }
            if keep.isEmpty { continue }
            return ColumnBatch(names: batch.names, columns: batch.columns.map { $0.gathering(keep) })
        }
    }
}

/// A `PostgresSource`: one SELECT in the customer's database, in a
/// read-only transaction with a statement timeout, the interval bound as
/// parameters. Rows stream from the server in batches.
final class PostgresEventSource: EventSource {
    let connection: PostgresConnection
    let columns: [(name: String, type: ValueType)]
    let batchSize: Int
    let logger: Logger
    let timeout: Duration
    private var iterator: PostgresRowSequence.AsyncIterator?
    private var finished = false

    /// The statement reading `columns` of `source` (through the view's
    /// `transformation`, if any) for `$1 <= time < $2`. Every column is cast
    /// to the declared type, so the rows decode the same whatever the
    /// table's own types are.
    static func statement(source: SourceDefinition, transformation: String?, columns: [(name: String, type: ValueType)]) throws -> String {
        guard case .postgres(_, let relation) = source.connector else { throw JobExecutionError("not a PostgreSQL source", retryable: false) }
        let from: String
        switch relation {
        case .table(let name): from = try SQLIdentifier.qualified(name)
        case .query(let query): from = "(\(query)) AS larder_source"
        }
        var input = from
        if let transformation {
            guard transformation.contains("{{ source }}") || transformation.contains("{{source}}") else {
                throw JobExecutionError("the view's sql must read its source as {{ source }}", retryable: false)
            }
            let expanded = transformation.replacingOccurrences(of: "{{ source }}", with: from).replacingOccurrences(of: "{{source}}", with: from)
            input = "(\(expanded)) AS larder_transformed"
        }
        let select = columns.map { "\(SQLIdentifier.quote($0.name))::\(OfflineTable.sqlType($0.type))" }.joined(separator: ", ")
        let time = SQLIdentifier.quote(source.timestampField)
        return "SELECT \(select) FROM \(input) WHERE \(time) >= $1 AND \(time) < $2"
    }

    /// Starts reading: opens the read-only transaction and sends the query.
    init(
        connection: PostgresConnection, statement: String, columns: [(name: String, type: ValueType)], from: Int64, to: Int64,
        timeout: Duration, batchSize: Int = 16_384, logger: Logger
    ) async throws {
        self.connection = connection
        self.columns = columns
        self.batchSize = batchSize
        self.logger = logger
        self.timeout = timeout
        try await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
        try await connection.execute(
            "SELECT set_config('statement_timeout', \(String(timeout.components.seconds * 1_000 + timeout.components.attoseconds / 1_000_000_000_000_000)), true)", logger: logger)
        var query = PostgresQuery(unsafeSQL: statement)
        query.binds.append(Date(timeIntervalSince1970: Double(from) / 1_000_000))
        query.binds.append(Date(timeIntervalSince1970: Double(to) / 1_000_000))
        do {
            iterator = try await connection.query(query, logger: logger).makeAsyncIterator()
        } catch {
            throw Self.explain(error, timeout: timeout)
        }
    }

    func next() async throws -> ColumnBatch? {
        guard !finished, var iterator else { return nil }
        var values = ColumnBuilders(schema: columns, capacity: batchSize)
        do {
            while values.rows < values.capacity, let row = try await iterator.next() {
                var position = 0
                for cell in row where position < columns.count {
                    try values.append(cell, at: position)
                    position += 1
                }
                guard position == columns.count else {
                    throw JobExecutionError("the source query returned \(position) columns, not \(columns.count)", retryable: false)
                }
                values.rows += 1
            }
        } catch {
            throw Self.explain(error, timeout: timeout)
        }
        self.iterator = iterator
        if values.rows == 0 {
            finished = true
            try await connection.execute("COMMIT", logger: logger)
            return nil
        }
        return ColumnBatch(names: columns.map(\.name), columns: values.values)
    }

    /// A failure of the source's query, in words: a timeout, or the server's message.
    static func explain(_ error: any Error, timeout: Duration) -> any Error {
        guard let error = error as? PSQLError else { return error }
        let state = error.serverInfo?[.sqlState]
        if state == "57014" {
            return JobExecutionError("the source query ran longer than the statement timeout (\(timeout.components.seconds) s) and was cancelled", retryable: true)
        }
        return queryFailure(error, what: "the source query")
            ?? JobExecutionError(
                "the source database failed: \(ReportedError.codes(error))", retryable: true, localDetail: String(reflecting: error))
    }
}

extension ColumnValues {
    /// The values at `rows`, in that order.
    func gathering(_ rows: [Int]) -> ColumnValues {
        switch self {
        case .int64(let values): return .int64(rows.map { values[$0] })
        case .float64(let values): return .float64(rows.map { values[$0] })
        case .bool(let values): return .bool(rows.map { values[$0] })
        case .string(let values): return .string(rows.map { values[$0] })
        case .timestamp(let values): return .timestamp(rows.map { values[$0] })
        }
    }
}

extension ColumnBuilders {
    /// Microseconds from 1970-01-01 to 2000-01-01, where PostgreSQL counts timestamps from.
    static let postgresEpochMicros: Int64 = 946_684_800_000_000

    /// Writes the value of a cell of a row from PostgreSQL (cast to the column's type by the query).
    func append(_ cell: PostgresCell, at position: Int) throws {
        let slot = slots[position]
        guard let bytes = cell.bytes else {
            switch kinds[position] {
            case .int64, .int32: integers[slot].set(row: rows, nil)
            case .float64: doubles[slot].set(row: rows, nil)
            case .bool: booleans[slot].set(row: rows, nil)
            case .timestamp: times[slot].set(row: rows, nil)
            case .string: texts[slot].set(row: rows, nil)
            }
            return
        }
        // Rows come in binary: the 8-byte types are read as they are, a
        // timestamp straight as microseconds (no round trip through Date).
        if cell.format == .binary, bytes.readableBytes == 8, let word = bytes.getInteger(at: bytes.readerIndex, as: Int64.self) {
            switch (kinds[position], cell.dataType) {
            case (.int64, .int8):
                integers[slot].set(row: rows, word)
                return
            case (.float64, .float8):
                doubles[slot].set(row: rows, Double(bitPattern: UInt64(bitPattern: word)))
                return
            case (.timestamp, .timestamptz), (.timestamp, .timestamp):
                guard word != .max, word != .min else {
                    throw JobExecutionError("column \(cell.columnName) holds an infinite timestamp, which no feature value can have", retryable: false)
                }
                times[slot].set(row: rows, word &+ Self.postgresEpochMicros)
                return
            default:
                break
            }
        }
        switch kinds[position] {
        case .int64, .int32: integers[slot].set(row: rows, try cell.decode(Int64?.self))
        case .float64: doubles[slot].set(row: rows, try cell.decode(Double?.self))
        case .bool: booleans[slot].set(row: rows, try cell.decode(Bool?.self))
        case .timestamp: times[slot].set(row: rows, try cell.decode(Date?.self).map(MaterializationPlan.micros))
        case .string: texts[slot].set(row: rows, try cell.decode(String?.self))
        }
    }
}

/// Quoting of SQL identifiers (names are validated first; quoting makes any
/// remaining oddity harmless).
enum SQLIdentifier {
    /// `name` as a quoted identifier.
    static func quote(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }

    /// A table name, optionally schema-qualified (`public.trips`), quoted part by part.
    static func qualified(_ name: String) throws -> String {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard (1...2).contains(parts.count), parts.allSatisfy({ !$0.isEmpty && $0.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_") } }) else {
            throw JobExecutionError("'\(name)' is not a table name such as public.trips", retryable: false)
        }
        return parts.map(quote).joined(separator: ".")
    }
}

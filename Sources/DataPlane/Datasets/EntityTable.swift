import Foundation
import Shared

/// Why a training dataset cannot be built.
public struct DatasetError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of problem it is (how the API answers it).
    public enum Kind: Sendable, Equatable {
        /// The entity table or the request is wrong: 400.
        case invalidInput
        /// A feature view version has no offline table: 409.
        case notMaterialized
        /// The agent has no offline store: 503.
        case noOfflineStore
    }

    public var kind: Kind
    /// Where: the request field, or the entity table's row and column.
    public var field: String
    /// What is wrong, for the caller who sent the table (it may quote a value).
    public var detail: String
    /// What is wrong without any of the table's values, for reports that
    /// leave the customer's environment; nil: `detail` with its quoted parts elided.
    public var reportedDetail: String?

    /// Creates an error.
    public init(kind: Kind, field: String, detail: String, reportedDetail: String? = nil) {
        self.kind = kind
        self.field = field
        self.detail = detail
        self.reportedDetail = reportedDetail
    }

    public var description: String { "\(field): \(detail)" }

    /// Field and detail without values of the table: what a dataset job tells the control plane. An
    /// error made without a value-free detail reports its field and kind only (eliding quotes is not
    /// enough: a value holding a quote would break out of them).
    public var reported: String { "\(field): \(reportedDetail ?? "the entity table or request was refused (the agent's log has the detail)")" }
}

/// A chunk of the entity table, in input order: each row's time, its join
/// keys and request fields typed (as an `EntityBatch`), and every input
/// column's text, passed through unchanged.
struct EntityChunk: Sendable {
    /// The number of the chunk's first row in the table (1-based).
    let firstRow: Int
    let count: Int
    /// Each row's timestamp, microseconds since the epoch (UTC).
    let times: [Int64]
    let batch: EntityBatch
    /// The input columns' text (nil: an empty field), in header order.
    let text: [[String?]]
}

/// Reads an entity table — a CSV file with a header row — in chunks of at
/// most `chunkRows` rows: the join keys and the timestamp column are
/// required, request fields of on-demand features are read when present,
/// and every column is passed through.
///
/// Timestamps must carry a UTC offset (`2026-01-02T03:04:05Z`,
/// `…+02:00`) and are normalized to UTC; a timestamp without one is refused,
/// naming the row and column, unless `assumeUTC` says such timestamps are UTC.
struct EntityTableReader {
    let path: String
    /// The name the errors give the table.
    static let label = "entities"
    /// The header's columns, in order.
    let columns: [String]
    let timestampColumn: String
    let assumeUTC: Bool
    let resolved: ResolvedRequest
    private var reader: CSVReader
    private var rowsRead = 0

    init(path: String, timestampColumn: String, assumeUTC: Bool, resolved: ResolvedRequest, chunkRows: Int) throws(DatasetError) {
        self.path = path
        let label = Self.label
        self.timestampColumn = timestampColumn
        self.assumeUTC = assumeUTC
        self.resolved = resolved
        do {
            columns = try CSVReader.columnNames(path: path)
            reader = try CSVReader(path: path, schema: columns.map { ($0, .string) }, batchSize: max(1, chunkRows))
        } catch let failure as CSVReader.Failure {
            throw DatasetError(kind: .invalidInput, field: label, detail: failure.message, reportedDetail: failure.message)
        } catch {
            throw DatasetError(kind: .invalidInput, field: label, detail: "\(error)", reportedDetail: "the entity table cannot be read")
        }
        var required = resolved.joinKeys.map(\.name) + [timestampColumn]
        if Set(columns).count != columns.count {
            throw DatasetError(
                kind: .invalidInput, field: label, detail: "the header names a column twice: \(columns.joined(separator: ", "))",
                reportedDetail: "the header names a column twice")
        }
        // Request fields may come from the table; a missing one is refused now, not at row 1.
        required += resolved.requestFields.map(\.name)
        for name in required where !columns.contains(name) {
            let what = name == timestampColumn ? "the timestamp column" : resolved.joinKeys.contains(where: { $0.name == name }) ? "join key" : "request field"
            throw DatasetError(
                kind: .invalidInput, field: "\(label): column \(name)",
                detail: "the entity table has no \(what) '\(name)' (its columns are \(columns.joined(separator: ", ")))",
                reportedDetail: "the entity table has no \(what) \(name)")
        }
    }

    /// The next chunk, or nil at the end of the table.
    mutating func next() throws(DatasetError) -> EntityChunk? {
        let label = Self.label
        let batch: ColumnBatch
        do {
            guard let read = try reader.next() else { return nil }
            batch = read
        } catch let failure as CSVReader.Failure {
            throw DatasetError(kind: .invalidInput, field: "\(label) line \(failure.line)", detail: failure.message, reportedDetail: failure.message)
        } catch {
            throw DatasetError(kind: .invalidInput, field: label, detail: "\(error)", reportedDetail: "the entity table cannot be read")
        }
        let text = batch.columns.map { column -> [String?] in
            if case .string(let values) = column { return values }
            return []
        }
        let first = rowsRead + 1
        rowsRead += batch.count
        func column(_ name: String) -> [String?] { text[columns.firstIndex(of: name)!] }
        /// `detail` may quote the cell; `reported`, what leaves the agent, never does.
        func fail(_ row: Int, _ name: String, _ detail: String, reported: String) -> DatasetError {
            DatasetError(kind: .invalidInput, field: "\(label) row \(first + row), column \(name)", detail: detail, reportedDetail: reported)
        }
        var times: [Int64] = []
        times.reserveCapacity(batch.count)
        for (row, field) in column(timestampColumn).enumerated() {
            guard let field else { throw fail(row, timestampColumn, "empty; every entity row needs a timestamp", reported: "empty; every entity row needs a timestamp") }
            guard let micros = Self.timestamp(field, assumeUTC: assumeUTC) else {
                if Self.timestamp(field, assumeUTC: true) != nil {
                    throw fail(
                        row, timestampColumn,
                        "'\(field.prefix(40))' has no UTC offset; write it as 2026-01-02T03:04:05Z (or +hh:mm), or say the table's timestamps are UTC (assume_utc)",
                        reported: "the timestamp has no UTC offset (or say the table's timestamps are UTC: assume_utc)")
                }
                throw fail(
                    row, timestampColumn, "'\(field.prefix(40))' is not a timestamp such as 2026-01-02T03:04:05Z",
                    reported: "not a timestamp such as 2026-01-02T03:04:05Z")
            }
            times.append(micros)
        }
        var keys: [String: [EntityKey.Part]] = [:]
        for key in resolved.joinKeys {
            var parts: [EntityKey.Part] = []
            parts.reserveCapacity(batch.count)
            for (row, field) in column(key.name).enumerated() {
                guard let field else { throw fail(row, key.name, "empty; every entity row needs its join keys", reported: "empty; every entity row needs its join keys") }
                if key.type.isInteger {
                    guard let number = Int64(field), key.type == .int64 || Int32(exactly: number) != nil else {
                        throw fail(row, key.name, "'\(field.prefix(40))' is not an \(key.type.rawValue) join key", reported: "not an \(key.type.rawValue) join key")
                    }
                    parts.append(.int(number))
                } else {
                    parts.append(.string(field))
                }
            }
            keys[key.name] = parts
        }
        var requestValues: [[FeatureValue]] = []
        for field in resolved.requestFields {
            var values: [FeatureValue] = []
            values.reserveCapacity(batch.count)
            for (row, text) in column(field.name).enumerated() {
                guard let text else {
                    values.append(.null)
                    continue
                }
                guard let value = Self.value(text, type: field.type, assumeUTC: assumeUTC) else {
                    throw fail(row, field.name, "'\(text.prefix(40))' is not a \(field.type.rawValue)", reported: "not a \(field.type.rawValue)")
                }
                values.append(value)
            }
            requestValues.append(values)
        }
        return EntityChunk(
            firstRow: first, count: batch.count, times: times,
            batch: EntityBatch(count: batch.count, keys: keys, requestValues: requestValues), text: text)
    }

    /// An RFC 3339 timestamp as microseconds since the epoch; without an
    /// offset only when `assumeUTC`.
    static func timestamp(_ text: String, assumeUTC: Bool) -> Int64? {
        // Parsed in place (a field read from the file is a native, contiguous string): no copy per row.
        var text = text
        if let micros = text.withUTF8({ FieldParser.timestamp($0) }) { return micros }
        guard assumeUTC else { return nil }
        var bytes = Array(text.utf8)
        bytes.append(UInt8(ascii: "Z"))
        return bytes.withUnsafeBufferPointer { FieldParser.timestamp($0) }
    }

    /// A request field's text as a value of `type`.
    static func value(_ text: String, type: ValueType, assumeUTC: Bool) -> FeatureValue? {
        switch type {
        case .int64, .int32: return Int64(text).map(FeatureValue.int)
        case .float64, .float32: return Double(text).map(FeatureValue.double)
        case .bool:
            switch text.lowercased() {
            case "true", "t", "1": return .bool(true)
            case "false", "f", "0": return .bool(false)
            default: return nil
            }
        case .timestamp: return timestamp(text, assumeUTC: assumeUTC).map(FeatureValue.timestamp)
        default: return .string(text)
        }
    }
}

extension EntityBatch {
    /// A batch of already typed rows.
    init(count: Int, keys: [String: [EntityKey.Part]], requestValues: [[FeatureValue]]) {
        self.count = count
        self.keys = keys
        self.requestValues = requestValues
    }
}

import Foundation
import Shared

/// The rows of one push, checked against the source's schema: every column
/// typed, each row's event time, created time and entity keys. A bad row
/// rejects the whole push, naming its index and field; nothing is written.
struct PushBatch: Sendable {
    /// Rows.
    let count: Int
    /// Each pushed column's values, by name (absent columns are all null).
    let columns: [String: [FeatureValue]]
    /// Each row's event time, microseconds since the epoch.
    let eventTimes: [Int64]
    /// Each row's created time: the source's created field, or when the push arrived.
    let createdTimes: [Int64]

    /// Checks `rows` against `targets`: at most `limit` rows; `receivedAt`
    /// (microseconds) stands in for a missing created time.
    /// Event times after `latest` (microseconds) are refused: a row dated years
    /// ahead would otherwise stay every view's newest for good.
    init(rows: [[String: JSONScalar]], targets: PushTargets, receivedAt: Int64, limit: Int, latest: Int64) throws(FeatureRequestError) {
        let source = targets.source
        guard !rows.isEmpty else { throw .invalid("rows", "give at least one row") }
        guard rows.count <= limit else {
            throw FeatureRequestError(kind: .tooManyEntities, field: "rows", detail: "\(rows.count) rows; this agent takes at most \(limit) per push")
        }
        let schema = source.schema
        // Join keys every fed view needs: required, never null.
        var required = Set<String>()
        for view in targets.plain { required.formUnion(view.schema.keys.map(\.name)) }
        for view in targets.windowed { required.formUnion(view.schema.keys.map(\.name)) }
        var columns: [String: [FeatureValue]] = [:]
        for name in schema.keys { columns[name] = Array(repeating: .null, count: rows.count) }
        var eventTimes: [Int64] = [], createdTimes: [Int64] = []
        eventTimes.reserveCapacity(rows.count)
        createdTimes.reserveCapacity(rows.count)
        for (index, row) in rows.enumerated() {
            for (name, value) in row {
                let field = "rows[\(index)].\(name)"
                guard let type = schema[name] else {
                    throw .invalid(field, "'\(name)' is not a column of push source \(source.name); its columns are \(schema.keys.sorted().joined(separator: ", "))")
                }
                columns[name]![index] = try EntityBatch.value(value, type: type, field: field)
            }
            guard case .timestamp(let time) = columns[source.timestampField]![index] else {
                throw .invalid("rows[\(index)].\(source.timestampField)", "missing the event time, an RFC 3339 timestamp such as 2026-01-02T03:04:05Z")
            }
            guard time <= latest else {
                throw .invalid("rows[\(index)].\(source.timestampField)", "the event time is more than an hour ahead of the agent's clock")
            }
            eventTimes.append(time)
            if let created = source.createdTimestampField, case .timestamp(let value) = columns[created]![index] {
                createdTimes.append(value)
            } else {
                createdTimes.append(receivedAt)
            }
            for key in required where columns[key]?[index] == .null {
                throw .invalid("rows[\(index)].\(key)", "missing join key \(key) (\(schema[key]?.rawValue ?? "?"))")
            }
        }
        self.count = rows.count
        self.columns = columns
        self.eventTimes = eventTimes
        self.createdTimes = createdTimes
    }

    /// Each row's entity key for join keys `keys`.
    func entityKeys(_ keys: [Column]) -> [EntityKey] {
        (0..<count).map { row in
            EntityKey(keys.map { key in
                switch columns[key.name]?[row] {
                case .int(let value)?: return .int(value)
                case .string(let value)?: return .string(value)
                default: return .string("")
                }
            })
        }
    }

    /// Column `name` typed as the online store takes `type`.
    func values(_ name: String, as type: ValueType) -> ColumnValues {
        let values = columns[name] ?? Array(repeating: .null, count: count)
        switch type {
        case .int64, .int32: return .int64(values.map { if case .int(let v) = $0 { return v } else { return nil } })
        case .float64, .float32: return .float64(values.map { if case .double(let v) = $0 { return v } else { return nil } })
        case .bool: return .bool(values.map { if case .bool(let v) = $0 { return v } else { return nil } })
        case .timestamp: return .timestamp(values.map { if case .timestamp(let v) = $0 { return v } else { return nil } })
        default: return .string(values.map { if case .string(let v) = $0 { return v } else { return nil } })
        }
    }

    /// Column `name` as numbers for aggregation (a non-numeric value counts as 1).
    func numbers(_ name: String) -> [Double?] {
        (columns[name] ?? []).map { value in
            switch value {
            case .null: return nil
            case .int(let number), .timestamp(let number): return Double(number)
            case .double(let number): return number
            case .bool(let flag): return flag ? 1 : 0
            case .string: return 1
            }
        }
    }
}

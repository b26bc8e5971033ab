import Shared

/// The values of one column of a batch of rows; nil is null.
public enum ColumnValues: Sendable, Hashable {
    /// `int64` and `int32` columns.
    case int64([Int64?])
    /// `float64` and `float32` columns.
    case float64([Double?])
    /// `bool` columns.
    case bool([Bool?])
    /// `string` columns (and `bytes`, as written in the file).
    case string([String?])
    /// `timestamp` columns: microseconds since 1970-01-01T00:00:00Z.
    case timestamp([Int64?])

    /// Empty values for a column of `type`.
    static func empty(_ type: ValueType, capacity: Int) -> ColumnValues {
        switch type {
        case .int64, .int32:
            var values: [Int64?] = []
            values.reserveCapacity(capacity)
            return .int64(values)
        case .float64, .float32:
            var values: [Double?] = []
            values.reserveCapacity(capacity)
            return .float64(values)
        case .bool: return .bool([])
        case .timestamp:
            var values: [Int64?] = []
            values.reserveCapacity(capacity)
            return .timestamp(values)
        default: return .string([])
        }
    }

    /// How many values it holds.
    public var count: Int {
        switch self {
        case .int64(let values), .timestamp(let values): return values.count
        case .float64(let values): return values.count
        case .bool(let values): return values.count
        case .string(let values): return values.count
        }
    }
}

/// A batch of rows, stored by column: what sources hand to the engine.
public struct ColumnBatch: Sendable, Hashable {
    /// The column names, in order.
    public var names: [String]
    /// The columns, in the same order.
    public var columns: [ColumnValues]

    /// Rows in the batch.
    public var count: Int { columns.first?.count ?? 0 }

    /// The column named `name`.
    public func column(_ name: String) -> ColumnValues? {
        names.firstIndex(of: name).map { columns[$0] }
    }
}

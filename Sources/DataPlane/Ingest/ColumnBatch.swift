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

/// The typed columns of a batch being read: one array per column, appended
/// to in place (re-wrapping a `ColumnValues` per value costs a copy check each time).
struct ColumnBuilders {
    enum Kind { case int64, int32, float64, bool, timestamp, string }
    let kinds: [Kind]
    /// Each column's index among the arrays of its kind.
    let slots: [Int]
    var integers: [[Int64?]] = []
    var doubles: [[Double?]] = []
    var booleans: [[Bool?]] = []
    var times: [[Int64?]] = []
    var texts: [[String?]] = []
    /// Per timestamp column: the last CSV field's bytes and its value.
    var lastTimes: [(bytes: [UInt8], value: Int64)]

    init(schema: [(name: String, type: ValueType)], capacity: Int, lastTimes: [(bytes: [UInt8], value: Int64)] = []) {
        var kinds: [Kind] = [], slots: [Int] = []
        for column in schema {
            let kind: Kind
            switch column.type {
            case .int64: kind = .int64
            case .int32: kind = .int32
            case .float64, .float32: kind = .float64
            case .bool: kind = .bool
            case .timestamp: kind = .timestamp
            default: kind = .string
            }
            kinds.append(kind)
            switch kind {
            case .int64, .int32:
                slots.append(integers.count)
                integers.append([])
                integers[integers.count - 1].reserveCapacity(capacity)
            case .float64:
                slots.append(doubles.count)
                doubles.append([])
                doubles[doubles.count - 1].reserveCapacity(capacity)
            case .bool:
                slots.append(booleans.count)
                booleans.append([])
            case .timestamp:
                slots.append(times.count)
                times.append([])
                times[times.count - 1].reserveCapacity(capacity)
            case .string:
                slots.append(texts.count)
                texts.append([])
            }
        }
        self.kinds = kinds
        self.slots = slots
        self.lastTimes = lastTimes.count == times.count ? lastTimes : Array(repeating: (bytes: [], value: 0), count: times.count)
    }

    /// The columns, in schema order.
    var values: [ColumnValues] {
        kinds.indices.map { position in
            let slot = slots[position]
            switch kinds[position] {
            case .int64, .int32: return .int64(integers[slot])
            case .float64: return .float64(doubles[slot])
            case .bool: return .bool(booleans[slot])
            case .timestamp: return .timestamp(times[slot])
            case .string: return .string(texts[slot])
            }
        }
    }
}

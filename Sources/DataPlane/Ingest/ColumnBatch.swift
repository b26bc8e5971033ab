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

/// One typed column of the batches being read: a block of `capacity`
/// values written by row, kept from batch to batch. A class holding a
/// pointer, so that writing a value neither makes the array of columns
/// unique nor checks exclusive access at run time.
final class ColumnBuilder<Value> {
    let capacity: Int
    private let storage: UnsafeMutablePointer<Value?>

    init(capacity: Int) {
        self.capacity = max(1, capacity)
        storage = .allocate(capacity: self.capacity)
        storage.initialize(repeating: nil, count: self.capacity)
    }

    deinit {
        storage.deinitialize(count: capacity)
        storage.deallocate()
    }

    /// Writes the value of row `row`.
    @inline(__always)
    func set(row: Int, _ value: Value?) {
        precondition(row >= 0 && row < capacity, "row \(row) is past the batch's capacity \(capacity)")
        storage[row] = value
    }

    /// The values of the first `count` rows.
    func values(count: Int) -> [Value?] {
        Array(UnsafeBufferPointer(start: storage, count: min(count, capacity)))
    }
}

/// The typed columns of a batch being read, filled row by row: a record's
/// values are written at row `rows`, which counts only when the record is
/// complete (a record abandoned half-way is overwritten by the next).
struct ColumnBuilders {
    enum Kind { case int64, int32, float64, bool, timestamp, string }
    let kinds: [Kind]
    /// Each column's index among the arrays of its kind.
    let slots: [Int]
    private(set) var integers: [ColumnBuilder<Int64>] = []
    private(set) var doubles: [ColumnBuilder<Double>] = []
    private(set) var booleans: [ColumnBuilder<Bool>] = []
    private(set) var times: [ColumnBuilder<Int64>] = []
    private(set) var texts: [ColumnBuilder<String>] = []
    /// Per timestamp column: the last CSV field's bytes and its value.
    var lastTimes: [(bytes: [UInt8], value: Int64)]
    /// Complete rows written so far.
    var rows = 0
    /// How many rows fit.
    let capacity: Int

    init(schema: [(name: String, type: ValueType)], capacity: Int) {
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
                integers.append(ColumnBuilder(capacity: capacity))
            case .float64:
                slots.append(doubles.count)
                doubles.append(ColumnBuilder(capacity: capacity))
            case .bool:
                slots.append(booleans.count)
                booleans.append(ColumnBuilder(capacity: capacity))
            case .timestamp:
                slots.append(times.count)
                times.append(ColumnBuilder(capacity: capacity))
            case .string:
                slots.append(texts.count)
                texts.append(ColumnBuilder(capacity: capacity))
            }
        }
        self.kinds = kinds
        self.slots = slots
        self.capacity = max(1, capacity)
        lastTimes = Array(repeating: (bytes: [], value: 0), count: times.count)
    }

    /// The columns, in schema order.
    var values: [ColumnValues] {
        kinds.indices.map { position in
            let slot = slots[position]
            switch kinds[position] {
            case .int64, .int32: return .int64(integers[slot].values(count: rows))
            case .float64: return .float64(doubles[slot].values(count: rows))
            case .bool: return .bool(booleans[slot].values(count: rows))
            case .timestamp: return .timestamp(times[slot].values(count: rows))
            case .string: return .string(texts[slot].values(count: rows))
            }
        }
    }
}

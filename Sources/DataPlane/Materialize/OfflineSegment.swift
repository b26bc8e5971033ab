import NIOCore
import Shared

/// A run of an offline table's rows kept column by column, as one `bytea`
/// value in the table's segments table (see `OfflineTable`). Reading a
/// segment costs the server a copy of its bytes, where reading the same rows
/// from the table costs it an encoding call per value; the agent decodes a
/// fixed-width column with one load per value.
///
/// Layout (little-endian): the magic `LSG1`, the row count and the column
/// count (`UInt32` each); per column its kind (0: 64-bit values, 1: text),
/// whether it holds nulls (a byte each), two bytes of padding, and the offset
/// and length of its data (`UInt64` each). A 64-bit column's data is one
/// `Int64` per row — integers, a double's bit pattern, microseconds since
/// 1970 for times, 0 or 1 for booleans — then, when it holds nulls, a byte
/// per row (1: null). A text column's data is an `Int32` length per row (-1:
/// null), then the UTF-8 bytes of the values, one after another.
struct OfflineSegment: Sendable, Equatable {
    static let magic: UInt32 = 0x3147_534C   // "LSG1" read as little-endian bytes

    /// One column's values.
    enum Values: Sendable, Equatable {
        /// 64-bit patterns, and whether each is null (nil: none is).
        case fixed(bits: [Int64], nulls: [Bool]?)
        case text([String?])
        /// Not decoded (a reader asked for other columns).
        case skipped
    }

    /// The columns, in the table's column order: keys, event time, created time, outputs.
    var columns: [Values]
    var count: Int

    /// Whether this machine keeps integers little-endian, as segments do (64-bit columns are then copied whole).
    static let littleEndian = 1.littleEndian == 1

    /// Whether a column of `type` is kept as text.
    static func isText(_ type: ValueType) -> Bool { type == .string || type == .bytes }

    /// The 64-bit pattern of a value as the table's column of `type` holds it
    /// (a `real` column rounds to single precision, as PostgreSQL stores it).
    @inline(__always)
    static func bits(_ value: Double, type: ValueType) -> Int64 {
        Int64(bitPattern: (type == .float32 ? Double(Float(value)) : value).bitPattern)
    }

    /// The segment as bytes.
    func encoded() -> ByteBuffer {
        let sections = columns.map { column -> (kind: UInt8, nulls: Bool, length: UInt64) in
            switch column {
            case .fixed(let bits, let nulls): return (0, nulls != nil, UInt64(bits.count * 8 + (nulls == nil ? 0 : count)))
            case .text(let values): return (1, values.contains(nil), UInt64(values.count * 4 + values.reduce(0) { $0 + ($1?.utf8.count ?? 0) }))
            case .skipped: return (0, false, 0)
            }
        }
        let headerSize = 12 + 20 * columns.count
        var buffer = ByteBuffer()
        buffer.reserveCapacity(headerSize + Int(sections.reduce(0) { $0 + $1.length }))
        buffer.writeInteger(Self.magic, endianness: .little)
        buffer.writeInteger(UInt32(count), endianness: .little)
        buffer.writeInteger(UInt32(columns.count), endianness: .little)
        var offset = UInt64(headerSize)
        for section in sections {
            buffer.writeInteger(section.kind)
            buffer.writeInteger(UInt8(section.nulls ? 1 : 0))
            buffer.writeInteger(UInt16(0))
            buffer.writeInteger(offset, endianness: .little)
            buffer.writeInteger(section.length, endianness: .little)
            offset += section.length
        }
        for column in columns {
            switch column {
            case .fixed(let bits, let nulls):
                if Self.littleEndian {
                    bits.withUnsafeBytes { _ = buffer.writeBytes($0) }
                } else {
                    for value in bits { buffer.writeInteger(value, endianness: .little) }
                }
                if let nulls { buffer.writeBytes(nulls.map { $0 ? UInt8(1) : 0 }) }
            case .text(let values):
                for value in values { buffer.writeInteger(Int32(value.map { $0.utf8.count } ?? -1), endianness: .little) }
                for case let value? in values { buffer.writeString(value) }
            case .skipped: break
            }
        }
        return buffer
    }

    /// A cut or malformed segment.
    struct Malformed: Error, CustomStringConvertible {
        var description: String
    }

    /// Decodes `buffer`; only the columns in `only` when given (the others are `skipped`).
    init(decoding buffer: ByteBuffer, only: Set<Int>? = nil) throws {
        (columns, count) = try buffer.withUnsafeReadableBytes { raw throws -> ([Values], Int) in
            func integer<T: FixedWidthInteger>(_: T.Type, at offset: Int) throws -> T {
                guard offset >= 0, offset + MemoryLayout<T>.size <= raw.count else { throw Malformed(description: "an offline segment is cut short") }
                return T(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: T.self))
            }
            guard try integer(UInt32.self, at: 0) == Self.magic else { throw Malformed(description: "not an offline segment") }
            let count = Int(try integer(UInt32.self, at: 4))
            let width = Int(try integer(UInt32.self, at: 8))
            guard 12 + 20 * width <= raw.count else { throw Malformed(description: "an offline segment is cut short") }
            var columns: [Values] = []
            columns.reserveCapacity(width)
            for index in 0..<width {
                let entry = 12 + 20 * index
                let kind = try integer(UInt8.self, at: entry)
                let hasNulls = try integer(UInt8.self, at: entry + 1) != 0
                guard let start = Int(exactly: try integer(UInt64.self, at: entry + 4)), let length = Int(exactly: try integer(UInt64.self, at: entry + 12)),
                      start <= raw.count, length <= raw.count - start
                else { throw Malformed(description: "an offline segment's column runs past its end") }
                if let only, !only.contains(index) {
                    columns.append(.skipped)
                    continue
                }
                if kind == 0 {
                    guard length == count * 8 + (hasNulls ? count : 0) else { throw Malformed(description: "an offline segment's column has the wrong length") }
                    let bits = [Int64](unsafeUninitializedCapacity: count) { values, initialized in
                        if Self.littleEndian {
                            UnsafeMutableRawBufferPointer(values).copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[start..<(start + count * 8)]))
                        } else {
                            for row in 0..<count { values[row] = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: start + row * 8, as: Int64.self)) }
                        }
                        initialized = count
                    }
                    let nulls = hasNulls ? (0..<count).map { raw[start + count * 8 + $0] != 0 } : nil
                    columns.append(.fixed(bits: bits, nulls: nulls))
                } else {
                    guard length >= count * 4 else { throw Malformed(description: "an offline segment's text column has the wrong length") }
                    var values: [String?] = []
                    values.reserveCapacity(count)
                    var cursor = start + count * 4
                    for row in 0..<count {
                        let size = Int(try integer(Int32.self, at: start + row * 4))
                        if size < 0 {
                            values.append(nil)
                            continue
                        }
                        guard cursor + size <= start + length else { throw Malformed(description: "an offline segment's text runs past its column") }
                        values.append(String(decoding: UnsafeRawBufferPointer(rebasing: raw[cursor..<(cursor + size)]), as: UTF8.self))
                        cursor += size
                    }
                    columns.append(.text(values))
                }
            }
            return (columns, count)
        }
    }

    init(columns: [Values], count: Int) {
        self.columns = columns
        self.count = count
    }

    /// The rows at `rows` (in that order), every column.
    func rows(_ rows: [Int]) -> OfflineSegment {
        OfflineSegment(columns: columns.map { column in
            switch column {
            case .fixed(let bits, let nulls): return .fixed(bits: rows.map { bits[$0] }, nulls: nulls.map { nulls in rows.map { nulls[$0] } })
            case .text(let values): return .text(rows.map { values[$0] })
            case .skipped: return .skipped
            }
        }, count: rows.count)
    }
}

/// Gathers the rows a job writes into segments of a table: keys, event and
/// created times, outputs, column by column.
struct OfflineSegmentBuilder {
    let types: [ValueType]
    private(set) var count = 0
    private var fixed: [[Int64]]
    private var nulls: [[Bool]]
    private var texts: [[String?]]

    /// A builder for a table with `columns` (keys, event time, created time, outputs).
    init(columns: [(name: String, type: ValueType)]) {
        types = columns.map(\.type)
        fixed = Array(repeating: [], count: types.count)
        nulls = Array(repeating: [], count: types.count)
        texts = Array(repeating: [], count: types.count)
    }

    /// Appends a batch with `keyCount` key columns (in the table's order), column by column.
    mutating func append(_ batch: OutputBatch, keyCount: Int) {
        let rows = batch.count
        guard rows > 0 else { return }
        for index in 0..<keyCount {
            let text = OfflineSegment.isText(types[index])
            if keyCount == 1, text {
                texts[index].append(contentsOf: batch.keys.lazy.map { key -> String? in
                    if case .string(let value) = key { return value }
                    return key.description
                })
            } else if keyCount == 1 {
                fixed[index].append(contentsOf: batch.keys.lazy.map { key -> Int64 in
                    if case .int(let value) = key { return value }
                    return 0
                })
                nulls[index].append(contentsOf: repeatElement(false, count: rows))
            } else {
                for key in batch.keys {
                    switch key.parts[index] {
                    case .int(let value):
                        fixed[index].append(value)
                        nulls[index].append(false)
                    case .string(let value): texts[index].append(value)
                    }
                }
            }
        }
        let event = keyCount, created = keyCount + 1
        fixed[event].append(contentsOf: batch.eventTimes)
        nulls[event].append(contentsOf: repeatElement(false, count: rows))
        fixed[created].append(contentsOf: batch.createdTimes.lazy.map { $0 ?? 0 })
        nulls[created].append(contentsOf: batch.createdTimes.lazy.map { $0 == nil })
        for (offset, column) in batch.features.enumerated() {
            let index = keyCount + 2 + offset
            switch column {
            case .int64(let values), .timestamp(let values):
                fixed[index].append(contentsOf: values.lazy.map { $0 ?? 0 })
                nulls[index].append(contentsOf: values.lazy.map { $0 == nil })
            case .float64(let values):
                let type = types[index]
                fixed[index].append(contentsOf: values.lazy.map { $0.map { OfflineSegment.bits($0, type: type) } ?? 0 })
                nulls[index].append(contentsOf: values.lazy.map { $0 == nil })
            case .bool(let values):
                fixed[index].append(contentsOf: values.lazy.map { $0 == true ? 1 : 0 })
                nulls[index].append(contentsOf: values.lazy.map { $0 == nil })
            case .string(let values):
                texts[index].append(contentsOf: values)
            }
        }
        count += rows
    }

    /// The rows gathered as a segment, and the builder emptied.
    mutating func take() -> OfflineSegment {
        let columns = types.indices.map { index -> OfflineSegment.Values in
            if OfflineSegment.isText(types[index]) { return .text(texts[index]) }
            return .fixed(bits: fixed[index], nulls: nulls[index].contains(true) ? nulls[index] : nil)
        }
        let segment = OfflineSegment(columns: columns, count: count)
        for index in types.indices {
            fixed[index].removeAll(keepingCapacity: true)
            nulls[index].removeAll(keepingCapacity: true)
            texts[index].removeAll(keepingCapacity: true)
        }
        count = 0
        return segment
    }
}

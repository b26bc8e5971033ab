import Foundation

/// Encodes rows of an online table as a log frame, in columnar form:
///
/// ```
/// count u32
/// keys         per row: tag u8 (0 int, 1 string, 2 composite), then i64 or u32 length + bytes
/// event times  count × i64
/// created      count × i64
/// per feature  count null flags (u8), then each non-null value: u64, or u32 length + UTF-8
/// ```
enum FrameEncoder {
    /// The frame of the rows stored in `slots` of `table` (keyed by `keys`).
    static func encode(keys: [EntityKey], slots: [Int], of stored: Slots, layout: SlotLayout) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(slots.count * (25 + 9 * layout.types.count))
        bytes.appendLittleEndian(UInt32(slots.count))
        for key in keys {
            switch key {
            case .int(let value):
                bytes.append(0)
                bytes.appendLittleEndian(UInt64(bitPattern: value))
            case .string(let value):
                bytes.append(1)
                bytes.appendLittleEndian(UInt32(value.utf8.count))
                bytes.append(contentsOf: value.utf8)
            case .composite(let encoded):
                bytes.append(2)
                bytes.appendLittleEndian(UInt32(encoded.count))
                bytes.append(contentsOf: encoded)
            }
        }
        for slot in slots { bytes.appendLittleEndian(UInt64(bitPattern: stored.eventTimes[slot])) }
        for slot in slots { bytes.appendLittleEndian(UInt64(bitPattern: stored.createdTimes[slot])) }
        for (feature, type) in layout.types.enumerated() {
            let position = layout.positions[feature]
            for slot in slots { bytes.append(stored.isNull(slot, feature, layout: layout) ? 1 : 0) }
            for slot in slots where !stored.isNull(slot, feature, layout: layout) {
                if type == .string {
                    let text = stored.strings[position][slot] ?? ""
                    bytes.appendLittleEndian(UInt32(text.utf8.count))
                    bytes.append(contentsOf: text.utf8)
                } else {
                    bytes.appendLittleEndian(stored.words[slot * layout.wordFeatures + position])
                }
            }
        }
        return bytes
    }
}

/// Decodes log frames of one table back into rows.
struct FrameDecoder {
    let schema: OnlineTableSchema
    let types: [StoredType]

    func decode(_ bytes: [UInt8]) throws(OnlineStoreError) -> OnlineRows {
        var offset = 0
        func need(_ count: Int) throws(OnlineStoreError) {
            guard offset + count <= bytes.count else { throw .io("a log frame of \(schema.view) v\(schema.version) is malformed") }
        }
        func word() throws(OnlineStoreError) -> UInt64 {
            try need(8)
            defer { offset += 8 }
            return ByteReader.uint64(bytes, at: offset)
        }
        func blob() throws(OnlineStoreError) -> ArraySlice<UInt8> {
            try need(4)
            let length = Int(ByteReader.uint32(bytes, at: offset))
            offset += 4
            try need(length)
            defer { offset += length }
            return bytes[offset..<offset + length]
        }
        try need(4)
        let count = Int(ByteReader.uint32(bytes, at: 0))
        offset = 4
        var keys: [EntityKey] = []
        keys.reserveCapacity(count)
        for _ in 0..<count {
            try need(1)
            let tag = bytes[offset]
            offset += 1
            switch tag {
            case 0: keys.append(.int(Int64(bitPattern: try word())))
            case 1: keys.append(.string(String(decoding: try blob(), as: UTF8.self)))
            default: keys.append(.composite(Array(try blob())))
            }
        }
        var events: [Int64] = [], created: [Int64] = []
        events.reserveCapacity(count)
        created.reserveCapacity(count)
        for _ in 0..<count { events.append(Int64(bitPattern: try word())) }
        for _ in 0..<count { created.append(Int64(bitPattern: try word())) }
        var features: [ColumnValues] = []
        for type in types {
            try need(count)
            let nulls = bytes[offset..<offset + count].map { $0 != 0 }
            offset += count
            switch type {
            case .string:
                var values: [String?] = []
                for isNull in nulls { values.append(isNull ? nil : String(decoding: try blob(), as: UTF8.self)) }
                features.append(.string(values))
            case .int, .timestamp, .double, .bool:
                var values: [UInt64?] = []
                values.reserveCapacity(count)
                for isNull in nulls { values.append(isNull ? nil : try word()) }
                switch type {
                case .int: features.append(.int64(values.map { $0.map { Int64(bitPattern: $0) } }))
                case .timestamp: features.append(.timestamp(values.map { $0.map { Int64(bitPattern: $0) } }))
                case .double: features.append(.float64(values.map { $0.map { Double(bitPattern: $0) } }))
                default: features.append(.bool(values.map { $0.map { $0 != 0 } }))
                }
            }
        }
        return OnlineRows(keys: keys, eventTimes: events, createdTimes: created, features: features)
    }
}

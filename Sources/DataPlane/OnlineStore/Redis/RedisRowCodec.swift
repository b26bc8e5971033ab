import NIOCore
import Shared

/// How the Redis online store lays out keys and values.
///
/// **Keys.** One per (view version, entity):
/// `<prefix>:{<view>:<version>:<bucket>}:<entity>`. The part in braces is
/// the Cluster hash tag: an entity's bucket (FNV-1a of its key bytes, modulo
/// `buckets`) puts it in one of `buckets` slots per view version, so the rows of
/// one bucket are written by one script call and read by one `MGET`, and a
/// view version's entities still spread over every node.
///
/// **Values.** The embedded store's compact encoding of one row:
///
/// ```
/// order     16 bytes: event time, then created time, big-endian, sign bit flipped
///           (so comparing bytes compares times: the newest-wins script needs no decoding)
/// format    1 byte (1)
/// nulls     ⌈features / 8⌉ bytes, a set bit per null feature
/// values    per non-null feature: 8 bytes little-endian (integers, doubles, booleans,
///           timestamps), or a u32 length and UTF-8 bytes (strings)
/// ```
public struct RedisRowCodec: Sendable {
    /// Hash-tag buckets per view version.
    public static let buckets: UInt64 = 1_024
    /// The value format written.
    static let format: UInt8 = 1

    let prefix: String

    /// A codec for keys under `prefix`.
    public init(prefix: String) {
        self.prefix = prefix
    }

    /// The bytes of an entity in its key.
    static func entityBytes(_ key: EntityKey) -> [UInt8] {
        switch key {
        case .int(let value): return Array(String(value).utf8)
        case .string(let value): return Array(value.utf8)
        case .composite(let bytes): return bytes
        }
    }

    /// FNV-1a (64 bits) of `bytes`: the same in every process, unlike `Hasher`.
    static func fnv1a(_ bytes: [UInt8]) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// The key of `entity` in `view` at `version`, and its Cluster slot.
    func key(view: String, version: Int, entity: EntityKey) -> (key: ByteBuffer, slot: Int) {
        let bytes = Self.entityBytes(entity)
        let tag = "\(view):\(version):\(Self.fnv1a(bytes) % Self.buckets)"
        var buffer = ByteBuffer()
        buffer.reserveCapacity(prefix.utf8.count + tag.utf8.count + bytes.count + 4)
        buffer.writeString(prefix)
        buffer.writeString(":{")
        buffer.writeString(tag)
        buffer.writeString("}:")
        buffer.writeBytes(bytes)
        return (buffer, RedisSlot.of(tag.utf8))
    }

    /// The key of the hash naming each view's served version.
    var versionsKey: String { "\(prefix):versions" }
    /// The key of the hash holding each view version's schema (JSON).
    var schemasKey: String { "\(prefix):schemas" }

    /// A time as 8 bytes that sort as the time does.
    @inline(__always)
    static func orderBytes(_ time: Int64) -> UInt64 { UInt64(bitPattern: time) ^ (1 << 63) }

    /// Row `row` of `rows`, encoded with `types`.
    static func encode(_ rows: OnlineRows, row: Int, types: [StoredType], into buffer: inout ByteBuffer) {
        buffer.writeInteger(orderBytes(rows.eventTimes[row]), endianness: .big)
        buffer.writeInteger(orderBytes(rows.createdTimes[row]), endianness: .big)
        buffer.writeInteger(format)
        let nullStart = buffer.writerIndex
        let nullBytes = (types.count + 7) / 8
        buffer.writeRepeatingByte(0, count: nullBytes)
        for (feature, column) in rows.features.enumerated() {
            var word: UInt64?
            switch column {
            case .int64(let values):
                if let value = values[row] {
                    // Integers in a double feature are stored as doubles, as the embedded store does.
                    word = types[feature] == .double ? Double(value).bitPattern : UInt64(bitPattern: value)
                }
            case .timestamp(let values): word = values[row].map { UInt64(bitPattern: $0) }
            case .float64(let values): word = values[row].map(\.bitPattern)
            case .bool(let values): word = values[row].map { $0 ? 1 : 0 }
            case .string(let values):
                if let value = values[row] {
                    buffer.writeInteger(UInt32(value.utf8.count), endianness: .little)
                    buffer.writeString(value)
                    continue
                }
            }
            if let word {
                buffer.writeInteger(word, endianness: .little)
            } else {
                let at = nullStart + feature / 8
                let current = buffer.getInteger(at: at, as: UInt8.self)!
                buffer.setInteger(current | UInt8(1 << (feature % 8)), at: at)
            }
        }
    }

    /// A stored value: its times and every feature's value, read with `types`; nil when it is not in this format.
    static func decode(_ value: ByteBuffer, types: [StoredType]) -> OnlineRecord? {
        var buffer = value
        guard let event = buffer.readInteger(endianness: .big, as: UInt64.self),
              let created = buffer.readInteger(endianness: .big, as: UInt64.self),
              buffer.readInteger(as: UInt8.self) == format,
              let nulls = buffer.readBytes(length: (types.count + 7) / 8)
        else { return nil }
        var values: [FeatureValue] = []
        values.reserveCapacity(types.count)
        for (feature, type) in types.enumerated() {
            if nulls[feature / 8] & UInt8(1 << (feature % 8)) != 0 {
                values.append(.null)
                continue
            }
            if type == .string {
                guard let length = buffer.readInteger(endianness: .little, as: UInt32.self),
                      let text = buffer.readString(length: Int(length))
                else { return nil }
                values.append(.string(text))
            } else {
                guard let word = buffer.readInteger(endianness: .little, as: UInt64.self) else { return nil }
                values.append(type.value(bits: word))
            }
        }
        return OnlineRecord(
            eventTime: Int64(bitPattern: event ^ (1 << 63)), createdTime: Int64(bitPattern: created ^ (1 << 63)), values: values)
    }
}

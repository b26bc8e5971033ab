/// The identity of one entity in the online store: its join key values.
///
/// One integer key (the common case) is stored inline with no allocation; one
/// string key as the string; several keys as their binary encoding.
public enum EntityKey: Sendable, Hashable, CustomStringConvertible {
    /// A single integer join key.
    case int(Int64)
    /// A single string join key.
    case string(String)
    /// Several join keys, encoded in key order.
    case composite([UInt8])

    /// The value of one join key.
    public enum Part: Sendable, Hashable {
        case int(Int64)
        case string(String)
    }

    /// The key of an entity whose join keys have the values `parts`, in key order.
    public init(_ parts: [Part]) {
        if parts.count == 1 {
            switch parts[0] {
            case .int(let value): self = .int(value)
            case .string(let value): self = .string(value)
            }
            return
        }
        var bytes: [UInt8] = []
        for part in parts {
            switch part {
            case .int(let value):
                bytes.append(0)
                withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
            case .string(let value):
                bytes.append(1)
                withUnsafeBytes(of: UInt32(value.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
                bytes.append(contentsOf: value.utf8)
            }
        }
        self = .composite(bytes)
    }

    public var description: String {
        switch self {
        case .int(let value): return String(value)
        case .string(let value): return value
        case .composite:
            return parts.map { part in
                switch part {
                case .int(let value): return String(value)
                case .string(let value): return value
                }
            }.joined(separator: ",")
        }
    }
}

extension EntityKey {
    /// The join key values, in key order.
    public var parts: [Part] {
        switch self {
        case .int(let value): return [.int(value)]
        case .string(let value): return [.string(value)]
        case .composite(let bytes):
            var parts: [Part] = []
            var index = 0
            while index < bytes.count {
                let tag = bytes[index]
                index += 1
                if tag == 0 {
                    parts.append(.int(ByteReader.int64(bytes, at: index)))
                    index += 8
                } else {
                    let length = Int(ByteReader.uint32(bytes, at: index))
                    index += 4
                    parts.append(.string(String(decoding: bytes[index..<index + length], as: UTF8.self)))
                    index += length
                }
            }
            return parts
        }
    }
}

/// Little-endian reads from a byte array (the online store's log format).
enum ByteReader {
    @inline(__always)
    static func uint64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
    }

    @inline(__always)
    static func int64(_ bytes: [UInt8], at offset: Int) -> Int64 { Int64(bitPattern: uint64(bytes, at: offset)) }

    @inline(__always)
    static func uint32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
    }
}

/// Little-endian appends to a byte array.
extension Array where Element == UInt8 {
    @inline(__always)
    mutating func appendLittleEndian(_ value: UInt64) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    @inline(__always)
    mutating func appendLittleEndian(_ value: UInt32) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}

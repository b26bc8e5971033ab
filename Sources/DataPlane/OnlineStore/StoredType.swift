import Foundation
import Shared

/// How the online store keeps a column: as 64-bit words, or as strings.
enum StoredType: UInt8, Sendable {
    case int = 0, double = 1, bool = 2, timestamp = 3, string = 4

    init(_ type: ValueType) throws(OnlineStoreError) {
        switch type {
        case .int64, .int32: self = .int
        case .float64, .float32: self = .double
        case .bool: self = .bool
        case .timestamp: self = .timestamp
        case .string, .bytes: self = .string
        default: throw OnlineStoreError.unsupportedType(type.rawValue)
        }
    }

    func value(bits: UInt64) -> FeatureValue {
        switch self {
        case .int: return .int(Int64(bitPattern: bits))
        case .double: return .double(Double(bitPattern: bits))
        case .bool: return .bool(bits != 0)
        case .timestamp: return .timestamp(Int64(bitPattern: bits))
        case .string: return .null
        }
    }
}

/// Why the online store refused an operation.
public enum OnlineStoreError: Error, Sendable, CustomStringConvertible, Equatable {
    /// A column type the online store cannot hold.
    case unsupportedType(String)
    /// A batch whose columns do not match the table.
    case schemaMismatch(String)
    /// A file that cannot be read or written.
    case io(String)

    public var description: String {
        switch self {
        case .unsupportedType(let type): return "the online store cannot hold values of type \(type)"
        case .schemaMismatch(let detail): return "batch does not match the online table: \(detail)"
        case .io(let detail): return "online store: \(detail)"
        }
    }
}

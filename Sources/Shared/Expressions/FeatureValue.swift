import Foundation

/// One feature value: as the online store returns it, as on-demand
/// expressions compute with it, as the feature server answers it.
public enum FeatureValue: Sendable, Hashable, CustomStringConvertible {
    case null
    case int(Int64)
    case double(Double)
    case bool(Bool)
    case string(String)
    /// Microseconds since the epoch.
    case timestamp(Int64)

    public var description: String {
        switch self {
        case .null: return "null"
        case .int(let value): return String(value)
        case .double(let value): return String(value)
        case .bool(let value): return String(value)
        case .string(let value): return value
        case .timestamp(let micros): return RFC3339.format(Date(timeIntervalSince1970: Double(micros) / 1_000_000))
        }
    }
}

import Foundation

/// A JSON value: the form canonical specs take in hashes, in the registry's
/// JSONB columns and in field-level diffs.
public enum JSONValue: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    case integer(Int64)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else if let value = try? container.decode([String: JSONValue].self) {
            self = .object(value)
        } else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "canonical specs hold no fractional numbers")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// The canonical text: object keys sorted, no insignificant whitespace.
    /// Equal values always give equal bytes, which is what hashes are taken over.
    public var canonicalData: Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding a tree of strings, integers and containers cannot fail.
        return (try? encoder.encode(self)) ?? Data()
    }

    /// The canonical text as a string.
    public var canonicalString: String { String(decoding: canonicalData, as: UTF8.self) }
}

extension JSONValue {
    /// `.string(text)`, or `.null` for nil.
    static func optional(_ text: String?) -> JSONValue { text.map(JSONValue.string) ?? .null }

    /// An object without its null members, so absent and null fields hash alike.
    static func compactObject(_ members: [String: JSONValue]) -> JSONValue {
        .object(members.filter { $0.value != .null })
    }
}

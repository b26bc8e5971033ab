import Foundation
import Shared

/// The body of `POST /v1/features/online`.
///
/// ```json
/// {"feature_service": "driver_ranking",
///  "entities": [{"driver_id": 1001}, {"driver_id": 1002, "trip_distance_km": 7.5}],
///  "request_context": {"trip_distance_km": 3.2}}
/// ```
///
/// Either `feature_service` or `features` (`view:feature` or `view`
/// references). Each entity row carries the join keys; request fields come
/// from the row or, when it lacks them, from `request_context`.
public struct OnlineFeatureRequest: Sendable, Hashable {
    /// A feature service's name.
    public var featureService: String?
    /// Feature references, when no service is named.
    public var features: [String]?
    /// One object per entity: join keys, and optionally request fields.
    public var entities: [[String: JSONScalar]]
    /// Request fields shared by every entity row.
    public var requestContext: [String: JSONScalar]?

    /// Creates a request.
    public init(featureService: String? = nil, features: [String]? = nil, entities: [[String: JSONScalar]], requestContext: [String: JSONScalar]? = nil) {
        self.featureService = featureService
        self.features = features
        self.entities = entities
        self.requestContext = requestContext
    }
}

/// A JSON value that is not an object or an array.
public enum JSONScalar: Sendable, Hashable, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByStringLiteral,
    ExpressibleByBooleanLiteral
{
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)

    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }

    /// How the value reads in an error message.
    var kind: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int: return "an integer"
        case .double: return "a number"
        case .string: return "a string"
        }
    }
}

/// Why a feature request's body is unusable: names the offending field (a
/// JSON path such as `entities[3].driver_id`).
public struct FeatureRequestError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What is wrong.
    public enum Kind: Sendable, Equatable {
        /// A field is missing or has the wrong type or value: 400.
        case invalid
        /// More entities than the agent serves in one request: 413.
        case tooManyEntities
    }

    public var kind: Kind
    public var field: String
    public var detail: String

    public var description: String { "\(field): \(detail)" }

    static func invalid(_ field: String, _ detail: String) -> FeatureRequestError { .init(kind: .invalid, field: field, detail: detail) }
}

/// The entity rows of a request, checked against a resolved request: each
/// join key's values typed, and each request field's values.
public struct EntityBatch: Sendable {
    /// Rows.
    public let count: Int
    /// Each join key's value per row, by key name.
    public var keys: [String: [EntityKey.Part]]
    /// Each request field's value per row, in the resolved request's order.
    public var requestValues: [[FeatureValue]]

    /// Checks `request`'s rows against `resolved`; at most `limit` rows.
    public init(_ request: OnlineFeatureRequest, for resolved: ResolvedRequest, limit: Int) throws(FeatureRequestError) {
        let rows = request.entities
        guard !rows.isEmpty else { throw .invalid("entities", "give at least one entity, such as {\"\(resolved.joinKeys.first?.name ?? "id")\": …}") }
        guard rows.count <= limit else {
            throw FeatureRequestError(kind: .tooManyEntities, field: "entities", detail: "\(rows.count) entities; this agent serves at most \(limit) per request")
        }
        count = rows.count
        var keys: [String: [EntityKey.Part]] = [:]
        for key in resolved.joinKeys {
            var parts: [EntityKey.Part] = []
            parts.reserveCapacity(rows.count)
            for (index, row) in rows.enumerated() {
                let field = "entities[\(index)].\(key.name)"
                guard let value = row[key.name] else { throw .invalid(field, "missing join key \(key.name) (\(key.type.rawValue))") }
                parts.append(try Self.part(value, type: key.type, field: field))
            }
            keys[key.name] = parts
        }
        self.keys = keys
        let context = request.requestContext ?? [:]
        var requestValues: [[FeatureValue]] = []
        for column in resolved.requestFields {
            var values: [FeatureValue] = []
            values.reserveCapacity(rows.count)
            let shared = try context[column.name].map { value throws(FeatureRequestError) in
                try Self.value(value, type: column.type, field: "request_context.\(column.name)")
            }
            for (index, row) in rows.enumerated() {
                if let value = row[column.name] {
                    values.append(try Self.value(value, type: column.type, field: "entities[\(index)].\(column.name)"))
                } else if let shared {
                    values.append(shared)
                } else {
                    throw .invalid("request_context.\(column.name)", "missing request field \(column.name) (\(column.type.rawValue)); send it in request_context or in each entity")
                }
            }
            requestValues.append(values)
        }
        self.requestValues = requestValues
        // A name that is neither a join key nor a request field is a mistake worth reporting.
        for (index, row) in rows.enumerated() where row.count > resolved.joinKeys.count {
            for name in row.keys.sorted() where !resolved.joinKeys.contains(where: { $0.name == name }) && !resolved.requestFields.contains(where: { $0.name == name }) {
                throw .invalid("entities[\(index)].\(name)", "'\(name)' is not a join key or request field of these features; they take \((resolved.joinKeys + resolved.requestFields).map(\.name).joined(separator: ", "))")
            }
        }
        for name in context.keys.sorted() where !resolved.requestFields.contains(where: { $0.name == name }) {
            throw .invalid("request_context.\(name)", "'\(name)' is not a request field of these features\(resolved.requestFields.isEmpty ? ", which take none" : "; they take \(resolved.requestFields.map(\.name).joined(separator: ", "))")")
        }
    }

    /// The entity key of `row` for join keys `columns`.
    @inline(__always)
    func key(_ row: Int, columns: [Column]) -> EntityKey {
        if columns.count == 1, let parts = keys[columns[0].name] {
            switch parts[row] {
            case .int(let value): return .int(value)
            case .string(let value): return .string(value)
            }
        }
        return EntityKey(columns.map { keys[$0.name]?[row] ?? .int(0) })
    }

    static func part(_ value: JSONScalar, type: ValueType, field: String) throws(FeatureRequestError) -> EntityKey.Part {
        if type.isInteger {
            guard case .int(let number) = value else { throw .invalid(field, "\(type.rawValue) join key: expected an integer, got \(value.kind)") }
            if type == .int32, Int32(exactly: number) == nil { throw .invalid(field, "int32 join key: \(number) is out of range") }
            return .int(number)
        }
        guard case .string(let text) = value else { throw .invalid(field, "\(type.rawValue) join key: expected a string, got \(value.kind)") }
        return .string(text)
    }

    static func value(_ value: JSONScalar, type: ValueType, field: String) throws(FeatureRequestError) -> FeatureValue {
        switch (value, type) {
        case (.null, _): return .null
        case (.int(let number), .int64): return .int(number)
        case (.int(let number), .int32):
            guard Int32(exactly: number) != nil else { throw .invalid(field, "int32: \(number) is out of range") }
            return .int(number)
        case (.int(let number), .float64), (.int(let number), .float32): return .double(Double(number))
        case (.double(let number), .float64), (.double(let number), .float32): return .double(number)
        case (.bool(let flag), .bool): return .bool(flag)
        case (.string(let text), .string), (.string(let text), .bytes): return .string(text)
        case (.string(let text), .timestamp):
            guard let date = RFC3339.parse(text) else { throw .invalid(field, "timestamp: '\(text)' is not an RFC 3339 timestamp such as 2026-01-02T03:04:05Z") }
            return .timestamp(Int64((date.timeIntervalSince1970 * 1_000_000).rounded()))
        default:
            throw .invalid(field, "expected \(type.rawValue), got \(value.kind)")
        }
    }
}

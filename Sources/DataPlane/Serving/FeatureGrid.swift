import Shared

/// What the online store says of one feature of one entity.
public enum FeatureStatus: String, Sendable, Hashable, Codable {
    /// A value within the view's TTL.
    case present
    /// Nothing stored for the entity (or the view has no table yet).
    case notFound = "not_found"
    /// The entity's latest row is older than the view's TTL: no value is served.
    case expired
    /// The entity's latest row holds null for the feature (or an on-demand output computed null).
    case null

    /// `present` for a value, `null` for null.
    @inline(__always)
    init(of value: FeatureValue) {
        if case .null = value { self = .null } else { self = .present }
    }
}

/// The answer to a feature read: one row per entity, one column per feature
/// (the requested outputs first, then any stored inputs of on-demand outputs
/// that were not requested), each cell a value, a status and an event time.
public struct FeatureGrid: Sendable {
    /// The event time of a cell that has none.
    public static let noTime = Int64.min

    /// Rows: one per entity, in request order.
    public let entities: Int
    /// Columns per row.
    public let width: Int
    /// Row-major values (`entities × width`).
    public var values: [FeatureValue]
    /// Row-major statuses.
    public var statuses: [FeatureStatus]
    /// Row-major event times, microseconds since the epoch (`noTime` when none).
    public var eventTimes: [Int64]

    /// A grid whose every cell is `not_found`.
    public init(entities: Int, width: Int) {
        self.entities = entities
        self.width = width
        values = Array(repeating: .null, count: entities * width)
        statuses = Array(repeating: .notFound, count: entities * width)
        eventTimes = Array(repeating: Self.noTime, count: entities * width)
    }

    /// The cell of `entity` and `column`.
    public subscript(entity: Int, column: Int) -> (value: FeatureValue, status: FeatureStatus, eventTime: Int64?) {
        let index = entity * width + column
        return (values[index], statuses[index], eventTimes[index] == Self.noTime ? nil : eventTimes[index])
    }
}

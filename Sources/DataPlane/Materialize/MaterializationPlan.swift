import Foundation
import Shared

/// What a materialization job computes, read from its verified spec: the
/// view's keys, its source, its features (plain or windowed) and the interval.
///
/// Every name that will reach SQL is checked to be an identifier here, even
/// though the spec is signed: the agent trusts the key, not the text.
public struct MaterializationPlan: Sendable {
    /// The workspace the view belongs to (its offline table's name carries it).
    public var workspace: String
    /// The feature view.
    public var view: String
    /// Its version.
    public var version: Int
    /// The join keys of the view's entities, in order.
    public var keys: [Column]
    /// The source read.
    public var source: SourceDefinition
    /// Plain features with the column each reads (empty for aggregations).
    public var features: [FeatureDefinition]
    /// The view's SQL over `{{ source }}`, for PostgreSQL sources.
    public var transformation: String?
    /// Time-window aggregations (empty for plain views).
    public var aggregations: [AggregationDefinition]
    /// The tile length of aggregations, in seconds.
    public var slide: Int64?
    /// How long a value is served after its event time, in seconds.
    public var ttlSeconds: Int64?
    /// The first instant of the interval, microseconds since the epoch.
    public var start: Int64
    /// The first instant after it.
    public var end: Int64
    /// Which stores to write.
    public var targets: JobSpec.Targets
    /// The view's data-quality expectations, if it declares any.
    public var expectations: ViewExpectations?

    /// Why a spec cannot be planned.
    public struct Invalid: Error, Sendable, CustomStringConvertible {
        /// What is wrong.
        public let description: String
    }

    /// The output columns, in order: plain features, or one per aggregation and window.
    public var outputs: [Column] {
        if aggregations.isEmpty { return features.map { Column(name: $0.name, type: $0.type) } }
        return AggregationLayout(aggregations, sourceTypes: source.schema).outputs
    }

    /// The online table's schema for this view version.
    public var onlineSchema: OnlineTableSchema {
        OnlineTableSchema(view: view, version: version, keys: keys, features: outputs, ttlSeconds: ttlSeconds)
    }

    /// Reads the plan of a materialize job.
    public init(_ spec: JobSpec) throws(Invalid) {
        guard spec.kind == .materialize, let view = spec.featureView, let version = spec.version, let start = spec.start, let end = spec.end else {
            throw Invalid(description: "job \(spec.jobId) is not a materialization with a view, a version and an interval")
        }
        func definition(_ kind: ObjectKind, _ name: String, part: String = "spec") throws(Invalid) -> [String: JSONValue] {
            guard let found = spec.definitions.first(where: { $0.kind == kind.rawValue && $0.name == name }),
                case .object(let object) = found.definition, case .object(let semantic)? = object[part]
            else { throw Invalid(description: "the spec lacks the definition of \(kind) \(name)") }
            return semantic
        }
        func string(_ object: [String: JSONValue], _ key: String) -> String? {
            if case .string(let value)? = object[key] { return value }
            return nil
        }
        func integer(_ object: [String: JSONValue], _ key: String) -> Int64? {
            if case .integer(let value)? = object[key] { return value }
            return nil
        }
        func columns(_ value: JSONValue?, of owner: String) throws(Invalid) -> [Column] {
            guard case .object(let members)? = value else { return [] }
            var columns: [Column] = []
            for (name, type) in members.sorted(by: { $0.key < $1.key }) {
                guard case .string(let text) = type, let type = ValueType(rawValue: text) else {
                    throw Invalid(description: "\(owner): column \(name) has no known type")
                }
                columns.append(Column(name: name, type: type))
            }
            return columns
        }
        let spec_ = try definition(.featureView, view)
        guard let sourceName = string(spec_, "source"), case .array(let entityNames)? = spec_["entities"] else {
            throw Invalid(description: "feature view \(view): no source or entities")
        }
        var keys: [Column] = []
        for case .string(let entity) in entityNames {
            keys += try columns(try definition(.entity, entity)["join_keys"], of: "entity \(entity)")
        }
        // The source: whichever of the three kinds the spec carries.
        guard let sourceKind = [ObjectKind.postgresSource, .fileSource, .pushSource].first(where: { kind in
            spec.definitions.contains { $0.kind == kind.rawValue && $0.name == sourceName }
        }) else { throw Invalid(description: "the spec lacks the definition of source \(sourceName)") }
        let sourceSpec = try definition(sourceKind, sourceName)
        guard case .object(let connector)? = sourceSpec["connector"], let timestampField = string(sourceSpec, "timestamp_field") else {
            throw Invalid(description: "source \(sourceName): no connector or timestamp field")
        }
        let connection = string(connector, "connection") ?? ""
        let sourceConnector: SourceDefinition.Connector
        switch string(connector, "type") {
        case "postgres":
            if let table = string(connector, "table") {
                sourceConnector = .postgres(connection: connection, relation: .table(table))
            } else if let query = string(connector, "query") {
                sourceConnector = .postgres(connection: connection, relation: .query(query))
            } else {
                throw Invalid(description: "source \(sourceName): neither a table nor a query")
            }
        case "file":
            guard case .array(let paths)? = connector["paths"] else { throw Invalid(description: "source \(sourceName): no paths") }
            sourceConnector = .file(connection: connection, paths: paths.compactMap { if case .string(let path) = $0 { return path } else { return nil } })
        default:
            throw Invalid(description: "source \(sourceName) is pushed by clients; there is nothing to read for a batch job")
        }
        let source = SourceDefinition(
            name: sourceName, connector: sourceConnector, timestampField: timestampField,
            createdTimestampField: string(sourceSpec, "created_timestamp_field"), columns: try columns(sourceSpec["columns"], of: "source \(sourceName)"))

        var features: [FeatureDefinition] = []
        if case .array(let items)? = spec_["features"] {
            for case .object(let item) in items {
                guard let name = string(item, "name"), let typeText = string(item, "type"), let type = ValueType(rawValue: typeText) else {
                    throw Invalid(description: "feature view \(view): a feature without a name or known type")
                }
                features.append(FeatureDefinition(name: name, type: type, column: string(item, "column")))
            }
        }
        var aggregations: [AggregationDefinition] = []
        if case .array(let items)? = spec_["aggregations"] {
            for case .object(let item) in items {
                guard let functionText = string(item, "function"), let function = AggregationFunction(rawValue: functionText),
                    let column = string(item, "column"), case .array(let windows)? = item["windows"]
                else { throw Invalid(description: "feature view \(view): an aggregation without a function, column or windows") }
                let spans = windows.compactMap { if case .integer(let seconds) = $0 { return TimeSpan(seconds: seconds) } else { return nil } }
                aggregations.append(AggregationDefinition(function: function, column: column, windows: spans, name: string(item, "name")))
            }
        }
        self.workspace = spec.workspace
        self.view = view
        self.version = version
        self.keys = keys
        self.source = source
        self.features = features
        self.transformation = string(spec_, "sql")
        self.aggregations = aggregations
        self.slide = integer(spec_, "slide")
        self.ttlSeconds = integer(spec_, "ttl")
        self.start = Self.micros(start)
        self.end = Self.micros(end)
        self.targets = spec.targets
        self.expectations = CanonicalDecoder.expectations(operational: (try? definition(.featureView, view, part: "operational")).map(JSONValue.object))
        try check()
    }

    static func micros(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1_000_000).rounded()) }

    private func check() throws(Invalid) {
        var names = [view, source.timestampField] + keys.map(\.name) + source.columns.map(\.name) + outputs.map(\.name)
        names += features.map(\.sourceColumn) + aggregations.map(\.column)
        if let created = source.createdTimestampField { names.append(created) }
        for name in names where !Identifier.isValid(name) {
            throw Invalid(description: "'\(name)' is not a valid identifier")
        }
        guard !keys.isEmpty else { throw Invalid(description: "feature view \(view) has no join keys") }
        if !aggregations.isEmpty, (slide ?? 0) <= 0 { throw Invalid(description: "feature view \(view): aggregations need a positive slide") }
        for column in keys + outputs where !OfflineTable.supports(column.type) {
            throw Invalid(description: "feature view \(view): \(column.name) has type \(column.type.rawValue), which the stores cannot hold yet")
        }
    }
}

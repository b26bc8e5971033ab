import Foundation

/// The kinds of object a feature repository declares, with their YAML `kind:`.
public enum ObjectKind: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    case entity = "Entity"
    case postgresSource = "PostgresSource"
    case fileSource = "FileSource"
    case pushSource = "PushSource"
    case featureView = "FeatureView"
    case onDemandFeatureView = "OnDemandFeatureView"
    case featureService = "FeatureService"
    case entityQuery = "EntityQuery"

    public var description: String { rawValue }

    /// Whether the kind is one of the three sources, which share one namespace.
    public var isSource: Bool { self == .postgresSource || self == .fileSource || self == .pushSource }

    /// The namespace names of this kind must be unique in. Sources share one,
    /// and so do feature views and on-demand views (both are named by `view:feature`).
    public var namespace: String {
        switch self {
        case .entity: return "entity"
        case .postgresSource, .fileSource, .pushSource: return "source"
        case .featureView, .onDemandFeatureView: return "view"
        case .featureService: return "service"
        case .entityQuery: return "entity_query"
        }
    }
}

/// Descriptive fields every object may carry. They never change an object's
/// version: editing them is a metadata-only update.
public struct DefinitionMetadata: Sendable, Hashable, Codable {
    /// Free-text description, for people and for catalog search.
    public var description: String?
    /// Who to ask about the object (a team or a person).
    public var owner: String?
    /// Free-form labels, for search and filtering.
    public var tags: [String: String]

    /// Creates metadata.
    public init(description: String? = nil, owner: String? = nil, tags: [String: String] = [:]) {
        self.description = description
        self.owner = owner
        self.tags = tags
    }
}

/// A named, typed column: a join key, a source column, a request field or a feature.
public struct Column: Sendable, Hashable, Codable {
    /// The column's name.
    public var name: String
    /// The column's type.
    public var type: ValueType

    /// Creates a column.
    public init(name: String, type: ValueType) {
        self.name = name
        self.type = type
    }
}

/// Where each field of an object was written, so later checks can point at it.
public struct DefinitionOrigin: Sendable, Hashable, Codable {
    /// Where the object's document starts.
    public var location: SourceLocation
    /// Where each field path (`features[1].type`) was written.
    public var fields: [String: SourceLocation]

    /// Creates an origin.
    public init(location: SourceLocation, fields: [String: SourceLocation] = [:]) {
        self.location = location
        self.fields = fields
    }

    /// The location of `path`, or of its closest written parent, or of the object.
    public func location(of path: String) -> SourceLocation {
        var candidate = path
        while !candidate.isEmpty {
            if let found = fields[candidate] { return found }
            if let cut = candidate.lastIndex(where: { $0 == "." || $0 == "[" }) {
                candidate = String(candidate[..<cut])
            } else {
                break
            }
        }
        return location
    }
}

/// An entity: the thing features describe (a driver, a customer), identified
/// by one or more typed join keys.
public struct EntityDefinition: Sendable, Hashable, Codable {
    /// The entity's name.
    public var name: String
    /// The join keys identifying one instance, in order.
    public var joinKeys: [Column]
    /// Description, owner and tags.
    public var metadata: DefinitionMetadata
    /// Where it was declared.
    public var origin: DefinitionOrigin?

    /// Creates an entity.
    public init(name: String, joinKeys: [Column], metadata: DefinitionMetadata = .init(), origin: DefinitionOrigin? = nil) {
        self.name = name
        self.joinKeys = joinKeys
        self.metadata = metadata
        self.origin = origin
    }
}

/// A source of raw events: a PostgreSQL table or query, CSV files, or pushed events.
public struct SourceDefinition: Sendable, Hashable, Codable {
    /// How the agent reaches the data.
    public enum Connector: Sendable, Hashable, Codable {
        /// A table (optionally schema-qualified) or a SQL query in the customer
        /// database that the agent knows as `connection`.
        case postgres(connection: String, relation: PostgresRelation)
        /// CSV files (paths or globs, relative to the CSV directory that the
        /// agent knows as `connection`), each with a header row.
        case file(connection: String, paths: [String])
        /// Events that clients push to the agent.
        case push
    }

    /// What a `PostgresSource` reads.
    public enum PostgresRelation: Sendable, Hashable, Codable {
        /// A table or view, such as `public.trips`.
        case table(String)
        /// A SELECT statement.
        case query(String)
    }

    /// The source's name.
    public var name: String
    /// How the data is reached.
    public var connector: Connector
    /// The column holding each event's time.
    public var timestampField: String
    /// The column holding when each row was written, used to break ties.
    public var createdTimestampField: String?
    /// The declared columns other than the timestamps, in declaration order.
    public var columns: [Column]
    /// Description, owner and tags.
    public var metadata: DefinitionMetadata
    /// Where it was declared.
    public var origin: DefinitionOrigin?

    /// Creates a source.
    public init(
        name: String, connector: Connector, timestampField: String, createdTimestampField: String? = nil,
        columns: [Column], metadata: DefinitionMetadata = .init(), origin: DefinitionOrigin? = nil
    ) {
        self.name = name
        self.connector = connector
        self.timestampField = timestampField
        self.createdTimestampField = createdTimestampField
        self.columns = columns
        self.metadata = metadata
        self.origin = origin
    }

    /// The YAML kind of this source.
    public var kind: ObjectKind {
        switch connector {
        case .postgres: return .postgresSource
        case .file: return .fileSource
        case .push: return .pushSource
        }
    }

    /// Every column of the source, the timestamps included, by name.
    public var schema: [String: ValueType] {
        var schema = Dictionary(columns.map { ($0.name, $0.type) }, uniquingKeysWith: { first, _ in first })
        schema[timestampField] = .timestamp
        if let createdTimestampField { schema[createdTimestampField] = .timestamp }
        return schema
    }
}

/// An aggregation function of a time-window feature view.
public enum AggregationFunction: String, Sendable, Hashable, Codable, CaseIterable {
    case count, sum, mean, min, max, last, stddev

    /// The type of the aggregate over a column of type `input`, or nil when the
    /// function does not apply to that type.
    public func outputType(for input: ValueType) -> ValueType? {
        switch self {
        case .count: return .int64
        case .sum: return input.isInteger ? .int64 : (input.isFloatingPoint ? .float64 : nil)
        case .mean, .stddev: return input.isNumeric ? .float64 : nil
        // Windows aggregate numbers (a timestamp is its microseconds): no strings, bools or bytes.
        case .min, .max, .last: return input.isNumeric || input == .timestamp ? input : nil
        }
    }
}

/// One declarative aggregation: a function over a column, for one or more windows.
public struct AggregationDefinition: Sendable, Hashable, Codable {
    /// The aggregation function.
    public var function: AggregationFunction
    /// The source column aggregated.
    public var column: String
    /// The window lengths; one feature per window.
    public var windows: [TimeSpan]
    /// The feature name prefix; `<column>_<function>` when absent.
    public var name: String?

    /// Creates an aggregation.
    public init(function: AggregationFunction, column: String, windows: [TimeSpan], name: String? = nil) {
        self.function = function
        self.column = column
        self.windows = windows
        self.name = name
    }

    /// The feature name for one window: `<prefix>_<window>`, such as `trips_count_1d`.
    public func featureName(window: TimeSpan) -> String {
        "\(name ?? "\(column)_\(function.rawValue)")_\(window)"
    }
}

/// A feature declared by a feature view: a source column (or a column of the
/// view's SQL transformation) kept under a name and type.
public struct FeatureDefinition: Sendable, Hashable, Codable {
    /// The feature's name.
    public var name: String
    /// The feature's type.
    public var type: ValueType
    /// The source column it reads; the feature's name when absent.
    public var column: String?
    /// Free-text description of this feature.
    public var description: String?

    /// Creates a feature.
    public init(name: String, type: ValueType, column: String? = nil, description: String? = nil) {
        self.name = name
        self.type = type
        self.column = column
        self.description = description
    }

    /// The column the feature is read from.
    public var sourceColumn: String { column ?? name }
}

/// A batch feature view: features of some entities computed from one source,
/// either as plain columns (optionally through a SQL transformation) or as
/// time-window aggregations.
public struct FeatureViewDefinition: Sendable, Hashable, Codable {
    /// The view's name.
    public var name: String
    /// The entities the view's rows are keyed by.
    public var entities: [String]
    /// The source the view reads.
    public var source: String
    /// Plain features (empty for an aggregation view).
    public var features: [FeatureDefinition]
    /// A SQL query over the source, for PostgreSQL sources (plain views only).
    public var transformation: String?
    /// Time-window aggregations (empty for a plain view).
    public var aggregations: [AggregationDefinition]
    /// The tile size of aggregations: windows are computed from tiles of this
    /// length and advance by it. Defaults to the greatest common divisor of the windows.
    public var slide: TimeSpan?
    /// How long a value stays valid after its event time; nil means forever.
    public var ttl: TimeSpan?
    /// Whether values are kept in the online store for serving.
    public var online: Bool
    /// Whether values are kept in the offline store for training sets.
    public var offline: Bool
    /// When the view is materialized, if on a schedule.
    public var schedule: BatchSchedule?
    /// The earliest event time backfills start from.
    public var featureStartTime: Date?
    /// How old the newest materialized event time may grow before the view is
    /// stale; nil means twice the schedule's interval (no SLO without a schedule).
    public var freshness: TimeSpan?
    /// How long after an interval ends its rows may still land in the source: the
    /// scheduler queues each interval only this long after its end.
    public var lateness: TimeSpan?
    /// How far back each scheduled run also re-runs intervals that already ran (an
    /// idempotent replace), so rows that landed later than `lateness` still arrive.
    public var recompute: TimeSpan?
    /// The most intervals one scheduled run may re-run for `recompute`.
    public static let maximumRecomputedIntervals = 1_000
    /// Data-quality checks run on each materialization job; nil when none are declared.
    public var expectations: ViewExpectations?
    /// Description, owner and tags.
    public var metadata: DefinitionMetadata
    /// Where it was declared.
    public var origin: DefinitionOrigin?

    /// Creates a feature view.
    public init(
        name: String, entities: [String], source: String, features: [FeatureDefinition] = [],
        transformation: String? = nil, aggregations: [AggregationDefinition] = [], slide: TimeSpan? = nil,
        ttl: TimeSpan? = nil, online: Bool = true, offline: Bool = true, schedule: BatchSchedule? = nil,
        featureStartTime: Date? = nil, freshness: TimeSpan? = nil, lateness: TimeSpan? = nil, recompute: TimeSpan? = nil,
        expectations: ViewExpectations? = nil, metadata: DefinitionMetadata = .init(), origin: DefinitionOrigin? = nil
    ) {
        self.freshness = freshness
        self.lateness = lateness
        self.recompute = recompute
        self.expectations = expectations
        self.name = name
        self.entities = entities
        self.source = source
        self.features = features
        self.transformation = transformation
        self.aggregations = aggregations
        self.slide = slide
        self.ttl = ttl
        self.online = online
        self.offline = offline
        self.schedule = schedule
        self.featureStartTime = featureStartTime
        self.metadata = metadata
        self.origin = origin
    }

    /// Whether the view computes time-window aggregations.
    public var isAggregation: Bool { !aggregations.isEmpty }

    /// The tile length windows are built from: `slide`, or the greatest common
    /// divisor of all windows.
    public var effectiveSlide: TimeSpan? {
        if let slide { return slide }
        let windows = aggregations.flatMap(\.windows).map(\.seconds).filter { $0 > 0 }
        guard var divisor = windows.first else { return nil }
        for window in windows.dropFirst() {
            var (a, b) = (divisor, window)
            while b != 0 { (a, b) = (b, a % b) }
            divisor = a
        }
        return TimeSpan(seconds: divisor)
    }
}

/// A reference to a feature, or to all features, of a feature view or on-demand view.
public struct FeatureReference: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The view's name.
    public var view: String
    /// The feature's name; nil means every feature of the view.
    public var feature: String?

    /// Creates a reference.
    public init(view: String, feature: String?) {
        self.view = view
        self.feature = feature
    }

    /// Parses `view` or `view:feature`.
    public init?(parsing text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard (1...2).contains(parts.count), !parts[0].isEmpty else { return nil }
        if parts.count == 2 && parts[1].isEmpty { return nil }
        self.init(view: parts[0], feature: parts.count == 2 ? parts[1] : nil)
    }

    public var description: String { feature.map { "\(view):\($0)" } ?? view }
}

/// One output of an on-demand view: a feature computed by an expression.
public struct OnDemandOutput: Sendable, Hashable, Codable {
    /// The output feature's name.
    public var name: String
    /// The output's type.
    public var type: ValueType
    /// The expression computing it from the inputs.
    public var expression: String
    /// Free-text description of this output.
    public var description: String?

    /// Creates an output.
    public init(name: String, type: ValueType, expression: String, description: String? = nil) {
        self.name = name
        self.type = type
        self.expression = expression
        self.description = description
    }
}

/// An on-demand feature view: features computed at request time from other
/// features and from fields of the request.
public struct OnDemandFeatureViewDefinition: Sendable, Hashable, Codable {
    /// The view's name.
    public var name: String
    /// The features it reads (of feature views or other on-demand views).
    public var inputFeatures: [FeatureReference]
    /// The fields callers send with each request.
    public var requestFields: [Column]
    /// The computed features.
    public var outputs: [OnDemandOutput]
    /// Description, owner and tags.
    public var metadata: DefinitionMetadata
    /// Where it was declared.
    public var origin: DefinitionOrigin?

    /// Creates an on-demand view.
    public init(
        name: String, inputFeatures: [FeatureReference], requestFields: [Column], outputs: [OnDemandOutput],
        metadata: DefinitionMetadata = .init(), origin: DefinitionOrigin? = nil
    ) {
        self.name = name
        self.inputFeatures = inputFeatures
        self.requestFields = requestFields
        self.outputs = outputs
        self.metadata = metadata
        self.origin = origin
    }
}

/// Part of a feature service: some or all features of one view, optionally
/// pinned to one version of it.
public struct FeatureSelection: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The view's name.
    public var view: String
    /// The selected features; nil selects every feature of the view.
    public var features: [String]?
    /// The view version the selection is pinned to; nil follows the current version.
    public var version: Int?

    /// Creates a selection.
    public init(view: String, features: [String]? = nil, version: Int? = nil) {
        self.view = view
        self.features = features
        self.version = version
    }

    public var description: String {
        let pinned = version.map { "\(view)@v\($0)" } ?? view
        guard let features else { return pinned }
        return "\(pinned):[\(features.joined(separator: ","))]"
    }
}

/// A named set of features that a model consumes together.
public struct FeatureServiceDefinition: Sendable, Hashable, Codable {
    /// The service's name.
    public var name: String
    /// The selected features, in order.
    public var selections: [FeatureSelection]
    /// Description, owner and tags.
    public var metadata: DefinitionMetadata
    /// Where it was declared.
    public var origin: DefinitionOrigin?

    /// Creates a feature service.
    public init(name: String, selections: [FeatureSelection], metadata: DefinitionMetadata = .init(), origin: DefinitionOrigin? = nil) {
        self.name = name
        self.selections = selections
        self.metadata = metadata
        self.origin = origin
    }
}

/// A named entity query: the SELECT a training dataset's entity rows come
/// from, reviewed through plan and apply like any definition. Dataset
/// requests name it instead of carrying SQL, so a consumer can only run the
/// queries an editor declared; the agent runs it read-only, under the source
/// statement timeout.
public struct EntityQueryDefinition: Sendable, Hashable, Codable {
    /// The query's name.
    public var name: String
    /// The agent's PostgreSQL connection it runs on.
    public var connection: String
    /// The SELECT statement.
    public var sql: String
    /// The columns the query returns, typed, in order: exactly these are read.
    public var columns: [Column]
    /// The entities whose join keys the rows carry (for lineage and checks).
    public var entities: [String]
    /// Description, owner and tags.
    public var metadata: DefinitionMetadata
    /// Where it was declared.
    public var origin: DefinitionOrigin?

    /// Creates an entity query.
    public init(
        name: String, connection: String, sql: String, columns: [Column], entities: [String] = [],
        metadata: DefinitionMetadata = .init(), origin: DefinitionOrigin? = nil
    ) {
        self.name = name
        self.connection = connection
        self.sql = sql
        self.columns = columns
        self.entities = entities
        self.metadata = metadata
        self.origin = origin
    }
}

/// The repository's `larder.yaml`: which workspace it describes and where the
/// control plane is.
public struct RepositoryConfig: Sendable, Hashable, Codable {
    /// The workspace the repository's objects are applied to.
    public var workspace: String
    /// The control plane's base URL, such as `http://127.0.0.1:7070`.
    public var controlPlaneURL: String?

    /// Creates a configuration.
    public init(workspace: String, controlPlaneURL: String? = nil) {
        self.workspace = workspace
        self.controlPlaneURL = controlPlaneURL
    }
}

/// Every definition of one feature repository, as loaded from its files.
public struct FeatureRepository: Sendable, Hashable, Codable {
    /// The `larder.yaml` settings.
    public var config: RepositoryConfig
    /// Entities, in file order.
    public var entities: [EntityDefinition]
    /// Sources of all three kinds, in file order.
    public var sources: [SourceDefinition]
    /// Batch feature views, in file order.
    public var featureViews: [FeatureViewDefinition]
    /// On-demand views, in file order.
    public var onDemandFeatureViews: [OnDemandFeatureViewDefinition]
    /// Feature services, in file order.
    public var featureServices: [FeatureServiceDefinition]
    /// Named entity queries, in file order.
    public var entityQueries: [EntityQueryDefinition]

    /// Creates a repository.
    public init(
        config: RepositoryConfig, entities: [EntityDefinition] = [], sources: [SourceDefinition] = [],
        featureViews: [FeatureViewDefinition] = [], onDemandFeatureViews: [OnDemandFeatureViewDefinition] = [],
        featureServices: [FeatureServiceDefinition] = [], entityQueries: [EntityQueryDefinition] = []
    ) {
        self.entityQueries = entityQueries
        self.config = config
        self.entities = entities
        self.sources = sources
        self.featureViews = featureViews
        self.onDemandFeatureViews = onDemandFeatureViews
        self.featureServices = featureServices
    }

    /// How many objects of all kinds the repository declares.
    public var objectCount: Int {
        entities.count + sources.count + featureViews.count + onDemandFeatureViews.count + featureServices.count + entityQueries.count
    }
}

import Foundation

/// Reads canonical specs (as `DefinitionCanonicalizer` writes them and the
/// registry stores them) back into typed definitions: how an agent turns its
/// registry snapshot into a repository it can resolve feature requests with.
/// Descriptions and origins are not carried; semantics and the operational
/// flags are.
public enum CanonicalDecoder {
    /// Why a canonical spec cannot be read.
    public struct Invalid: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// The repository of `definitions` (whole canonical specs: `spec`, `operational`, `metadata`).
    public static func repository(workspace: String, definitions: [JobSpec.Definition]) throws(Invalid) -> FeatureRepository {
        var repository = FeatureRepository(config: RepositoryConfig(workspace: workspace))
        for definition in definitions {
            guard let kind = ObjectKind(rawValue: definition.kind) else { continue }
            let whole = Fields(definition.definition, owner: "\(definition.kind) \(definition.name)")
            let spec = try whole.object("spec")
            switch kind {
            case .entity:
                repository.entities.append(EntityDefinition(name: definition.name, joinKeys: try spec.columns("join_keys")))
            case .postgresSource, .fileSource, .pushSource:
                let connector = try spec.object("connector")
                let decoded: SourceDefinition.Connector
                switch try connector.string("type") {
                case "postgres":
                    let connection = try connector.string("connection")
                    if let table = connector.optionalString("table") {
                        decoded = .postgres(connection: connection, relation: .table(table))
                    } else {
                        decoded = .postgres(connection: connection, relation: .query(try connector.string("query")))
                    }
                case "file": decoded = .file(connection: try connector.string("connection"), paths: try connector.strings("paths"))
                default: decoded = .push
                }
                repository.sources.append(SourceDefinition(
                    name: definition.name, connector: decoded, timestampField: try spec.string("timestamp_field"),
                    createdTimestampField: spec.optionalString("created_timestamp_field"), columns: try spec.columns("columns")))
            case .featureView:
                let operational = whole.optionalObject("operational")
                var aggregations: [AggregationDefinition] = []
                for item in spec.objects("aggregations") {
                    guard let function = AggregationFunction(rawValue: try item.string("function")) else {
                        throw Invalid(description: "\(whole.owner): unknown aggregation function")
                    }
                    aggregations.append(AggregationDefinition(
                        function: function, column: try item.string("column"), windows: item.integers("windows").map(TimeSpan.init(seconds:)),
                        name: item.optionalString("name")))
                }
                repository.featureViews.append(FeatureViewDefinition(
                    name: definition.name, entities: try spec.strings("entities"), source: try spec.string("source"),
                    features: try spec.objects("features").map { feature throws(Invalid) in
                        FeatureDefinition(name: try feature.string("name"), type: try feature.type("type"), column: feature.optionalString("column"))
                    },
                    transformation: spec.optionalString("sql"), aggregations: aggregations,
                    slide: spec.optionalInteger("slide").map(TimeSpan.init(seconds:)), ttl: spec.optionalInteger("ttl").map(TimeSpan.init(seconds:)),
                    online: operational?.optionalBool("online") ?? true, offline: operational?.optionalBool("offline") ?? true,
                    schedule: try schedule(operational?.optionalObject("schedule"), owner: whole.owner),
                    featureStartTime: operational?.optionalString("feature_start_time").flatMap(RFC3339.parse),
                    freshness: operational?.optionalInteger("freshness").map(TimeSpan.init(seconds:)),
                    lateness: operational?.optionalInteger("lateness").map(TimeSpan.init(seconds:)),
                    recompute: operational?.optionalInteger("recompute").map(TimeSpan.init(seconds:)),
                    expectations: operational?.optionalObject("expectations").map(expectations)))
            case .onDemandFeatureView:
                let inputs = try spec.object("inputs")
                repository.onDemandFeatureViews.append(OnDemandFeatureViewDefinition(
                    name: definition.name,
                    inputFeatures: try inputs.strings("features").map { text throws(Invalid) in
                        guard let reference = FeatureReference(parsing: text) else { throw Invalid(description: "\(whole.owner): bad input '\(text)'") }
                        return reference
                    },
                    requestFields: try inputs.columns("request"),
                    outputs: try spec.objects("outputs").map { output throws(Invalid) in
                        OnDemandOutput(name: try output.string("name"), type: try output.type("type"), expression: try output.string("expression"))
                    }))
            case .featureService:
                repository.featureServices.append(FeatureServiceDefinition(
                    name: definition.name,
                    selections: try spec.objects("features").map { selection throws(Invalid) in
                        FeatureSelection(
                            view: try selection.string("view"), features: selection.members["features"] == nil ? nil : try selection.strings("features"),
                            version: selection.optionalInteger("version").map(Int.init))
                    }))
            case .entityQuery:
                repository.entityQueries.append(EntityQueryDefinition(
                    name: definition.name, connection: try spec.string("connection"), sql: try spec.string("sql"),
                    columns: try spec.objects("columns").map { column throws(Invalid) in
                        Column(name: try column.string("name"), type: try column.type("type"))
                    },
                    entities: try spec.strings("entities")))
            }
        }
        return repository
    }

    /// The expectations in a view's canonical operational part, if it declares any.
    public static func expectations(operational: JSONValue?) -> ViewExpectations? {
        guard let operational else { return nil }
        return Fields(operational, owner: "operational").optionalObject("expectations").map(expectations)
    }

    static func expectations(_ fields: Fields) -> ViewExpectations {
        let rows = fields.optionalObject("rows_per_job")
        var features: [FeatureExpectation] = []
        if case .object(let members)? = fields.members["features"] {
            for (name, value) in members {
                let checks = Fields(value, owner: fields.owner)
                features.append(FeatureExpectation(
                    feature: name, maxNullFraction: checks.optionalNumber("max_null_fraction"), min: checks.optionalNumber("min"),
                    max: checks.optionalNumber("max"), allowedValues: checks.members["allowed_values"] == nil ? nil : try? checks.strings("allowed_values")))
            }
        }
        return ViewExpectations(
            policy: fields.optionalString("on_violation").flatMap(ViolationPolicy.init(rawValue:)) ?? .warn,
            minRows: rows?.optionalInteger("min"), maxRows: rows?.optionalInteger("max"), features: features)
    }

    static func schedule(_ fields: Fields?, owner: String) throws(Invalid) -> BatchSchedule? {
        guard let fields else { return nil }
        if let seconds = fields.optionalInteger("every") { return .interval(TimeSpan(seconds: seconds)) }
        guard let expression = fields.optionalString("cron") else { return nil }
        do { return .cron(try CronSchedule(parsing: expression)) } catch {
            throw Invalid(description: "\(owner): schedule '\(expression)' does not parse")
        }
    }

    /// The members of one JSON object, read with errors naming the object.
    struct Fields {
        let members: [String: JSONValue]
        let owner: String

        init(_ value: JSONValue, owner: String) {
            if case .object(let members) = value { self.members = members } else { members = [:] }
            self.owner = owner
        }

        func object(_ key: String) throws(Invalid) -> Fields {
            guard case .object? = members[key] else { throw Invalid(description: "\(owner): '\(key)' is missing") }
            return Fields(members[key]!, owner: owner)
        }

        func optionalObject(_ key: String) -> Fields? {
            guard case .object? = members[key] else { return nil }
            return Fields(members[key]!, owner: owner)
        }

        func objects(_ key: String) -> [Fields] {
            guard case .array(let items)? = members[key] else { return [] }
            return items.map { Fields($0, owner: owner) }
        }

        func string(_ key: String) throws(Invalid) -> String {
            guard let value = optionalString(key) else { throw Invalid(description: "\(owner): '\(key)' is missing") }
            return value
        }

        func optionalString(_ key: String) -> String? {
            if case .string(let value)? = members[key] { return value }
            return nil
        }

        func strings(_ key: String) throws(Invalid) -> [String] {
            guard case .array(let items)? = members[key] else { throw Invalid(description: "\(owner): '\(key)' is missing") }
            return items.compactMap { if case .string(let value) = $0 { return value } else { return nil } }
        }

        func optionalInteger(_ key: String) -> Int64? {
            if case .integer(let value)? = members[key] { return value }
            return nil
        }

        func integers(_ key: String) -> [Int64] {
            guard case .array(let items)? = members[key] else { return [] }
            return items.compactMap { if case .integer(let value) = $0 { return value } else { return nil } }
        }

        func optionalBool(_ key: String) -> Bool? {
            if case .bool(let value)? = members[key] { return value }
            return nil
        }

        /// A number written as decimal text.
        func optionalNumber(_ key: String) -> Double? { optionalString(key).flatMap(Double.init) }

        func type(_ key: String) throws(Invalid) -> ValueType {
            guard let type = ValueType(rawValue: try string(key)) else { throw Invalid(description: "\(owner): '\(key)' is not a known type") }
            return type
        }

        /// A `name: type` mapping, in name order.
        func columns(_ key: String) throws(Invalid) -> [Column] {
            guard case .object(let mapping)? = members[key] else { return [] }
            return try mapping.sorted { $0.key < $1.key }.map { name, value throws(Invalid) in
                guard case .string(let text) = value, let type = ValueType(rawValue: text) else {
                    throw Invalid(description: "\(owner): column \(name) has no known type")
                }
                return Column(name: name, type: type)
            }
        }
    }
}

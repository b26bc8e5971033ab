import Crypto
import Foundation

/// Names one object of a repository: its kind and name.
public struct ObjectKey: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
    /// The object's kind.
    public var kind: ObjectKind
    /// The object's name.
    public var name: String

    /// Creates a key.
    public init(kind: ObjectKind, name: String) {
        self.kind = kind
        self.name = name
    }

    public var description: String { "\(kind) \(name)" }

    public static func < (lhs: ObjectKey, rhs: ObjectKey) -> Bool {
        (lhs.kind.rawValue, lhs.name) < (rhs.kind.rawValue, rhs.name)
    }
}

/// An edge from an object to something it reads: a source, an entity, or a
/// view, optionally pinned to one registry version.
public struct UpstreamReference: Sendable, Hashable, Codable {
    /// The object read.
    public var key: ObjectKey
    /// The registry version pinned to, if any.
    public var pinnedVersion: Int?

    /// Creates a reference.
    public init(key: ObjectKey, pinnedVersion: Int? = nil) {
        self.key = key
        self.pinnedVersion = pinnedVersion
    }
}

/// The canonical form of one definition, split by what a change to each part means.
///
/// - `semantic`: what data the object stands for (source, transformation,
///   schema, entities, aggregations, ttl, expressions). It and the hashes of
///   everything upstream make the `contentHash`, the version identity: change
///   it and the object gets a new version.
/// - `operational`: how the object is run (schedule, online/offline flags,
///   feature start time). A change updates the current version in place.
/// - `descriptive`: description, owner, tags (also per feature). A change is
///   metadata only.
public struct CanonicalDefinition: Sendable, Hashable, Codable {
    /// The object's kind and name.
    public var key: ObjectKey
    /// The parts that define the object's data.
    public var semantic: JSONValue
    /// The parts that say how the object runs.
    public var operational: JSONValue
    /// The parts that describe the object for people.
    public var descriptive: JSONValue
    /// What the object reads, in declaration order, without repeats.
    public var upstream: [UpstreamReference]
    /// The version identity: SHA-256 (hex) over the kind, the semantic spec and
    /// the content hashes of every upstream object (or their pinned versions).
    public var contentHash: String

    /// SHA-256 (hex) of the operational and descriptive parts: equal hashes
    /// mean an apply would change nothing but, possibly, the version.
    public var stateHash: String {
        let state = JSONValue.object(["operational": operational, "metadata": descriptive])
        return DefinitionCanonicalizer.hexadecimal(SHA256.hash(data: state.canonicalData))
    }

    /// The whole canonical spec as one JSON object (`kind`, `name`, `spec`,
    /// `operational`, `metadata`), as stored with each version.
    public var spec: JSONValue {
        .object([
            "kind": .string(key.kind.rawValue), "name": .string(key.name), "spec": semantic,
            "operational": operational, "metadata": descriptive,
        ])
    }
}

/// Computes the canonical definitions and content hashes of a repository.
public enum DefinitionCanonicalizer {
    /// The canonical definitions of every object in `repository`, in dependency
    /// order (entities and sources first, services last).
    ///
    /// The repository should be valid; references to missing objects are hashed
    /// as absent rather than reported.
    public static func canonicalize(_ repository: FeatureRepository) -> [CanonicalDefinition] {
        var parts: [ObjectKey: (semantic: JSONValue, operational: JSONValue, descriptive: JSONValue, upstream: [UpstreamReference])] = [:]
        var order: [ObjectKey] = []
        func add(_ key: ObjectKey, _ value: (JSONValue, JSONValue, JSONValue, [UpstreamReference])) {
            guard parts[key] == nil else { return }
            parts[key] = value
            order.append(key)
        }
        for entity in repository.entities { add(ObjectKey(kind: .entity, name: entity.name), canonical(entity)) }
        for source in repository.sources { add(ObjectKey(kind: source.kind, name: source.name), canonical(source)) }
        let viewKinds = Dictionary(
            repository.featureViews.map { ($0.name, ObjectKind.featureView) }
                + repository.onDemandFeatureViews.map { ($0.name, ObjectKind.onDemandFeatureView) },
            uniquingKeysWith: { first, _ in first })
        let sourceKinds = Dictionary(repository.sources.map { ($0.name, $0.kind) }, uniquingKeysWith: { first, _ in first })
        for view in repository.featureViews {
            add(ObjectKey(kind: .featureView, name: view.name), canonical(view, sourceKind: sourceKinds[view.source] ?? .postgresSource))
        }
        for view in repository.onDemandFeatureViews {
            add(ObjectKey(kind: .onDemandFeatureView, name: view.name), canonical(view, viewKinds: viewKinds))
        }
        for service in repository.featureServices {
            add(ObjectKey(kind: .featureService, name: service.name), canonical(service, viewKinds: viewKinds))
        }
        for query in repository.entityQueries { add(ObjectKey(kind: .entityQuery, name: query.name), canonical(query)) }

        var hashes: [ObjectKey: String] = [:]
        var visiting: Set<ObjectKey> = []
        func hash(of key: ObjectKey) -> String {
            if let known = hashes[key] { return known }
            guard let part = parts[key], visiting.insert(key).inserted else { return "absent" }
            defer { visiting.remove(key) }
            let upstream = JSONValue.array(part.upstream.map { reference in
                let target = reference.pinnedVersion.map { "version:\($0)" } ?? hash(of: reference.key)
                return .array([.string(reference.key.kind.rawValue), .string(reference.key.name), .string(target)])
            })
            let identity = JSONValue.object(["kind": .string(key.kind.rawValue), "spec": part.semantic, "upstream": upstream])
            let digest = hexadecimal(SHA256.hash(data: identity.canonicalData))
            hashes[key] = digest
            return digest
        }
        return order.map { key in
            let part = parts[key]!
            return CanonicalDefinition(
                key: key, semantic: part.semantic, operational: part.operational, descriptive: part.descriptive,
                upstream: part.upstream, contentHash: hash(of: key))
        }
    }

    /// Lowercase hexadecimal of `bytes` (a hot path: `String(format:)` costs
    /// microseconds per byte).
    public static func hexadecimal(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var output: [UInt8] = []
        output.reserveCapacity(64)
        for byte in bytes {
            output.append(digits[Int(byte >> 4)])
            output.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: output, as: UTF8.self)
    }

    static func descriptive(_ metadata: DefinitionMetadata, extra: [String: JSONValue] = [:]) -> JSONValue {
        var members: [String: JSONValue] = [
            "description": .optional(metadata.description), "owner": .optional(metadata.owner),
            "tags": .object(metadata.tags.mapValues(JSONValue.string)),
        ]
        members.merge(extra) { _, new in new }
        return .compactObject(members)
    }

    static func columnSet(_ columns: [Column]) -> JSONValue {
        .object(Dictionary(columns.map { ($0.name, JSONValue.string($0.type.rawValue)) }, uniquingKeysWith: { first, _ in first }))
    }

    static func canonical(_ entity: EntityDefinition) -> (JSONValue, JSONValue, JSONValue, [UpstreamReference]) {
        // Join keys are written as a YAML mapping, so their order carries no meaning.
        (.object(["join_keys": columnSet(entity.joinKeys)]), .object([:]), descriptive(entity.metadata), [])
    }

    static func canonical(_ source: SourceDefinition) -> (JSONValue, JSONValue, JSONValue, [UpstreamReference]) {
        var connector: [String: JSONValue]
        switch source.connector {
        case .postgres(let connection, .table(let table)):
            connector = ["type": "postgres", "connection": .string(connection), "table": .string(table)]
        case .postgres(let connection, .query(let query)):
            connector = ["type": "postgres", "connection": .string(connection), "query": .string(query)]
        case .file(let connection, let paths):
            connector = ["type": "file", "connection": .string(connection), "paths": .array(Set(paths).sorted().map(JSONValue.string))]
        case .push:
            connector = ["type": "push"]
        }
        let semantic = JSONValue.compactObject([
            "connector": .object(connector), "timestamp_field": .string(source.timestampField),
            "created_timestamp_field": .optional(source.createdTimestampField), "columns": columnSet(source.columns),
        ])
        return (semantic, .object([:]), descriptive(source.metadata), [])
    }

    static func canonical(_ view: FeatureViewDefinition, sourceKind: ObjectKind) -> (JSONValue, JSONValue, JSONValue, [UpstreamReference]) {
        let features = JSONValue.array(view.features.map {
            .object(["name": .string($0.name), "type": .string($0.type.rawValue), "column": .string($0.sourceColumn)])
        })
        let aggregations = JSONValue.array(view.aggregations.map { aggregation in
            .object([
                "function": .string(aggregation.function.rawValue), "column": .string(aggregation.column),
                "windows": .array(aggregation.windows.map { .integer($0.seconds) }),
                "name": .string(aggregation.name ?? "\(aggregation.column)_\(aggregation.function.rawValue)"),
            ])
        })
        let semantic = JSONValue.compactObject([
            "entities": .array(view.entities.map(JSONValue.string)), "source": .string(view.source),
            "features": view.isAggregation ? .null : features, "sql": .optional(view.transformation),
            "aggregations": view.isAggregation ? aggregations : .null,
            "slide": view.isAggregation ? (view.effectiveSlide.map { .integer($0.seconds) } ?? .null) : .null,
            "ttl": view.ttl.map { .integer($0.seconds) } ?? .null,
        ])
        var schedule = JSONValue.null
        switch view.schedule {
        case .interval(let span): schedule = .object(["every": .integer(span.seconds)])
        case .cron(let cron): schedule = .object(["cron": .string(cron.expression)])
        case nil: break
        }
        let operational = JSONValue.compactObject([
            "online": .bool(view.online), "offline": .bool(view.offline), "schedule": schedule,
            "feature_start_time": .optional(view.featureStartTime.map(RFC3339.format)),
            "freshness": view.freshness.map { .integer($0.seconds) } ?? .null,
            "lateness": view.lateness.map { .integer($0.seconds) } ?? .null,
            "recompute": view.recompute.map { .integer($0.seconds) } ?? .null,
            "expectations": view.expectations.map(canonical) ?? .null,
        ])
        let featureDescriptions = view.features.compactMap { feature in feature.description.map { (feature.name, JSONValue.string($0)) } }
        let described = descriptive(
            view.metadata,
            extra: featureDescriptions.isEmpty ? [:] : ["features": .object(Dictionary(featureDescriptions, uniquingKeysWith: { a, _ in a }))])
        let upstream = [UpstreamReference(key: ObjectKey(kind: sourceKind, name: view.source))]
            + unique(view.entities).map { UpstreamReference(key: ObjectKey(kind: .entity, name: $0)) }
        return (semantic, operational, described, upstream)
    }

    /// Expectations as canonical JSON. Canonical specs hold no fractional
    /// numbers, so limits are written as their shortest exact decimal text.
    static func canonical(_ expectations: ViewExpectations) -> JSONValue {
        func number(_ value: Double?) -> JSONValue { value.map { .string("\($0)") } ?? .null }
        let features = expectations.features.map { feature in
            (feature.feature, JSONValue.compactObject([
                "max_null_fraction": number(feature.maxNullFraction), "min": number(feature.min), "max": number(feature.max),
                "allowed_values": feature.allowedValues.map { .array($0.map(JSONValue.string)) } ?? .null,
            ]))
        }
        return .compactObject([
            "on_violation": .string(expectations.policy.rawValue),
            "rows_per_job": expectations.minRows == nil && expectations.maxRows == nil ? .null : .compactObject([
                "min": expectations.minRows.map(JSONValue.integer) ?? .null, "max": expectations.maxRows.map(JSONValue.integer) ?? .null,
            ]),
            "features": .object(Dictionary(features, uniquingKeysWith: { first, _ in first })),
        ])
    }

    static func canonical(
        _ view: OnDemandFeatureViewDefinition, viewKinds: [String: ObjectKind]
    ) -> (JSONValue, JSONValue, JSONValue, [UpstreamReference]) {
        let semantic = JSONValue.object([
            "inputs": .object([
                "features": .array(view.inputFeatures.map { .string($0.description) }), "request": columnSet(view.requestFields),
            ]),
            "outputs": .array(view.outputs.map {
                .object(["name": .string($0.name), "type": .string($0.type.rawValue), "expression": .string($0.expression)])
            }),
        ])
        let outputDescriptions = view.outputs.compactMap { output in output.description.map { (output.name, JSONValue.string($0)) } }
        let described = descriptive(
            view.metadata,
            extra: outputDescriptions.isEmpty ? [:] : ["outputs": .object(Dictionary(outputDescriptions, uniquingKeysWith: { a, _ in a }))])
        let upstream = unique(view.inputFeatures.map(\.view)).map {
            UpstreamReference(key: ObjectKey(kind: viewKinds[$0] ?? .featureView, name: $0))
        }
        return (semantic, .object([:]), described, upstream)
    }

    static func canonical(
        _ service: FeatureServiceDefinition, viewKinds: [String: ObjectKind]
    ) -> (JSONValue, JSONValue, JSONValue, [UpstreamReference]) {
        let semantic = JSONValue.object([
            "features": .array(service.selections.map { selection in
                .compactObject([
                    "view": .string(selection.view),
                    "features": selection.features.map { .array($0.map(JSONValue.string)) } ?? .null,
                    "version": selection.version.map { .integer(Int64($0)) } ?? .null,
                ])
            }),
        ])
        var seen: Set<String> = []
        var upstream: [UpstreamReference] = []
        for selection in service.selections where seen.insert("\(selection.view)@\(selection.version ?? 0)").inserted {
            upstream.append(UpstreamReference(
                key: ObjectKey(kind: viewKinds[selection.view] ?? .featureView, name: selection.view), pinnedVersion: selection.version))
        }
        return (semantic, .object([:]), descriptive(service.metadata), upstream)
    }

    static func canonical(_ query: EntityQueryDefinition) -> (JSONValue, JSONValue, JSONValue, [UpstreamReference]) {
        let semantic = JSONValue.object([
            "connection": .string(query.connection), "sql": .string(query.sql),
            "columns": .array(query.columns.map { .object(["name": .string($0.name), "type": .string($0.type.rawValue)]) }),
            "entities": .array(query.entities.map(JSONValue.string)),
        ])
        let upstream = unique(query.entities).map { UpstreamReference(key: ObjectKey(kind: .entity, name: $0)) }
        return (semantic, .object([:]), descriptive(query.metadata), upstream)
    }

    static func unique(_ names: [String]) -> [String] {
        var seen: Set<String> = []
        return names.filter { seen.insert($0).inserted }
    }
}

extension JSONValue: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
}

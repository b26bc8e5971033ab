import Foundation
import Shared

/// Why a feature request cannot be resolved: what it names does not exist.
public enum ServingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No feature service of that name.
    case unknownService(String)
    /// No feature view or on-demand view of that name.
    case unknownView(String)
    /// The view has no such feature.
    case unknownFeature(view: String, feature: String)
    /// A reference that is not `view:feature` or `view`.
    case malformedReference(String)
    /// The registry snapshot cannot be read (the agent keeps serving with the one before).
    case unreadableSnapshot(String)

    public var description: String {
        switch self {
        case .unknownService(let name): return "no feature service named '\(name)'"
        case .unknownView(let name): return "no feature view or on-demand view named '\(name)'"
        case .unknownFeature(let view, let feature): return "view '\(view)' has no feature '\(feature)'"
        case .malformedReference(let text): return "'\(text)' is not a feature reference such as driver_hourly_stats:conv_rate"
        case .unreadableSnapshot(let detail): return "the registry snapshot cannot be read: \(detail)"
        }
    }
}

/// A feature request resolved against the registry: each output column and
/// where its value comes from, the stored views to look up, the join keys and
/// request fields callers must send.
public struct ResolvedRequest: Sendable {
    /// Where one output's value comes from.
    public enum Source: Sendable, Equatable {
        /// A stored feature of a feature view's version, read from the online store.
        case stored(view: String, version: Int, feature: String)
        /// An on-demand output, computed from other outputs and request fields.
        case onDemand(view: String, output: String)
    }

    /// One output column, named `view:feature`.
    public struct Output: Sendable {
        public var name: String
        public var type: ValueType
        public var source: Source
    }

    /// The columns of the answer, in request order (a service's in its order).
    public var outputs: [Output]
    /// The stored views read, with their versions and join keys.
    public var views: [(view: String, version: Int, keys: [Column])]
    /// The join keys an entity row must carry (every stored view's, once each).
    public var joinKeys: [Column]
    /// The request fields the on-demand outputs read.
    public var requestFields: [Column]
    /// The compiled expression of each on-demand output, by `view:output`.
    public var expressions: [String: CompiledExpression]
}

/// The agent's registry, ready to resolve feature requests: built once per
/// registry snapshot (decoding its definitions and compiling every on-demand
/// expression), then shared by every request.
public struct ServingCatalog: Sendable {
    /// The registry revision it was built from.
    public let revision: Int64
    let repository: FeatureRepository
    /// Each view's features with their types (feature views and on-demand views).
    let schemas: [String: [Column]]
    /// Each object's current version, by name.
    let versions: [String: Int]
    /// Each feature view's join keys, in order.
    let joinKeys: [String: [Column]]
    /// Each on-demand view's compiled outputs and what they read.
    let onDemand: [String: (inputs: [ExpressionInput], outputs: [String: CompiledExpression])]

    /// Builds the catalog of `snapshot`.
    public init(snapshot: AgentRegistrySnapshot) throws(ServingError) {
        let repository: FeatureRepository
        do { repository = try CanonicalDecoder.repository(workspace: snapshot.workspace, definitions: snapshot.definitions) } catch {
            throw .unreadableSnapshot(error.description)
        }
        self.revision = snapshot.revision
        self.repository = repository
        schemas = RepositoryValidator.viewSchemas(of: repository)
        versions = Dictionary(snapshot.definitions.map { ($0.name, $0.version) }, uniquingKeysWith: { first, _ in first })
        let entities = Dictionary(repository.entities.map { ($0.name, $0.joinKeys) }, uniquingKeysWith: { first, _ in first })
        joinKeys = Dictionary(repository.featureViews.map { view in (view.name, view.entities.flatMap { entities[$0] ?? [] }) }, uniquingKeysWith: { first, _ in first })
        var onDemand: [String: (inputs: [ExpressionInput], outputs: [String: CompiledExpression])] = [:]
        for view in repository.onDemandFeatureViews {
            guard let inputs = RepositoryValidator.expressionInputs(of: view, schemas: schemas) else {
                throw .unreadableSnapshot("on-demand view \(view.name) reads a feature that does not exist")
            }
            var outputs: [String: CompiledExpression] = [:]
            for output in view.outputs {
                do { outputs[output.name] = try CompiledExpression.compile(output.expression, inputs: inputs, output: output.type) } catch {
                    throw .unreadableSnapshot("\(view.name).\(output.name): \(error)")
                }
            }
            onDemand[view.name] = (inputs, outputs)
        }
        self.onDemand = onDemand
    }

    /// The features of feature service `name`.
    public func resolve(service name: String) throws(ServingError) -> ResolvedRequest {
        guard let service = repository.featureServices.first(where: { $0.name == name }) else { throw .unknownService(name) }
        var references: [FeatureReference] = []
        for selection in service.selections {
            if let features = selection.features {
                references += features.map { FeatureReference(view: selection.view, feature: $0) }
            } else {
                references.append(FeatureReference(view: selection.view, feature: nil))
            }
        }
        return try resolve(references)
    }

    /// The features of `references` (`view:feature`, or `view` for all of a view's).
    public func resolve(references texts: [String]) throws(ServingError) -> ResolvedRequest {
        var references: [FeatureReference] = []
        for text in texts {
            guard let reference = FeatureReference(parsing: text) else { throw .malformedReference(text) }
            references.append(reference)
        }
        return try resolve(references)
    }

    func resolve(_ references: [FeatureReference]) throws(ServingError) -> ResolvedRequest {
        var request = ResolvedRequest(outputs: [], views: [], joinKeys: [], requestFields: [], expressions: [:])
        var seenOutputs: Set<String> = [], seenViews: Set<String> = []
        func addView(_ name: String) {
            // Feature views only (on-demand views reading on-demand views are not served yet).
            guard joinKeys[name] != nil, seenViews.insert(name).inserted, let version = versions[name] else { return }
            let keys = joinKeys[name] ?? []
            request.views.append((name, version, keys))
            for key in keys where !request.joinKeys.contains(where: { $0.name == key.name }) { request.joinKeys.append(key) }
        }
        for reference in references {
            guard let schema = schemas[reference.view] else { throw .unknownView(reference.view) }
            let features = try reference.feature.map { feature throws(ServingError) in
                guard let column = schema.first(where: { $0.name == feature }) else { throw .unknownFeature(view: reference.view, feature: feature) }
                return [column]
            } ?? schema
            for feature in features where seenOutputs.insert("\(reference.view):\(feature.name)").inserted {
                if let compiled = onDemand[reference.view] {
                    let name = "\(reference.view):\(feature.name)"
                    request.outputs.append(ResolvedRequest.Output(name: name, type: feature.type, source: .onDemand(view: reference.view, output: feature.name)))
                    request.expressions[name] = compiled.outputs[feature.name]
                    // What the expression reads: stored views, and request fields.
                    for input in compiled.inputs {
                        if let view = input.view {
                            addView(view)
                        } else if !request.requestFields.contains(where: { $0.name == input.name }) {
                            request.requestFields.append(Column(name: input.name, type: input.type))
                        }
                    }
                } else {
                    addView(reference.view)
                    request.outputs.append(ResolvedRequest.Output(
                        name: "\(reference.view):\(feature.name)", type: feature.type,
                        source: .stored(view: reference.view, version: versions[reference.view] ?? 1, feature: feature.name)))
                }
            }
        }
        return request
    }

    /// The inputs of on-demand view `view`'s expressions, in the order `evaluate` takes them.
    public func expressionInputs(of view: String) -> [ExpressionInput] { onDemand[view]?.inputs ?? [] }
}

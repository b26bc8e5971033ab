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
    /// The agent has no registry snapshot yet.
    case noRegistry
    /// No push source of that name.
    case unknownSource(String)

    public var description: String {
        switch self {
        case .unknownService(let name): return "no feature service named '\(name)'"
        case .unknownView(let name): return "no feature view or on-demand view named '\(name)'"
        case .unknownFeature(let view, let feature): return "view '\(view)' has no feature '\(feature)'"
        case .malformedReference(let text): return "'\(text)' is not a feature reference such as driver_hourly_stats:conv_rate"
        case .unreadableSnapshot(let detail): return "the registry snapshot cannot be read: \(detail)"
        case .unknownSource(let name): return "no push source named '\(name)'"
        case .noRegistry: return "the agent has no registry snapshot yet; it fetches one from the control plane when it connects"
        }
    }
}

/// A feature request resolved against the registry: the output columns and
/// where each value comes from, the stored views to read (each into which
/// columns), the on-demand outputs to compute (in dependency order), and the
/// join keys and request fields callers must send. Built once per service and
/// registry snapshot, then used by every request.
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

    /// One stored view version to read, and into which columns.
    public struct ViewRead: Sendable {
        public var view: String
        public var version: Int
        /// Its join keys, in order.
        public var keys: [Column]
        /// Each feature read, with its declared type and its column.
        public var reads: [(feature: String, type: ValueType, column: Int)]
    }

    /// What an on-demand expression reads.
    public enum Input: Sendable, Equatable {
        /// The value of a column (stored, or computed before).
        case column(Int)
        /// A request field, by its index in `requestFields`.
        case requestField(Int)
    }

    /// One on-demand output to compute into `column`.
    public struct Derivation: Sendable {
        public var column: Int
        public var expression: CompiledExpression
        /// The expression's inputs, in the order `evaluate` takes them.
        public var inputs: [Input]
        /// The columns the expression actually reads: its value is as old as the oldest of them.
        public var timedColumns: [Int]
    }

    /// The columns of the answer, in request order (a service's in its order).
    public var outputs: [Output]
    /// Columns in all: the outputs, then stored or computed inputs of on-demand outputs not requested.
    public var width: Int
    /// The stored views read, with their versions and join keys.
    public var views: [ViewRead]
    /// The on-demand outputs to compute, each after those it reads.
    public var derivations: [Derivation]
    /// The join keys an entity row must carry (every stored view's, once each).
    public var joinKeys: [Column]
    /// The request fields the on-demand outputs read.
    public var requestFields: [Column]
    /// The compiled expression of each requested on-demand output, by `view:output`.
    public var expressions: [String: CompiledExpression]
    /// The answer's opening (service, features, revision) once written for a
    /// service resolved by the reader: the same for every read of it.
    var answerOpening: [UInt8]?
}

/// The agent's registry, ready to resolve feature requests: built once per
/// registry snapshot (decoding its definitions and compiling every on-demand
/// expression), then shared by every request.
public struct ServingCatalog: Sendable {
    /// The registry revision it was built from.
    public let revision: Int64
    let repository: FeatureRepository
    /// The workspace the registry is of.
    var workspace: String { repository.config.workspace }
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
        var pins: [String: Int] = [:]
        for selection in service.selections {
            if let version = selection.version { pins[selection.view] = version }
            if let features = selection.features {
                references += features.map { FeatureReference(view: selection.view, feature: $0) }
            } else {
                references.append(FeatureReference(view: selection.view, feature: nil))
            }
        }
        return try resolve(references, pins: pins)
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

    func resolve(_ references: [FeatureReference], pins: [String: Int] = [:]) throws(ServingError) -> ResolvedRequest {
        var builder = RequestBuilder(catalog: self, pins: pins)
        // The requested outputs take the first columns, in order.
        var requested: [(view: String, feature: Column)] = []
        var seen: Set<String> = []
        for reference in references {
            guard let schema = schemas[reference.view] else { throw .unknownView(reference.view) }
            let features = try reference.feature.map { feature throws(ServingError) in
                guard let column = schema.first(where: { $0.name == feature }) else { throw .unknownFeature(view: reference.view, feature: feature) }
                return [column]
            } ?? schema
            for feature in features where seen.insert("\(reference.view):\(feature.name)").inserted {
                requested.append((reference.view, feature))
                builder.addOutput(view: reference.view, feature: feature)
            }
        }
        // Then what the on-demand outputs read, computed in dependency order.
        for (view, feature) in requested where onDemand[view] != nil {
            let target = builder.column(onDemand: view, output: feature.name)
            try builder.derive(view: view, output: feature.name, into: target)
        }
        return builder.request
    }

    /// The inputs of on-demand view `view`'s expressions, in the order `evaluate` takes them.
    public func expressionInputs(of view: String) -> [ExpressionInput] { onDemand[view]?.inputs ?? [] }
}

/// Builds a `ResolvedRequest`: assigns columns, groups stored reads by view
/// version, and orders on-demand computations after their inputs.
private struct RequestBuilder {
    let catalog: ServingCatalog
    /// Versions a feature service pins, by view.
    let pins: [String: Int]
    var request = ResolvedRequest(outputs: [], width: 0, views: [], derivations: [], joinKeys: [], requestFields: [], expressions: [:])
    /// Each column's identity (`view@version:feature` stored, `view:output` computed) → its index.
    var columns: [String: Int] = [:]
    var derived: Set<Int> = []
    var inProgress: Set<Int> = []

    init(catalog: ServingCatalog, pins: [String: Int]) {
        self.catalog = catalog
        self.pins = pins
    }

    func version(of view: String) -> Int { pins[view] ?? catalog.versions[view] ?? 1 }

    /// Adds a requested output as the next column.
    mutating func addOutput(view: String, feature: Column) {
        let name = "\(view):\(feature.name)"
        if catalog.onDemand[view] != nil {
            request.outputs.append(.init(name: name, type: feature.type, source: .onDemand(view: view, output: feature.name)))
            request.expressions[name] = catalog.onDemand[view]?.outputs[feature.name]
            columns[name] = newColumn()
        } else {
            let version = version(of: view)
            request.outputs.append(.init(name: name, type: feature.type, source: .stored(view: view, version: version, feature: feature.name)))
            addRead(view: view, version: version, feature: feature, column: newColumn())
        }
    }

    mutating func newColumn() -> Int {
        request.width += 1
        return request.width - 1
    }

    /// The column of on-demand output `view:output`, added (not requested) if new.
    mutating func column(onDemand view: String, output: String) -> Int {
        if let column = columns["\(view):\(output)"] { return column }
        let column = newColumn()
        columns["\(view):\(output)"] = column
        return column
    }

    /// The column of stored feature `view:feature`, read (not requested) if new.
    mutating func column(stored view: String, feature: Column) -> Int {
        let version = version(of: view)
        if let column = columns["\(view)@\(version):\(feature.name)"] { return column }
        let column = newColumn()
        addRead(view: view, version: version, feature: feature, column: column)
        return column
    }

    mutating func addRead(view: String, version: Int, feature: Column, column: Int) {
        columns["\(view)@\(version):\(feature.name)"] = column
        if let index = request.views.firstIndex(where: { $0.view == view && $0.version == version }) {
            request.views[index].reads.append((feature.name, feature.type, column))
            return
        }
        let keys = catalog.joinKeys[view] ?? []
        request.views.append(.init(view: view, version: version, keys: keys, reads: [(feature.name, feature.type, column)]))
        for key in keys where !request.joinKeys.contains(where: { $0.name == key.name }) { request.joinKeys.append(key) }
    }

    /// Adds the computation of `view:output` into `column`, after everything it reads.
    mutating func derive(view: String, output: String, into target: Int) throws(ServingError) {
        guard !derived.contains(target) else { return }
        guard inProgress.insert(target).inserted, let compiled = catalog.onDemand[view], let expression = compiled.outputs[output] else {
            throw .unreadableSnapshot("on-demand view \(view) reads itself or a missing output \(output)")
        }
        var inputs: [ResolvedRequest.Input] = []
        for input in compiled.inputs {
            if let source = input.view {
                if catalog.onDemand[source] != nil {
                    let inputColumn = column(onDemand: source, output: input.name)
                    try derive(view: source, output: input.name, into: inputColumn)
                    inputs.append(.column(inputColumn))
                } else {
                    inputs.append(.column(column(stored: source, feature: Column(name: input.name, type: input.type))))
                }
            } else if let index = request.requestFields.firstIndex(where: { $0.name == input.name }) {
                inputs.append(.requestField(index))
            } else {
                request.requestFields.append(Column(name: input.name, type: input.type))
                inputs.append(.requestField(request.requestFields.count - 1))
            }
        }
        let timed = expression.used.compactMap { index -> Int? in
            if index < inputs.count, case .column(let column) = inputs[index] { return column }
            return nil
        }
        request.derivations.append(.init(column: target, expression: expression, inputs: inputs, timedColumns: timed))
        derived.insert(target)
        inProgress.remove(target)
    }
}

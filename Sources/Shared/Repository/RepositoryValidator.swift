/// The checks that need the whole repository: unique names, references that
/// resolve, types that agree between objects, and no cycles among on-demand views.
public enum RepositoryValidator {
    /// Every cross-object mistake in `repository`.
    public static func validate(_ repository: FeatureRepository) -> [RepositoryDiagnostic] {
        var check = Check(repository: repository)
        check.uniqueNames()
        for view in repository.featureViews { check.featureView(view) }
        for view in repository.onDemandFeatureViews { check.onDemandView(view) }
        check.onDemandCycles()
        for service in repository.featureServices { check.service(service) }
        for query in repository.entityQueries { check.entityQuery(query) }
        return check.diagnostics
    }

    /// The features each view (batch or on-demand) offers, with their types,
    /// as far as they can be worked out from the definitions.
    public static func viewSchemas(of repository: FeatureRepository) -> [String: [Column]] {
        var schemas: [String: [Column]] = [:]
        let sources = Dictionary(repository.sources.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for view in repository.featureViews where schemas[view.name] == nil {
            schemas[view.name] = outputFeatures(of: view, source: sources[view.source])
        }
        for view in repository.onDemandFeatureViews where schemas[view.name] == nil {
            schemas[view.name] = view.outputs.map { Column(name: $0.name, type: $0.type) }
        }
        return schemas
    }

    /// The features a batch view produces: its declared features, or one per
    /// aggregation and window (typed from the source column when known).
    public static func outputFeatures(of view: FeatureViewDefinition, source: SourceDefinition?) -> [Column] {
        guard view.isAggregation else { return view.features.map { Column(name: $0.name, type: $0.type) } }
        let schema = source?.schema ?? [:]
        return view.aggregations.flatMap { aggregation in
            aggregation.windows.map { window in
                let input = schema[aggregation.column] ?? .float64
                return Column(
                    name: aggregation.featureName(window: window),
                    type: aggregation.function.outputType(for: input) ?? .float64)
            }
        }
    }

    /// What an on-demand view's expressions may name: each input feature
    /// (every feature of a whole-view input), typed, then the request fields;
    /// nil when an input does not resolve.
    public static func expressionInputs(of view: OnDemandFeatureViewDefinition, schemas: [String: [Column]]) -> [ExpressionInput]? {
        var inputs: [ExpressionInput] = []
        for reference in view.inputFeatures {
            guard let schema = schemas[reference.view] else { return nil }
            if let feature = reference.feature {
                guard let column = schema.first(where: { $0.name == feature }) else { return nil }
                inputs.append(ExpressionInput(name: column.name, view: reference.view, type: column.type))
            } else {
                inputs += schema.map { ExpressionInput(name: $0.name, view: reference.view, type: $0.type) }
            }
        }
        return inputs + view.requestFields.map { ExpressionInput(name: $0.name, view: nil, type: $0.type) }
    }

    private struct Check {
        let repository: FeatureRepository
        let entities: [String: EntityDefinition]
        let sources: [String: SourceDefinition]
        let schemas: [String: [Column]]
        var diagnostics: [RepositoryDiagnostic] = []

        init(repository: FeatureRepository) {
            self.repository = repository
            entities = Dictionary(repository.entities.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
            sources = Dictionary(repository.sources.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
            schemas = RepositoryValidator.viewSchemas(of: repository)
        }

        mutating func report(
            _ code: RepositoryDiagnostic.Code, _ object: String, _ origin: DefinitionOrigin?, _ path: String, _ message: String,
            hint: String? = nil
        ) {
            let location = origin?.location(of: path) ?? SourceLocation(file: "", line: 1, column: 1)
            diagnostics.append(RepositoryDiagnostic(code: code, location: location, object: object, fieldPath: path, message: message, hint: hint))
        }

        mutating func uniqueNames() {
            var seen: [String: (kind: ObjectKind, origin: DefinitionOrigin?)] = [:]
            var all: [(ObjectKind, String, DefinitionOrigin?)] = []
            all += repository.entities.map { (.entity, $0.name, $0.origin) }
            all += repository.sources.map { ($0.kind, $0.name, $0.origin) }
            all += repository.featureViews.map { (.featureView, $0.name, $0.origin) }
            all += repository.onDemandFeatureViews.map { (.onDemandFeatureView, $0.name, $0.origin) }
            all += repository.featureServices.map { (.featureService, $0.name, $0.origin) }
            all += repository.entityQueries.map { (.entityQuery, $0.name, $0.origin) }
            all.sort { ($0.2?.location ?? SourceLocation(file: "", line: 0, column: 0)) < ($1.2?.location ?? SourceLocation(file: "", line: 0, column: 0)) }
            for (kind, name, origin) in all {
                let key = "\(kind.namespace)/\(name)"
                if let first = seen[key] {
                    let place = first.origin.map { " at \($0.location)" } ?? ""
                    report(
                        .duplicateName, "\(kind) \(name)", origin, "name",
                        "the name '\(name)' is already used by \(first.kind) \(name)\(place)",
                        hint: kind.namespace == "view" ? "feature views and on-demand views share one namespace" : "give each object its own name")
                } else {
                    seen[key] = (kind, origin)
                }
            }
        }

        mutating func featureView(_ view: FeatureViewDefinition) {
            let object = "FeatureView \(view.name)"
            for (index, name) in view.entities.enumerated() where entities[name] == nil {
                report(
                    .unknownReference, object, view.origin, "entities[\(index)]", "no Entity named '\(name)'",
                    hint: SpellingSuggestion.hint(for: name, among: entities.keys.sorted()))
            }
            guard let source = sources[view.source] else {
                report(
                    .unknownReference, object, view.origin, "source", "no source named '\(view.source)'",
                    hint: SpellingSuggestion.hint(for: view.source, among: sources.keys.sorted()))
                return
            }
            if view.transformation != nil, source.kind != .postgresSource {
                report(
                    .conflictingFields, object, view.origin, "sql",
                    "'sql' needs a PostgresSource, but '\(source.name)' is a \(source.kind)",
                    hint: "transform CSV or pushed data with plain features or aggregations")
            }
            if case .push = source.connector, view.schedule != nil {
                report(
                    .invalidSchedule, object, view.origin, "schedule",
                    "views over the PushSource '\(source.name)' are written by pushes, not on a schedule",
                    hint: "remove 'schedule'")
            }
            let schema = source.schema
            // With a SQL transformation the view's columns come from the query,
            // which only the agent can run; nothing more is known here.
            let checkColumns = view.transformation == nil
            if checkColumns {
                for (index, name) in view.entities.enumerated() {
                    for key in entities[name]?.joinKeys ?? [] {
                        guard let type = schema[key.name] else {
                            report(
                                .unknownReference, object, view.origin, "entities[\(index)]",
                                "source '\(source.name)' has no column '\(key.name)', the join key of entity '\(name)'",
                                hint: "declare '\(key.name): \(key.type)' in the source's columns")
                            continue
                        }
                        if type != key.type {
                            report(
                                .typeMismatch, object, view.origin, "entities[\(index)]",
                                "join key '\(key.name)' of entity '\(name)' is \(key.type), but source '\(source.name)' declares it \(type)")
                        }
                    }
                }
            }
            var names: [String: String] = [:]
            for (index, feature) in view.features.enumerated() {
                let path = "features[\(index)]"
                if names.updateValue(path, forKey: feature.name) != nil {
                    report(.duplicateName, object, view.origin, "\(path).name", "feature '\(feature.name)' is declared twice")
                }
                guard checkColumns else { continue }
                guard let type = schema[feature.sourceColumn] else {
                    report(
                        .unknownReference, object, view.origin, feature.column == nil ? "\(path).name" : "\(path).column",
                        "source '\(source.name)' has no column '\(feature.sourceColumn)'",
                        hint: SpellingSuggestion.hint(for: feature.sourceColumn, among: schema.keys.sorted()))
                    continue
                }
                if type != feature.type {
                    report(
                        .typeMismatch, object, view.origin, "\(path).type",
                        "feature '\(feature.name)' is declared \(feature.type), but column '\(feature.sourceColumn)' of '\(source.name)' is \(type)",
                        hint: "declare it as \(type)")
                }
            }
            aggregations(view, object: object, source: source, schema: schema)
            expectations(view, object: object, source: source)
        }

        /// Checks that expectations name features of the view and suit their types.
        mutating func expectations(_ view: FeatureViewDefinition, object: String, source: SourceDefinition) {
            guard let expectations = view.expectations else { return }
            if case .push = source.connector {
                report(
                    .conflictingFields, object, view.origin, "expectations",
                    "expectations are checked on materialization jobs, but views over the PushSource '\(source.name)' are written by pushes",
                    hint: "remove 'expectations', or declare them on a view over a batch source")
                return
            }
            let outputs = RepositoryValidator.outputFeatures(of: view, source: source)
            for expectation in expectations.features {
                let path = "expectations.features.\(expectation.feature)"
                guard let type = outputs.first(where: { $0.name == expectation.feature })?.type else {
                    report(
                        .unknownFeature, object, view.origin, path, "the view has no feature '\(expectation.feature)'",
                        hint: SpellingSuggestion.hint(for: expectation.feature, among: outputs.map(\.name)))
                    continue
                }
                if expectation.min != nil || expectation.max != nil, !(type.isInteger || type.isFloatingPoint) {
                    report(
                        .typeMismatch, object, view.origin, joinPath(path, expectation.min != nil ? "min" : "max"),
                        "min and max apply to numbers, but '\(expectation.feature)' is \(type)",
                        hint: type == .string || type == .bool ? "list the values it may take under allowed_values" : nil)
                }
                guard let allowed = expectation.allowedValues else { continue }
                let valuePath = joinPath(path, "allowed_values")
                switch type {
                case .string: break
                case .bool:
                    for value in allowed where !["true", "false"].contains(value.lowercased()) {
                        report(.typeMismatch, object, view.origin, valuePath, "'\(value)' is not a value of the bool feature '\(expectation.feature)'")
                    }
                case _ where type.isInteger:
                    for value in allowed where Int64(value) == nil {
                        report(.typeMismatch, object, view.origin, valuePath, "'\(value)' is not a whole number, the type of '\(expectation.feature)'")
                    }
                default:
                    report(
                        .typeMismatch, object, view.origin, valuePath,
                        "allowed_values applies to string, integer and bool features, but '\(expectation.feature)' is \(type)",
                        hint: "bound it with min and max instead")
                }
            }
        }

        mutating func aggregations(_ view: FeatureViewDefinition, object: String, source: SourceDefinition, schema: [String: ValueType]) {
            guard view.isAggregation else { return }
            var names: Set<String> = []
            let slide = view.effectiveSlide
            for (index, aggregation) in view.aggregations.enumerated() {
                let path = "aggregations[\(index)]"
                if let type = schema[aggregation.column] {
                    if aggregation.function.outputType(for: type) == nil {
                        report(
                            .typeMismatch, object, view.origin, "\(path).function",
                            "\(aggregation.function.rawValue) cannot aggregate '\(aggregation.column)' of type \(type)",
                            hint: [.min, .max, .last].contains(aggregation.function)
                                ? "\(aggregation.function.rawValue) needs a number or a timestamp; count applies to any column"
                                : "\(aggregation.function.rawValue) needs a numeric column; count applies to any column")
                    }
                } else {
                    report(
                        .unknownReference, object, view.origin, "\(path).column",
                        "source '\(source.name)' has no column '\(aggregation.column)'",
                        hint: SpellingSuggestion.hint(for: aggregation.column, among: schema.keys.sorted()))
                }
                for window in aggregation.windows {
                    let name = aggregation.featureName(window: window)
                    if !names.insert(name).inserted {
                        report(.duplicateName, object, view.origin, path, "aggregation feature '\(name)' is produced twice",
                               hint: "give one of the aggregations a different 'name'")
                    }
                    if let slide, window.seconds % slide.seconds != 0 {
                        report(
                            .invalidWindow, object, view.origin, view.slide == nil ? path : "slide",
                            "window \(window) is not a whole number of slides of \(slide)",
                            hint: "make every window a multiple of the slide")
                    }
                }
            }
        }

        mutating func onDemandView(_ view: OnDemandFeatureViewDefinition) {
            let object = "OnDemandFeatureView \(view.name)"
            for (index, reference) in view.inputFeatures.enumerated() {
                resolve(reference, object: object, origin: view.origin, path: "inputs.features[\(index)]")
                if reference.view == view.name {
                    report(.dependencyCycle, object, view.origin, "inputs.features[\(index)]", "the view reads its own output")
                }
            }
            var names: Set<String> = Set(view.requestFields.map(\.name))
            for (index, output) in view.outputs.enumerated() where !names.insert(output.name).inserted {
                report(.duplicateName, object, view.origin, "outputs[\(index)].name", "'\(output.name)' is declared twice (outputs and request fields share names)")
            }
            // Expressions are checked against the inputs' types, once every input resolves.
            guard let inputs = RepositoryValidator.expressionInputs(of: view, schemas: schemas) else { return }
            for (index, output) in view.outputs.enumerated() {
                do {
                    _ = try CompiledExpression.compile(output.expression, inputs: inputs, output: output.type)
                } catch {
                    report(.invalidExpression, object, view.origin, "outputs[\(index)].expression", error.explained(in: output.expression))
                }
            }
        }

        /// Checks that a reference names an existing view and feature.
        mutating func resolve(_ reference: FeatureReference, object: String, origin: DefinitionOrigin?, path: String) {
            guard let schema = schemas[reference.view] else {
                report(
                    .unknownReference, object, origin, path, "no feature view or on-demand view named '\(reference.view)'",
                    hint: SpellingSuggestion.hint(for: reference.view, among: schemas.keys.sorted()))
                return
            }
            if let feature = reference.feature, !schema.contains(where: { $0.name == feature }) {
                report(
                    .unknownFeature, object, origin, path, "view '\(reference.view)' has no feature '\(feature)'",
                    hint: SpellingSuggestion.hint(for: feature, among: schema.map(\.name)))
            }
        }

        mutating func onDemandCycles() {
            let views = Dictionary(repository.onDemandFeatureViews.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
            var state: [String: Bool] = [:]  // false: on the stack, true: done
            var stack: [String] = []
            var reported: Set<String> = []
            func visit(_ name: String, _ check: inout Check) {
                state[name] = false
                stack.append(name)
                for reference in views[name]?.inputFeatures ?? [] where views[reference.view] != nil && reference.view != name {
                    switch state[reference.view] {
                    case .none: visit(reference.view, &check)
                    case .some(false):
                        let cycle = Array(stack.drop(while: { $0 != reference.view })) + [reference.view]
                        let key = Set(cycle).sorted().joined(separator: ",")
                        if reported.insert(key).inserted, let first = views[cycle[0]] {
                            let index = first.inputFeatures.firstIndex { $0.view == cycle[1] } ?? 0
                            check.report(
                                .dependencyCycle, "OnDemandFeatureView \(first.name)", first.origin, "inputs.features[\(index)]",
                                "on-demand views depend on each other in a cycle: " + cycle.joined(separator: " → "),
                                hint: "an on-demand view may read another only if that one does not read it back")
                        }
                    case .some(true): break
                    }
                }
                stack.removeLast()
                state[name] = true
            }
            for view in repository.onDemandFeatureViews where state[view.name] == nil { visit(view.name, &self) }
        }

        /// An entity query's entities exist, and their join keys are among its columns with the same types.
        mutating func entityQuery(_ query: EntityQueryDefinition) {
            let object = "EntityQuery \(query.name)"
            let columns = Dictionary(query.columns.map { ($0.name, $0.type) }, uniquingKeysWith: { first, _ in first })
            for (index, name) in query.entities.enumerated() {
                guard let entity = entities[name] else {
                    report(
                        .unknownReference, object, query.origin, "entities[\(index)]", "no Entity named '\(name)'",
                        hint: SpellingSuggestion.hint(for: name, among: entities.keys.sorted()))
                    continue
                }
                for key in entity.joinKeys where columns[key.name] != key.type {
                    report(
                        .typeMismatch, object, query.origin, query.origin?.fields["columns.\(key.name)"] != nil ? "columns.\(key.name)" : "columns",
                        columns[key.name].map { "column '\(key.name)' is \($0), but entity \(name)'s join key is \(key.type)" }
                            ?? "the query has no column for entity \(name)'s join key '\(key.name)'",
                        hint: "declare '\(key.name): \(key.type)' among the columns")
                }
            }
            if !query.columns.contains(where: { $0.type == .timestamp }) {
                report(
                    .missingField, object, query.origin, "columns", "the query declares no timestamp column",
                    hint: "each entity row needs the time its features are looked up at, such as 'event_timestamp: timestamp'")
            }
        }

        mutating func service(_ service: FeatureServiceDefinition) {
            let object = "FeatureService \(service.name)"
            for (index, selection) in service.selections.enumerated() {
                let path = "features[\(index)]"
                guard let schema = schemas[selection.view] else {
                    report(
                        .unknownReference, object, service.origin, path, "no feature view or on-demand view named '\(selection.view)'",
                        hint: SpellingSuggestion.hint(for: selection.view, among: schemas.keys.sorted()))
                    continue
                }
                // A pinned version may have other features than the current
                // definition; the control plane checks it against that version.
                guard selection.version == nil else { continue }
                for (featureIndex, feature) in (selection.features ?? []).enumerated() where !schema.contains(where: { $0.name == feature }) {
                    report(
                        .unknownFeature, object, service.origin,
                        service.origin?.fields["\(path).features[\(featureIndex)]"] != nil ? "\(path).features[\(featureIndex)]" : path,
                        "view '\(selection.view)' has no feature '\(feature)'",
                        hint: SpellingSuggestion.hint(for: feature, among: schema.map(\.name)))
                }
            }
        }
    }
}

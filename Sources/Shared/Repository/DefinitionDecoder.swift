import Foundation
import Yams

/// One object read from a YAML document.
enum DecodedDefinition {
    case entity(EntityDefinition)
    case source(SourceDefinition)
    case featureView(FeatureViewDefinition)
    case onDemandFeatureView(OnDemandFeatureViewDefinition)
    case featureService(FeatureServiceDefinition)
    case entityQuery(EntityQueryDefinition)
}

/// Turns one YAML document (a mapping with `kind:`) into a definition.
///
/// Shape mistakes (unknown fields, wrong types, bad names) are reported here;
/// mistakes that need the whole repository (dangling references, duplicates,
/// type mismatches between objects) are the `RepositoryValidator`'s.
enum DefinitionDecoder {
    static let metadataFields = ["description", "owner", "tags"]

    static let allowedFields: [ObjectKind: [String]] = [
        .entity: ["kind", "name", "join_keys"] + metadataFields,
        .postgresSource: ["kind", "name", "connection", "table", "query", "timestamp_field", "created_timestamp_field", "columns"]
            + metadataFields,
        .fileSource: ["kind", "name", "connection", "path", "paths", "format", "timestamp_field", "created_timestamp_field", "columns"]
            + metadataFields,
        .pushSource: ["kind", "name", "timestamp_field", "created_timestamp_field", "columns"] + metadataFields,
        .featureView: [
            "kind", "name", "entities", "source", "features", "sql", "aggregations", "slide", "ttl", "online", "offline",
            "schedule", "feature_start_time", "freshness", "lateness", "recompute", "expectations",
        ] + metadataFields,
        .onDemandFeatureView: ["kind", "name", "inputs", "outputs"] + metadataFields,
        .featureService: ["kind", "name", "features"] + metadataFields,
        .entityQuery: ["kind", "name", "connection", "sql", "columns", "entities"] + metadataFields,
    ]

    /// Decodes one document; nil when it is not a readable object (the
    /// reasons are in the context's diagnostics).
    static func decode(_ document: Node, context: DocumentReadingContext) -> DecodedDefinition? {
        guard case .mapping(let mapping) = document else {
            context.report(
                .notAMapping, at: document, path: "", "a document must be a mapping with a 'kind' field, found \(YAMLFieldReader.describe(document))")
            return nil
        }
        guard let kindNode = mapping["kind"], let kindText = kindNode.scalar?.string, !YAMLFieldReader.isNull(kindNode) else {
            context.report(
                .missingKind, at: document, path: "kind", "document has no 'kind'",
                hint: "start it with one of: " + ObjectKind.allCases.map(\.rawValue).joined(separator: ", "))
            return nil
        }
        guard let kind = ObjectKind(rawValue: kindText) else {
            context.report(
                .unknownKind, at: kindNode, path: "kind", "unknown kind '\(kindText)'",
                hint: SpellingSuggestion.hint(for: kindText, among: ObjectKind.allCases.map(\.rawValue)))
            return nil
        }
        if let nameText = mapping["name"]?.scalar?.string { context.object = "\(kind) \(nameText)" } else { context.object = "\(kind)" }
        guard let fields = YAMLFieldReader(document, path: "", allowed: allowedFields[kind]!, context: context) else { return nil }
        let name = fields.identifier("name", required: true)
        let metadata = fields.metadata()

        switch kind {
        case .entity:
            let keys = fields.columns("join_keys", required: true) ?? []
            for key in keys where !key.type.canBeJoinKey {
                context.report(
                    .typeMismatch, at: fields.context.fieldLocations[joinPath("join_keys", key.name)] ?? fields.location(of: "join_keys"),
                    path: "join_keys.\(key.name)", "join key type \(key.type) cannot identify an entity",
                    hint: "join keys are int64, int32, string or bytes")
            }
            guard let name else { return nil }
            return .entity(EntityDefinition(name: name, joinKeys: keys, metadata: metadata, origin: context.origin(of: document)))

        case .postgresSource, .fileSource, .pushSource:
            return decodeSource(kind: kind, name: name, metadata: metadata, fields: fields, document: document)

        case .featureView:
            return decodeFeatureView(name: name, metadata: metadata, fields: fields, document: document)

        case .onDemandFeatureView:
            return decodeOnDemandView(name: name, metadata: metadata, fields: fields, document: document)

        case .featureService:
            var selections: [FeatureSelection] = []
            for item in fields.list("features", required: true) ?? [] {
                if let selection = decodeSelection(item.node, path: item.path, context: context) { selections.append(selection) }
            }
            guard let name else { return nil }
            return .featureService(FeatureServiceDefinition(
                name: name, selections: selections, metadata: metadata, origin: context.origin(of: document)))

        case .entityQuery:
            let connection = fields.identifier("connection", required: true)
            let sql = fields.string("sql", required: true)?.trimmingCharacters(in: .whitespacesAndNewlines)
            if let sql, sql.isEmpty {
                context.report(.invalidValue, at: fields.location(of: "sql"), path: "sql", "the query is empty", hint: "give a SELECT statement")
            }
            let columns = fields.columns("columns", required: true) ?? []
            var entities: [String] = []
            for item in fields.list("entities", acceptsSingle: true) ?? [] {
                if let text = YAMLFieldReader.scalarText(item.node, path: item.path, context: context),
                   let entity = YAMLFieldReader.checkedIdentifier(text, at: item.node, path: item.path, context: context) {
                    entities.append(entity)
                }
            }
            guard let name, let connection, let sql, !sql.isEmpty else { return nil }
            return .entityQuery(EntityQueryDefinition(
                name: name, connection: connection, sql: sql, columns: columns, entities: entities, metadata: metadata,
                origin: context.origin(of: document)))
        }
    }

    private static func decodeSource(
        kind: ObjectKind, name: String?, metadata: DefinitionMetadata, fields: YAMLFieldReader, document: Node
    ) -> DecodedDefinition? {
        let context = fields.context
        let timestampField = fields.identifier("timestamp_field", required: true)
        let createdField = fields.identifier("created_timestamp_field")
        let columns = fields.columns("columns", required: true) ?? []
        var connector: SourceDefinition.Connector?
        switch kind {
        case .postgresSource:
            let connection = fields.identifier("connection", required: true)
            var relation: SourceDefinition.PostgresRelation?
            if fields.exclusive("table", "query") {
                if let table = fields.string("table") {
                    if isValidTableName(table) {
                        relation = .table(table)
                    } else {
                        context.report(
                            .invalidIdentifier, at: fields.location(of: "table"), path: "table", "'\(table)' is not a valid table name",
                            hint: "write table or schema.table, each part a lowercase name")
                    }
                } else if let query = fields.string("query") {
                    relation = .query(query.trimmingCharacters(in: .whitespacesAndNewlines))
                } else {
                    context.report(
                        .missingField, at: document, path: "table", "a PostgresSource needs 'table' or 'query'",
                        hint: "name a table with 'table: schema.table' or give a SELECT in 'query'")
                }
            }
            if let connection, let relation { connector = .postgres(connection: connection, relation: relation) }
        case .fileSource:
            let connection = fields.identifier("connection", required: true)
            if let format = fields.string("format"), format.lowercased() != "csv" {
                context.report(.invalidValue, at: fields.location(of: "format"), path: "format", "unsupported format '\(format)'", hint: "the only format is csv")
            }
            var paths: [String] = []
            if fields.exclusive("path", "paths") {
                let key = fields.has("path") ? "path" : "paths"
                for item in fields.list(key, required: true, acceptsSingle: true) ?? [] {
                    guard let text = YAMLFieldReader.scalarText(item.node, path: item.path, context: context) else { continue }
                    if text.hasPrefix("/") || text.split(separator: "/").contains("..") {
                        context.report(
                            .invalidValue, at: item.node, path: item.path, "'\(text)' must stay inside the connection's directory",
                            hint: "write a path relative to the CSV directory the agent knows as the connection")
                    } else {
                        paths.append(text)
                    }
                }
            }
            if let connection, !paths.isEmpty { connector = .file(connection: connection, paths: paths) }
        default:
            connector = .push
        }
        for column in columns where column.name == timestampField || column.name == createdField {
            if column.type != .timestamp {
                context.report(
                    .typeMismatch, at: context.fieldLocations[joinPath("columns", column.name)] ?? fields.location(of: "columns"),
                    path: "columns.\(column.name)", "timestamp column '\(column.name)' is declared as \(column.type)",
                    hint: "declare it as timestamp, or leave it out: timestamp fields are timestamps")
            }
        }
        guard let name, let connector, let timestampField else { return nil }
        return .source(SourceDefinition(
            name: name, connector: connector, timestampField: timestampField, createdTimestampField: createdField,
            columns: columns.filter { $0.name != timestampField && $0.name != createdField }, metadata: metadata,
            origin: context.origin(of: document)))
    }

    /// `table` or `schema.table`, each part an identifier.
    static func isValidTableName(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return (1...2).contains(parts.count) && parts.allSatisfy { Identifier.isValid(String($0)) }
    }

    private static func decodeFeatureView(
        name: String?, metadata: DefinitionMetadata, fields: YAMLFieldReader, document: Node
    ) -> DecodedDefinition? {
        let context = fields.context
        var entities: [String] = []
        for item in fields.list("entities", required: true, acceptsSingle: true) ?? [] {
            if let text = YAMLFieldReader.scalarText(item.node, path: item.path, context: context),
               let entity = YAMLFieldReader.checkedIdentifier(text, at: item.node, path: item.path, context: context) {
                entities.append(entity)
            }
        }
        let source = fields.identifier("source", required: true)

        var features: [FeatureDefinition] = []
        /// Features whose declaration has an error already reported: expectations on them are not checked again.
        var unreadable: Set<String> = []
        var aggregations: [AggregationDefinition] = []
        var sql: String?
        let plain = fields.exclusive("features", "aggregations")
        if plain, !fields.has("features"), !fields.has("aggregations") {
            context.report(
                .missingField, at: document, path: "features", "a FeatureView needs 'features' or 'aggregations'",
                hint: "list plain features under 'features', or time-window aggregations under 'aggregations'")
        }
        for item in fields.list("features") ?? [] {
            guard let feature = YAMLFieldReader(item.node, path: item.path, allowed: ["name", "type", "column", "description"], context: context)
            else { continue }
            let name = feature.identifier("name", required: true)
            let type = feature.valueType("type", required: true)
            let column = feature.identifier("column")
            if let name, let type {
                features.append(FeatureDefinition(name: name, type: type, column: column, description: feature.string("description")))
            } else if let name {
                unreadable.insert(name)
            }
        }
        if fields.exclusive("aggregations", "sql") { sql = fields.string("sql")?.trimmingCharacters(in: .whitespacesAndNewlines) }
        if let text = sql, text.range(of: #"\{\{\s*source\s*\}\}"#, options: .regularExpression) == nil {
            context.report(
                .invalidValue, at: fields.location(of: "sql"), path: "sql", "the query does not read its source",
                hint: "select FROM {{ source }}; the agent puts the source's table or query there")
        }
        for item in fields.list("aggregations") ?? [] {
            guard let aggregation = YAMLFieldReader(
                item.node, path: item.path, allowed: ["function", "column", "windows", "window", "name"], context: context)
            else { continue }
            var function: AggregationFunction?
            if let text = aggregation.string("function", required: true) {
                function = AggregationFunction(rawValue: text.lowercased())
                if function == nil {
                    context.report(
                        .invalidValue, at: aggregation.location(of: "function"), path: joinPath(item.path, "function"),
                        "unknown aggregation function '\(text)'",
                        hint: SpellingSuggestion.hint(for: text, among: AggregationFunction.allCases.map(\.rawValue)))
                }
            }
            let column = aggregation.identifier("column", required: true)
            let prefix = aggregation.identifier("name")
            var windows: [TimeSpan] = []
            if aggregation.exclusive("window", "windows") {
                let key = aggregation.has("window") ? "window" : "windows"
                for window in aggregation.list(key, required: true, acceptsSingle: true) ?? [] {
                    guard let text = YAMLFieldReader.scalarText(window.node, path: window.path, context: context),
                          let span = YAMLFieldReader.parseTimeSpan(text, at: window.node, path: window.path, code: .invalidWindow, context: context)
                    else { continue }
                    if span.seconds <= 0 {
                        context.report(.invalidWindow, at: window.node, path: window.path, "window '\(text)' must be longer than zero")
                    } else {
                        windows.append(span)
                    }
                }
            }
            if let function, let column, !windows.isEmpty {
                aggregations.append(AggregationDefinition(function: function, column: column, windows: windows, name: prefix))
            }
        }
        var slide = fields.timeSpan("slide", code: .invalidWindow)
        if let given = slide, given.seconds <= 0 {
            context.report(.invalidWindow, at: fields.location(of: "slide"), path: "slide", "slide must be longer than zero")
            slide = nil
        }
        if slide != nil, !fields.has("aggregations") {
            context.report(
                .conflictingFields, at: fields.location(of: "slide"), path: "slide", "'slide' applies only to aggregation views")
        }
        var ttl = fields.timeSpan("ttl", code: .invalidTTL)
        if ttl?.seconds == 0 { ttl = nil }
        let schedule = decodeSchedule(fields: fields)
        var freshness = fields.timeSpan("freshness")
        if let given = freshness, given.seconds < 60 {
            context.report(.invalidDuration, at: fields.location(of: "freshness"), path: "freshness", "freshness must be at least 1m, found \(given)")
            freshness = nil
        }
        // Late data: both tune the schedule, so they need one.
        var lateness = fields.timeSpan("lateness")
        if lateness?.seconds == 0 { lateness = nil }
        var recompute = fields.timeSpan("recompute")
        if let given = recompute, given.seconds == 0 || given.seconds > 31 * 86_400 {
            context.report(
                .invalidDuration, at: fields.location(of: "recompute"), path: "recompute",
                given.seconds == 0 ? "recompute must be longer than zero" : "recompute may reach back at most 31d, found \(given)")
            recompute = nil
        }
        // Each run queues a job per interval re-run: bounded, so a frequent schedule cannot flood the queue.
        let maximum = FeatureViewDefinition.maximumRecomputedIntervals
        if let given = recompute, let schedule, schedule.runs(within: given, limit: maximum + 1) > maximum {
            context.report(
                .invalidDuration, at: fields.location(of: "recompute"), path: "recompute",
                "recompute \(given) re-runs more than \(maximum) intervals of the schedule (\(schedule)) on every run",
                hint: "re-run a shorter span, or schedule the view less often")
            recompute = nil
        }
        for (key, given) in [("lateness", lateness), ("recompute", recompute)] where given != nil && schedule == nil && !fields.has("schedule") {
            context.report(
                .conflictingFields, at: fields.location(of: key), path: key, "'\(key)' tunes the schedule, and the view has none",
                hint: "add a schedule, such as 'schedule: 1h'")
        }
        let view = FeatureViewDefinition(
            name: name ?? "", entities: entities, source: source ?? "", features: features, transformation: sql,
            aggregations: aggregations, slide: slide, ttl: ttl, online: fields.bool("online") ?? true,
            offline: fields.bool("offline") ?? true, schedule: schedule, featureStartTime: fields.timestamp("feature_start_time"),
            freshness: freshness, lateness: lateness, recompute: recompute, expectations: decodeExpectations(fields: fields, skipping: unreadable), metadata: metadata, origin: context.origin(of: document))
        guard name != nil, source != nil else { return nil }
        return .featureView(view)
    }

    /// The `expectations:` block: `on_violation`, `rows_per_job: {min, max}`
    /// and `features: {name: {max_null_fraction, min, max, allowed_values}}`.
    private static func decodeExpectations(fields: YAMLFieldReader, skipping unreadable: Set<String>) -> ViewExpectations? {
        let context = fields.context
        guard let node = fields.value("expectations"),
              let block = YAMLFieldReader(node, path: "expectations", allowed: ["on_violation", "rows_per_job", "features"], context: context)
        else { return nil }
        var policy = ViolationPolicy.warn
        if let text = block.string("on_violation") {
            if let given = ViolationPolicy(rawValue: text) {
                policy = given
            } else {
                context.report(
                    .invalidValue, at: block.value("on_violation")!, path: "expectations.on_violation", "unknown policy '\(text)'",
                    hint: "write fail (the job fails and writes nothing) or warn (it writes and reports)")
            }
        }
        var minRows: Int64?, maxRows: Int64?
        if let rowsNode = block.value("rows_per_job"),
           let rows = YAMLFieldReader(rowsNode, path: "expectations.rows_per_job", allowed: ["min", "max"], context: context)
        {
            minRows = rows.integer("min").map(Int64.init)
            maxRows = rows.integer("max").map(Int64.init)
            if minRows == nil, maxRows == nil, !rows.has("min"), !rows.has("max") {
                context.report(.missingField, at: rowsNode, path: "expectations.rows_per_job", "give 'min', 'max' or both")
            }
            for (key, value) in [("min", minRows), ("max", maxRows)] where (value ?? 0) < 0 {
                context.report(.invalidValue, at: rows.value(key)!, path: "expectations.rows_per_job.\(key)", "a row count cannot be negative")
            }
            if let low = minRows, let high = maxRows, low > high {
                context.report(
                    .invalidValue, at: rowsNode, path: "expectations.rows_per_job", "min \(low) is greater than max \(high)")
            }
        }
        var features: [FeatureExpectation] = []
        for entry in block.namedEntries("features") ?? [] {
            guard let checks = YAMLFieldReader(
                entry.value, path: entry.path, allowed: ["max_null_fraction", "min", "max", "allowed_values"], context: context)
            else { continue }
            var expectation = FeatureExpectation(
                feature: entry.name, maxNullFraction: checks.number("max_null_fraction"), min: checks.number("min"), max: checks.number("max"))
            if let fraction = expectation.maxNullFraction, !(0...1).contains(fraction) {
                context.report(
                    .invalidValue, at: checks.value("max_null_fraction")!, path: joinPath(entry.path, "max_null_fraction"),
                    "max_null_fraction must be between 0 and 1, found \(fraction)")
            }
            if let low = expectation.min, let high = expectation.max, low > high {
                context.report(.invalidValue, at: entry.value, path: entry.path, "min \(low) is greater than max \(high)")
            }
            if let items = checks.list("allowed_values", acceptsSingle: true) {
                let values = items.compactMap { YAMLFieldReader.scalarText($0.node, path: $0.path, context: context) }
                if values.isEmpty {
                    context.report(.missingField, at: checks.value("allowed_values")!, path: joinPath(entry.path, "allowed_values"), "'allowed_values' must not be empty")
                }
                expectation.allowedValues = values
            }
            if !["max_null_fraction", "min", "max", "allowed_values"].contains(where: checks.has) {
                context.report(
                    .missingField, at: entry.value, path: entry.path, "no check for '\(entry.name)'",
                    hint: "give max_null_fraction, min, max or allowed_values")
            }
            if !unreadable.contains(entry.name) { features.append(expectation) }
        }
        return ViewExpectations(policy: policy, minRows: minRows, maxRows: maxRows, features: features)
    }

    private static func decodeSchedule(fields: YAMLFieldReader) -> BatchSchedule? {
        let context = fields.context
        guard let node = fields.value("schedule") else { return nil }
        func interval(_ text: String, at node: Node, path: String) -> BatchSchedule? {
            guard let span = YAMLFieldReader.parseTimeSpan(text, at: node, path: path, code: .invalidSchedule, context: context) else {
                return nil
            }
            guard span.seconds >= 60 else {
                context.report(.invalidSchedule, at: node, path: path, "a schedule interval must be at least 1m, found '\(text)'")
                return nil
            }
            return .interval(span)
        }
        func cron(_ text: String, at node: Node, path: String) -> BatchSchedule? {
            do {
                return .cron(try CronSchedule(parsing: text))
            } catch {
                context.report(
                    .invalidSchedule, at: node, path: path, "'\(text)' is not a cron expression: \(error.description)",
                    hint: "five fields: minute hour day-of-month month day-of-week, such as '0 * * * *'")
                return nil
            }
        }
        if case .scalar(let scalar) = node {
            return interval(scalar.string, at: node, path: "schedule")
        }
        guard let schedule = YAMLFieldReader(node, path: "schedule", allowed: ["every", "cron"], context: context),
              schedule.exclusive("every", "cron")
        else { return nil }
        if let text = schedule.string("every") { return interval(text, at: schedule.value("every")!, path: "schedule.every") }
        if let text = schedule.string("cron") { return cron(text, at: schedule.value("cron")!, path: "schedule.cron") }
        context.report(.invalidSchedule, at: node, path: "schedule", "a schedule needs 'every' or 'cron'", hint: "schedule: {every: 1h}")
        return nil
    }

    private static func decodeOnDemandView(
        name: String?, metadata: DefinitionMetadata, fields: YAMLFieldReader, document: Node
    ) -> DecodedDefinition? {
        let context = fields.context
        var inputFeatures: [FeatureReference] = []
        var requestFields: [Column] = []
        if let node = fields.value("inputs", required: true),
           let inputs = YAMLFieldReader(node, path: "inputs", allowed: ["features", "request"], context: context) {
            for item in inputs.list("features", acceptsSingle: true) ?? [] {
                guard let text = YAMLFieldReader.scalarText(item.node, path: item.path, context: context) else { continue }
                if let reference = parseReference(text, at: item.node, path: item.path, context: context) {
                    inputFeatures.append(reference)
                }
            }
            requestFields = inputs.columns("request") ?? []
            if !inputs.has("features"), !inputs.has("request") {
                context.report(.missingField, at: node, path: "inputs", "an on-demand view needs input 'features' or 'request' fields")
            }
        }
        var outputs: [OnDemandOutput] = []
        for item in fields.list("outputs", required: true) ?? [] {
            guard let output = YAMLFieldReader(
                item.node, path: item.path, allowed: ["name", "type", "expression", "description"], context: context)
            else { continue }
            let outputName = output.identifier("name", required: true)
            let type = output.valueType("type", required: true)
            let expression = output.string("expression", required: true)?.trimmingCharacters(in: .whitespacesAndNewlines)
            if let expression, expression.isEmpty {
                context.report(.invalidValue, at: output.location(of: "expression"), path: joinPath(item.path, "expression"), "expression is empty")
            }
            if let outputName, let type, let expression {
                outputs.append(OnDemandOutput(name: outputName, type: type, expression: expression, description: output.string("description")))
            }
        }
        guard let name else { return nil }
        return .onDemandFeatureView(OnDemandFeatureViewDefinition(
            name: name, inputFeatures: inputFeatures, requestFields: requestFields, outputs: outputs, metadata: metadata,
            origin: context.origin(of: document)))
    }

    /// Parses `view` or `view:feature`, checking both names.
    static func parseReference(_ text: String, at node: Node, path: String, context: DocumentReadingContext) -> FeatureReference? {
        guard let reference = FeatureReference(parsing: text) else {
            context.report(.invalidValue, at: node, path: path, "'\(text)' is not a feature reference", hint: "write view or view:feature")
            return nil
        }
        guard Identifier.isValid(reference.view), reference.feature.map(Identifier.isValid) ?? true else {
            context.report(
                .invalidIdentifier, at: node, path: path, "'\(text)' is not a valid feature reference",
                hint: "write view or view:feature, each a lowercase name")
            return nil
        }
        return reference
    }

    private static func decodeSelection(_ node: Node, path: String, context: DocumentReadingContext) -> FeatureSelection? {
        if case .scalar(let scalar) = node {
            guard let reference = parseReference(scalar.string, at: node, path: path, context: context) else { return nil }
            return FeatureSelection(view: reference.view, features: reference.feature.map { [$0] })
        }
        guard let selection = YAMLFieldReader(node, path: path, allowed: ["view", "features", "version"], context: context) else {
            return nil
        }
        let view = selection.identifier("view", required: true)
        var features: [String]?
        if let items = selection.list("features", acceptsSingle: true) {
            features = items.compactMap { item in
                YAMLFieldReader.scalarText(item.node, path: item.path, context: context).flatMap {
                    YAMLFieldReader.checkedIdentifier($0, at: item.node, path: item.path, context: context)
                }
            }
        }
        let version = selection.integer("version")
        if let version, version < 1 {
            context.report(.invalidValue, at: selection.location(of: "version"), path: joinPath(path, "version"), "versions start at 1, found \(version)")
            return nil
        }
        guard let view else { return nil }
        return FeatureSelection(view: view, features: features, version: version)
    }
}

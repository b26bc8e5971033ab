import Foundation
import Logging
import PostgresNIO
import Shared

/// Runs `dataset` jobs: builds a training dataset from the agent's offline
/// store for an entity table in one of the agent's connections, and writes
/// it to a CSV file or a new table there. The features are resolved with the
/// definitions the spec carries (the workspace at one registry revision).
/// Only the dataset's metadata goes back to the control plane.
public struct DatasetExecutor: JobExecutor {
    let configuration: AgentConfiguration
    let logger: Logger
    /// Entity rows per chunk (`TrainingDatasetBuilder`).
    let chunkRows: Int

    /// An executor for the agent configured by `configuration`.
    public init(configuration: AgentConfiguration, chunkRows: Int = 1_000_000, logger: Logger) {
        self.configuration = configuration
        self.chunkRows = chunkRows
        self.logger = logger
    }

    public var kinds: Set<JobKind> { [.dataset] }

    public func execute(_ spec: JobSpec, context: JobContext) async throws -> JobMetrics {
        guard let request = spec.dataset else { throw JobExecutionError("the dataset job's spec has no request", retryable: false) }
        guard let location = configuration.offlineStore, case .postgres(let store)? = configuration.connections[location.connection] else {
            throw JobExecutionError("this agent's configuration has no offline_store to read features from", retryable: false)
        }
        let snapshot = AgentRegistrySnapshot(
            workspace: spec.workspace, revision: spec.registryRevision ?? 0, issuedAt: spec.issuedAt, definitions: spec.definitions)
        let catalog: ServingCatalog
        do {
            catalog = try ServingCatalog(snapshot: snapshot)
        } catch {
            throw JobExecutionError("the dataset job's definitions cannot be read: \(error)", retryable: false)
        }
        // Where the output goes is checked before anything runs: a refused output costs nothing.
        let output = try outputTarget(request.output)
        var builder = TrainingDatasetBuilder(
            catalog: { catalog }, offlineStore: (location.schema, store), chunkRows: chunkRows, logger: logger)
        builder.createsLookupIndexes = configuration.datasets.lookupIndexes
        let workspace = URL(fileURLWithPath: configuration.dataDirectory).appendingPathComponent("datasets")
        try FileManager.default.createDirectory(at: workspace, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])

        // The entity table: a file in a folder connection, or a query's rows exported to a file here.
        await context.report(JobProgress(phase: "reading-entities"))
        var exported: URL?
        defer { if let exported { try? FileManager.default.removeItem(at: exported) } }
        let entities: URL
        if let path = request.entities?.path, let connection = request.entities?.connection {
            entities = try file(path, in: connection, field: "entities")
        } else {
            let query = try entityQuery(request, snapshot: snapshot)
            let url = try database(query.connection, field: "entities")
            // The offline store's credentials can write the stores: no entity query runs with them
            // (under whatever connection name) unless the agent's settings say so.
            if url.host == store.host, url.port == store.port, url.database == store.database, url.username == store.username,
               !configuration.datasets.entityQueriesOnOfflineStore {
                throw JobExecutionError(
                    "entities: the connection '\(query.connection)' uses the offline store's database and user; entity queries run there only "
                        + "when the agent's settings allow it (datasets.entity_queries_on_offline_store)", retryable: false)
            }
            let target = workspace.appendingPathComponent("entities-\(spec.jobId)-\(UUID().uuidString).csv")
            exported = target
            try await EntityQueryExport(
                url: url, query: query.sql, columns: query.columns, statementTimeout: configuration.sourceStatementTimeout, logger: logger
            ).write(to: target)
            entities = target
        }
        let prepared: TrainingDatasetBuilder.Prepared
        do {
            prepared = try await builder.prepare(DatasetRequest(
                featureService: request.featureService, features: request.features, entities: entities,
                timestampColumn: request.timestampColumn ?? "event_timestamp", assumeUTC: request.assumeUtc ?? false))
        } catch let error as DatasetError {
            // Bad input stays bad: no retry. The control plane is told the row and column, not
            // the value (quoted in the detail; the agent's log has it).
            throw JobExecutionError(error.reported, retryable: false, localDetail: error.description)
        } catch let error as ServingError {
            throw JobExecutionError(error.description, retryable: false)
        }

        await context.report(JobProgress(phase: "building"))
        let metadata: DatasetMetadata
        switch output {
        case .file(let target):
            metadata = try await writeFile(prepared, builder: builder, target: target, path: request.output.path ?? "", context: context)
        case .table(let url, let schema, let table):
            metadata = try await writeTable(prepared, builder: builder, url: url, schema: schema, table: table, context: context)
        }
        logger.info("dataset built", metadata: [
            "larder.job": "\(spec.jobId)", "larder.rows": "\(metadata.rows)", "larder.output": .string(request.output.description),
        ])
        return JobMetrics(rowsRead: metadata.rows, rowsWritten: metadata.rows, dataset: metadata)
    }

    /// The SQL an entity table comes from: a named entity query of the spec's
    /// definitions (with its declared columns), or the request's own SQL
    /// (which the control plane accepts only from operators).
    func entityQuery(_ request: CreateDatasetRequest, snapshot: AgentRegistrySnapshot) throws -> (connection: String, sql: String, columns: [Column]?) {
        if let name = request.entityQuery {
            let repository: FeatureRepository
            do { repository = try CanonicalDecoder.repository(workspace: snapshot.workspace, definitions: snapshot.definitions) } catch {
                throw JobExecutionError("the dataset job's definitions cannot be read: \(error)", retryable: false)
            }
            guard let query = repository.entityQueries.first(where: { $0.name == name }) else {
                throw JobExecutionError("entity_query: the job's definitions hold no entity query named '\(name)'", retryable: false)
            }
            return (query.connection, query.sql, query.columns)
        }
        guard let entities = request.entities, let sql = entities.query else {
            throw JobExecutionError("entities: the request names no entity table", retryable: false)
        }
        return (entities.connection, sql, nil)
    }

    /// Where a dataset is written: a new file in a folder connection's
    /// `datasets` folder, or a new table in a PostgreSQL connection's `datasets` schema.
    enum OutputTarget {
        case file(URL)
        case table(PostgresURL, schema: String, table: String)
    }

    /// The output's place, confined to what the agent's settings allow; nothing is created yet.
    func outputTarget(_ output: DatasetLocation) throws -> OutputTarget {
        guard configuration.connections[output.connection] != nil else {
            throw JobExecutionError("output: this agent has no connection '\(output.connection)'", retryable: false)
        }
        guard let place = configuration.datasetPlaces[output.connection] else {
            throw JobExecutionError(
                "output: the connection '\(output.connection)' takes no datasets; the agent's settings name a folder or schema for them "
                    + "(connections.\(output.connection).datasets)", retryable: false)
        }
        switch (place, output.path, output.table) {
        case (.folder(let folder), let path?, nil):
            do { return .file(try DatasetFolder(folder).newFile(path)) } catch { throw JobExecutionError("output: \(error.description)", retryable: false) }
        case (.schema(let schema), nil, let table?):
            let parts = table.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard (1...2).contains(parts.count), parts.allSatisfy(Identifier.isValid) else {
                throw JobExecutionError("output: '\(table)' is not a table name", retryable: false)
            }
            if parts.count == 2, parts[0] != schema {
                throw JobExecutionError(
                    "output: datasets of connection '\(output.connection)' go to the schema \(schema), not \(parts[0])", retryable: false)
            }
            if let store = configuration.offlineStore, store.connection == output.connection, store.schema == schema {
                throw JobExecutionError("output: the offline store's schema is never a dataset's target", retryable: false)
            }
            let url = try database(output.connection, field: "output")
            return .table(url, schema: schema, table: parts[parts.count - 1])
        case (.folder, _, _):
            throw JobExecutionError("output: the connection '\(output.connection)' takes dataset files (path), not tables", retryable: false)
        case (.schema, _, _):
            throw JobExecutionError("output: the connection '\(output.connection)' takes dataset tables (table), not files", retryable: false)
        }
    }

    /// A file of a folder connection.
    func file(_ path: String, in connection: String, field: String) throws -> URL {
        guard let source = configuration.connections[connection] else {
            throw JobExecutionError("\(field): this agent has no connection '\(connection)'", retryable: false)
        }
        do { return try source.file(path) } catch { throw JobExecutionError("\(field): \(error.description)", retryable: false) }
    }

    /// A PostgreSQL connection's URL.
    func database(_ connection: String, field: String) throws -> PostgresURL {
        guard case .postgres(let url)? = configuration.connections[connection] else {
            throw JobExecutionError("\(field): '\(connection)' is not a PostgreSQL connection of this agent", retryable: false)
        }
        return url
    }

    /// Writes the CSV beside its final path and links it there, refusing to
    /// replace anything: readers never see half a file, and nothing that
    /// existed is touched.
    func writeFile(
        _ prepared: TrainingDatasetBuilder.Prepared, builder: TrainingDatasetBuilder, target: URL, path: String, context: JobContext
    ) async throws -> DatasetMetadata {
        let partial = try DatasetFolder.createPartial(beside: target)
        guard let handle = FileHandle(forWritingAtPath: partial.path) else {
            try? FileManager.default.removeItem(at: partial)
            throw JobExecutionError("output: cannot write \(path)", retryable: false)
        }
        defer { try? FileManager.default.removeItem(at: partial) }
        do {
            let metadata = try await builder.writeCSV(prepared) { buffer in try handle.write(contentsOf: buffer.readableBytesView) }
            try handle.synchronize()
            try handle.close()
            // A stale attempt (its lease lost or the job cancelled) publishes nothing.
            try context.requireLease()
            try DatasetFolder.publish(partial, as: target, path: path)
            return metadata
        } catch {
            try? handle.close()
            throw error
        }
    }

    /// Creates `schema.table` and fills it, in one transaction: it exists whole or not at all.
    func writeTable(
        _ prepared: TrainingDatasetBuilder.Prepared, builder: TrainingDatasetBuilder, url: PostgresURL, schema: String, table: String,
        context: JobContext
    ) async throws -> DatasetMetadata {
        let columns = builder.tableColumns(prepared)
        for column in columns where column.name.isEmpty || column.name.utf8.count > Identifier.maximumLength
            || column.name.contains("\"") || column.name.contains("\u{0}")
        {
            throw JobExecutionError(
                "output: a column name cannot name a table column (at most 63 bytes, no quotes)", retryable: false,
                localDetail: "the column name '\(column.name.prefix(80))' cannot name a table column")
        }
        let database = try await url.connect(logger: logger)
        do {
            let metadata = try await database.inTransaction(logger: logger) { connection -> DatasetMetadata in
                try await connection.execute(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(SQLIdentifier.quote(schema))"), logger: logger)
                let definition = columns.map { SQLIdentifier.quote($0.name) + " " + $0.sqlType }.joined(separator: ", ")
                do {
                    try await connection.execute(PostgresQuery(unsafeSQL: """
                        CREATE TABLE \(SQLIdentifier.quote(schema)).\(SQLIdentifier.quote(table)) (\(definition))
                        """), logger: logger)
                } catch let error as PSQLError where error.serverInfo?[.sqlState] == "42P07" {
                    throw JobExecutionError("output: the table \(schema).\(table) exists already; name a new one", retryable: false)
                }
                try await connection.execute(PostgresQuery(unsafeSQL: "SET LOCAL search_path TO \(SQLIdentifier.quote(schema))"), logger: logger)
                var result: DatasetMetadata?
                // COPY quotes the names itself (they hold no quote: checked above).
                try await connection.copyFrom(table: table, columns: columns.map(\.name), logger: logger) { writer in
                    result = try await builder.writeCopyRows(prepared) { try await writer.write($0) }
                }
                try context.requireLease()
                return result!
            }
            try await database.close()
            return metadata
        } catch {
            try? await database.close()
            throw error
        }
    }
}

/// A folder that dataset files are created in: every new file lands inside
/// it (symbolic links resolved), and nothing in it is ever replaced or removed.
struct DatasetFolder {
    let root: URL

    init(_ root: URL) { self.root = root }

    /// Why a dataset file cannot be created.
    struct Refusal: Error, CustomStringConvertible {
        let description: String
    }

    /// The file `path` would be, checked: relative, inside the folder after
    /// resolving links, and not existing yet. Missing folders on the way are created.
    func newFile(_ path: String) throws(Refusal) -> URL {
        if let problem = DatasetLocation.pathProblem(path) { throw Refusal(description: problem) }
        do { try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true) } catch {
            throw Refusal(description: "the datasets folder cannot be created")
        }
        let rootPath = SourceConnection.realPath(root.path)
        let inside = { (candidate: String) -> Bool in candidate == rootPath || candidate.hasPrefix(rootPath.hasSuffix("/") ? rootPath : rootPath + "/") }
        let file = path.split(separator: "/").reduce(root) { $0.appendingPathComponent(String($1)) }
        guard inside(SourceConnection.realPath(file.deletingLastPathComponent().path)) else {
            throw Refusal(description: "'\(path)' leads out of the datasets folder")
        }
        // The file itself must not exist, nor be a link (even a dangling one).
        var status = stat()
        if lstat(file.path, &status) == 0 { throw Refusal(description: "'\(path)' exists already; datasets are written to new files only") }
        let folder = file.deletingLastPathComponent()
        do { try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750]) } catch {
            throw Refusal(description: "the folder of '\(path)' cannot be created")
        }
        // Checked again once the folders exist: a link made meanwhile must not lead out either.
        guard inside(SourceConnection.realPath(folder.path)) else { throw Refusal(description: "'\(path)' leads out of the datasets folder") }
        return file
    }

    /// A new, empty, exclusively created file beside `target`, readable by the agent only.
    static func createPartial(beside target: URL) throws -> URL {
        let partial = target.deletingLastPathComponent().appendingPathComponent(".\(target.lastPathComponent).partial-\(UUID().uuidString)")
        let descriptor = open(partial.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw JobExecutionError("output: cannot create a file in the datasets folder", retryable: false) }
        close(descriptor)
        return partial
    }

    /// Puts the finished `partial` at `target` with a hard link, which fails
    /// rather than replace a file that appeared meanwhile.
    static func publish(_ partial: URL, as target: URL, path: String) throws {
        _ = chmod(partial.path, 0o640)
        guard link(partial.path, target.path) == 0 else {
            if errno == EEXIST { throw JobExecutionError("output: '\(path)' exists already; datasets are written to new files only", retryable: false) }
            throw JobExecutionError("output: cannot create '\(path)' (\(String(cString: strerror(errno))))", retryable: false)
        }
    }
}

/// Runs an entity query in the customer's database and writes its rows as
/// CSV, for the dataset builder. The query runs in a `READ ONLY` transaction
/// under the source statement timeout, rolled back at the end, so it can
/// change nothing (not even a sequence); a named query's declared columns are
/// the only ones read. `timestamptz` columns are written in RFC 3339 UTC,
/// `timestamp` columns without an offset (refused unless the request assumes
/// UTC), the rest as PostgreSQL's text.
struct EntityQueryExport {
    let url: PostgresURL
    let query: String
    /// The columns to read, for a named query; nil: all the query returns.
    let columns: [Column]?
    let statementTimeout: Duration
    let logger: Logger

    func write(to file: URL) async throws {
        guard FileManager.default.createFile(atPath: file.path, contents: nil, attributes: [.posixPermissions: 0o600]),
              let handle = FileHandle(forWritingAtPath: file.path)
        else { throw JobExecutionError("entities: cannot write the query's rows on the agent", retryable: true) }
        defer { try? handle.close() }
        var query = self.query.trimmingCharacters(in: .whitespacesAndNewlines)
        while query.hasSuffix(";") { query = String(query.dropLast()).trimmingCharacters(in: .whitespacesAndNewlines) }
        let connection = try await url.connect(logger: logger)
        do {
            try await connection.query("BEGIN TRANSACTION READ ONLY", logger: logger)
            let milliseconds = statementTimeout.components.seconds * 1_000 + statementTimeout.components.attoseconds / 1_000_000_000_000_000
            try await connection.execute(PostgresQuery(unsafeSQL: "SET LOCAL statement_timeout = \(max(1, milliseconds))"), logger: logger)
            // The query's columns and their types, from a run that returns no rows.
            let probe = try await connection.query(
                PostgresQuery(unsafeSQL: "SELECT * FROM (\(query)\n) AS larder_entities LIMIT 0"), logger: logger)
            let found = probe.columns.map { ($0.name, $0.dataType) }
            for try await _ in probe {}
            var selected: [(name: String, type: PostgresDataType)] = []
            if let columns {
                for column in columns {
                    guard let match = found.first(where: { $0.0 == column.name }) else {
                        throw JobExecutionError("entities: the entity query returns no column '\(column.name)'", retryable: false)
                    }
                    if column.type == .timestamp, match.1 != .timestamptz, match.1 != .timestamp {
                        throw JobExecutionError("entities: the entity query's column '\(column.name)' is not a timestamp", retryable: false)
                    }
                    selected.append((column.name, match.1))
                }
            } else {
                selected = found.map { (name: $0.0, type: $0.1) }
            }
            let select = selected.map { column -> String in
                let name = "larder_entities." + SQLIdentifier.quote(column.name)
                switch column.type {
                case .timestamptz: return "to_char(\(name) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                case .timestamp: return "to_char(\(name), 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
                default: return "\(name)::text"
                }
            }
            var csv = DatasetCSVWriter()
            csv.header(selected.map(\.name))
            for try await row in try await connection.query(
                PostgresQuery(unsafeSQL: "SELECT \(select.joined(separator: ", ")) FROM (\(query)\n) AS larder_entities"), logger: logger)
            {
                for cell in row { csv.text(try cell.decode(String?.self)) }
                csv.endRow()
                if csv.bytes.count >= 1 << 20 {
                    try handle.write(contentsOf: csv.bytes)
                    csv.clear()
                }
            }
            try handle.write(contentsOf: csv.bytes)
            _ = try? await connection.query("ROLLBACK", logger: logger)
            try await connection.close()
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            try? await connection.close()
            throw Self.explain(error)
        }
    }

    /// A failure of the entity query, in words (`queryFailure`).
    static func explain(_ error: any Error) -> any Error {
        guard let error = error as? PSQLError else { return error }
        return queryFailure(error, what: "entities: the query") ?? error
    }
}

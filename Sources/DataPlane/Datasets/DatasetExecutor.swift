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
        let catalog: ServingCatalog
        do {
            catalog = try ServingCatalog(snapshot: AgentRegistrySnapshot(
                workspace: spec.workspace, revision: spec.registryRevision ?? 0, issuedAt: spec.issuedAt, definitions: spec.definitions))
        } catch {
            throw JobExecutionError("the dataset job's definitions cannot be read: \(error)", retryable: false)
        }
        let builder = TrainingDatasetBuilder(
            catalog: { catalog }, offlineStore: (location.schema, store), chunkRows: chunkRows, logger: logger)
        let workspace = URL(fileURLWithPath: configuration.dataDirectory).appendingPathComponent("datasets")
        try FileManager.default.createDirectory(at: workspace, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])

        // The entity table: a file in a folder connection, or a query's rows exported to a file here.
        await context.report(JobProgress(phase: "reading-entities"))
        var exported: URL?
        defer { if let exported { try? FileManager.default.removeItem(at: exported) } }
        let entities: URL
        if let path = request.entities.path {
            entities = try file(path, in: request.entities.connection, field: "entities")
        } else {
            let url = try database(request.entities.connection, field: "entities")
            let target = workspace.appendingPathComponent("entities-\(spec.jobId)-\(UUID().uuidString).csv")
            exported = target
            try await EntityQueryExport(url: url, query: request.entities.query ?? "", logger: logger).write(to: target)
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
            throw JobExecutionError("\(error.field): \(redactingQuotes(error.detail))", retryable: false, localDetail: error.description)
        } catch let error as ServingError {
            throw JobExecutionError(error.description, retryable: false)
        }

        await context.report(JobProgress(phase: "building"))
        let metadata: DatasetMetadata
        if let path = request.output.path {
            metadata = try await writeFile(prepared, builder: builder, path: path, connection: request.output.connection)
        } else {
            metadata = try await writeTable(prepared, builder: builder, table: request.output.table ?? "", connection: request.output.connection)
        }
        logger.info("dataset built", metadata: [
            "larder.job": "\(spec.jobId)", "larder.rows": "\(metadata.rows)", "larder.output": .string(request.output.description),
        ])
        return JobMetrics(rowsRead: metadata.rows, rowsWritten: metadata.rows, dataset: metadata)
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

    /// Writes the CSV next to its final path and renames it there: readers never see half a file.
    func writeFile(_ prepared: TrainingDatasetBuilder.Prepared, builder: TrainingDatasetBuilder, path: String, connection: String) async throws
        -> DatasetMetadata
    {
        let target = try file(path, in: connection, field: "output")
        let partial = target.deletingLastPathComponent().appendingPathComponent(".\(target.lastPathComponent).partial-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: partial.path, contents: nil), let handle = FileHandle(forWritingAtPath: partial.path) else {
            throw JobExecutionError("output: cannot create \(path) in connection \(connection)", retryable: false)
        }
        do {
            let metadata = try await builder.writeCSV(prepared) { buffer in try handle.write(contentsOf: buffer.readableBytesView) }
            try handle.synchronize()
            try handle.close()
            if FileManager.default.fileExists(atPath: target.path) { try FileManager.default.removeItem(at: target) }
            try FileManager.default.moveItem(at: partial, to: target)
            return metadata
        } catch {
            try? handle.close()
            try? FileManager.default.removeItem(at: partial)
            throw error
        }
    }

    /// Creates `schema.table` and fills it, in one transaction: it exists whole or not at all.
    func writeTable(_ prepared: TrainingDatasetBuilder.Prepared, builder: TrainingDatasetBuilder, table: String, connection: String) async throws
        -> DatasetMetadata
    {
        let url = try database(connection, field: "output")
        let parts = table.split(separator: ".").map(String.init)
        guard parts.count == 2, parts.allSatisfy(Identifier.isValid) else {
            throw JobExecutionError("output: '\(table)' is not schema.table", retryable: false)
        }
        let columns = builder.tableColumns(prepared)
        for column in columns where column.name.isEmpty || column.name.utf8.count > Identifier.maximumLength
            || column.name.contains("\"") || column.name.contains("\u{0}")
        {
            throw JobExecutionError(
                "output: the column name '\(column.name.prefix(80))' cannot name a table column (at most 63 bytes, no quotes)", retryable: false)
        }
        let database = try await url.connect(logger: logger)
        do {
            let metadata = try await database.inTransaction(logger: logger) { connection -> DatasetMetadata in
                try await connection.execute(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(SQLIdentifier.quote(parts[0]))"), logger: logger)
                let definition = columns.map { SQLIdentifier.quote($0.name) + " " + $0.sqlType }.joined(separator: ", ")
                do {
                    try await connection.execute(PostgresQuery(unsafeSQL: """
                        CREATE TABLE \(SQLIdentifier.quote(parts[0])).\(SQLIdentifier.quote(parts[1])) (\(definition))
                        """), logger: logger)
                } catch let error as PSQLError where error.serverInfo?[.sqlState] == "42P07" {
                    throw JobExecutionError("output: the table \(table) exists already; name a new one", retryable: false)
                }
                try await connection.execute(PostgresQuery(unsafeSQL: "SET LOCAL search_path TO \(SQLIdentifier.quote(parts[0]))"), logger: logger)
                var result: DatasetMetadata?
                // COPY quotes the names itself (they hold no quote: checked above).
                try await connection.copyFrom(table: parts[1], columns: columns.map(\.name), logger: logger) { writer in
                    result = try await builder.writeCopyRows(prepared) { try await writer.write($0) }
                }
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

/// Runs an entity query in the customer's database and writes its rows as
/// CSV, for the dataset builder. The query runs in a transaction that is
/// rolled back, so it changes nothing even if it tried; `timestamptz`
/// columns are written in RFC 3339 UTC, `timestamp` columns without an
/// offset (refused unless the request assumes UTC), the rest as PostgreSQL's text.
struct EntityQueryExport {
    let url: PostgresURL
    let query: String
    let logger: Logger

    func write(to file: URL) async throws {
        guard FileManager.default.createFile(atPath: file.path, contents: nil, attributes: [.posixPermissions: 0o600]),
              let handle = FileHandle(forWritingAtPath: file.path)
        else { throw JobExecutionError("entities: cannot write the query's rows on the agent", retryable: true) }
        defer { try? handle.close() }
        let connection = try await url.connect(logger: logger)
        do {
            try await connection.query("BEGIN", logger: logger)
            // A view names the query's columns and their types.
            try await connection.execute(PostgresQuery(unsafeSQL: "CREATE TEMPORARY VIEW larder_entities AS \(query)"), logger: logger)
            var columns: [(name: String, type: String)] = []
            for try await (name, type) in try await connection.query(
                """
                SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
                WHERE attrelid = 'larder_entities'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum
                """, logger: logger).decode((String, String).self) { columns.append((name, type)) }
            let select = columns.map { column -> String in
                let name = SQLIdentifier.quote(column.name)
                switch column.type {
                case "timestamp with time zone": return "to_char(\(name) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                case "timestamp without time zone": return "to_char(\(name), 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
                default: return "\(name)::text"
                }
            }
            var csv = DatasetCSVWriter()
            csv.header(columns.map(\.name))
            for try await row in try await connection.query(
                PostgresQuery(unsafeSQL: "SELECT \(select.joined(separator: ", ")) FROM larder_entities"), logger: logger)
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

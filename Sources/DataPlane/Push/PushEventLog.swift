import Foundation
import Logging
import PostgresNIO
import Shared

/// The raw events of one `PushSource` in the offline store:
/// `<schema>.<workspace>__<source>__events` (see `OfflineRelationName`; a log
/// from before workspaces were in names is adopted when first written), one column per declared field (the event
/// and created times included), `larder_received_at` (when the agent took the
/// push) and `larder_sequence`, the arrival order. Every accepted push is
/// appended, in the transaction that writes
/// the plain views' rows, so the log is the offline record of the source:
/// the aggregation views it feeds are derived from it
/// (`PushedWindowTables`), and it can rebuild them.
struct PushEventLog: Sendable {
    let schema: String
    let workspace: String
    let source: SourceDefinition

    /// The table's name.
    var name: String { OfflineRelationName.make(workspace: workspace, legacyName) }

    /// Its name before workspaces were part of it.
    var legacyName: String { "\(source.name)__events" }

    /// The schema-qualified, quoted name.
    var qualifiedName: String { SQLIdentifier.quote(schema) + "." + SQLIdentifier.quote(name) }

    /// The declared fields, by name, then `larder_received_at`.
    var fields: [(name: String, type: ValueType)] {
        source.schema.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    static let receivedColumn = "larder_received_at"
    /// An identity column: a derived table's refresh reads the rows past the
    /// last sequence number it saw. Numbers are taken under the table's row
    /// lock, which the refresh's SHARE lock waits out, so no committed row can
    /// later appear below a watermark.
    static let sequenceColumn = "larder_sequence"

    /// Creates the table (and its index on arrival time) if missing.
    func create(on connection: PostgresConnection, logger: Logger) async throws {
        guard Identifier.isValid(schema), OfflineRelationName.isValid(name) else {
            throw PushError.offlineUnavailable("offline store: '\(schema).\(name)' is not a valid table name (at most \(Identifier.maximumLength) characters)")
        }
        let columns = fields.map { field in
            SQLIdentifier.quote(field.name) + " " + OfflineTable.sqlType(field.type) + (field.name == source.timestampField ? " NOT NULL" : "")
        } + [
            SQLIdentifier.quote(Self.receivedColumn) + " timestamptz NOT NULL",
            SQLIdentifier.quote(Self.sequenceColumn) + " bigint GENERATED ALWAYS AS IDENTITY",
        ]
        try await connection.inTransaction(logger: logger) { connection in
            try await connection.execute("SELECT pg_advisory_xact_lock(hashtext(\(qualifiedName)))", logger: logger)
            try await connection.execute(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(SQLIdentifier.quote(schema))"), logger: logger)
            try await adoptLegacyLog(on: connection, logger: logger)
            try await connection.execute(
                PostgresQuery(unsafeSQL: "CREATE TABLE IF NOT EXISTS \(qualifiedName) (\(columns.joined(separator: ", ")))"), logger: logger)
            // Arrival order: what a refresh of the derived tables reads past its watermark.
            try await connection.execute(PostgresQuery(unsafeSQL: """
                CREATE INDEX IF NOT EXISTS \(SQLIdentifier.quote(name + "_sequence")) ON \(qualifiedName) (\(SQLIdentifier.quote(Self.sequenceColumn)))
                """), logger: logger)
        }
    }

    /// Renames the log from before workspaces were in names, if there is one
    /// and no log of the new name (the caller's transaction), with its
    /// sequence index; serialised on the old name.
    func adoptLegacyLog(on connection: PostgresConnection, logger: Logger) async throws {
        guard legacyName != name else { return }
        let quotedSchema = SQLIdentifier.quote(schema)
        let legacy = quotedSchema + "." + SQLIdentifier.quote(legacyName)
        try await connection.execute("SELECT pg_advisory_xact_lock(hashtext(\(legacy)))", logger: logger)
        guard try await !OfflineTable.relationExists(qualifiedName, on: connection, logger: logger),
              try await OfflineTable.relationExists(legacy, on: connection, logger: logger)
        else { return }
        try await connection.execute(PostgresQuery(unsafeSQL: "ALTER TABLE \(legacy) RENAME TO \(SQLIdentifier.quote(name))"), logger: logger)
        try await connection.execute(PostgresQuery(unsafeSQL: """
            ALTER INDEX IF EXISTS \(quotedSchema).\(SQLIdentifier.quote(legacyName + "_sequence")) RENAME TO \(SQLIdentifier.quote(name + "_sequence"))
            """), logger: logger)
        logger.notice("adopted a push event log from before workspaces were in table names", metadata: [
            "larder.table": .string("\(schema).\(legacyName)"), "larder.renamed_to": .string(name),
        ])
    }

    /// Creates an index on `keys` and the event time, for reading one
    /// entity's events (one per set of join keys the derived views use).
    func createKeyIndex(_ keys: [String], on connection: PostgresConnection, logger: Logger) async throws {
        // Index names are per schema: the table's name is in the digest, so each log gets its own.
        let digest = ([name] + keys).joined(separator: ",").utf8.reduce(UInt64(14_695_981_039_346_656_037)) { ($0 ^ UInt64($1)) &* 1_099_511_628_211 }
        let index = "larder_events_" + String(digest, radix: 16)
        let columns = (keys + [source.timestampField]).map(SQLIdentifier.quote).joined(separator: ", ")
        try await connection.execute(
            PostgresQuery(unsafeSQL: "CREATE INDEX IF NOT EXISTS \(SQLIdentifier.quote(index)) ON \(qualifiedName) (\(columns))"), logger: logger)
    }

    /// Appends `batch` in COPY text format (the caller's transaction).
    func append(_ batch: PushBatch, receivedAt: Int64, on connection: PostgresConnection, logger: Logger) async throws {
        let fields = fields
        let columns = fields.map { batch.values($0.name, as: $0.type) }
        var encoder = CopyTextEncoder()
        for row in 0..<batch.count {
            for column in columns {
                encoder.value(column, row)
                encoder.separator()
            }
            encoder.timestamp(receivedAt)
            encoder.endRow()
        }
        try await connection.copyFrom(table: name, columns: fields.map(\.name) + [Self.receivedColumn], logger: logger) { writer in
            try await writer.write(encoder.buffer)
        }
    }
}

import Foundation
import Logging
import PostgresNIO
import Shared
import Synchronization

/// Appends pushed rows to the offline store: the source's event log
/// (`PushEventLog`) and the tables of the plain views reading the source
/// (`<schema>.<view>__v<version>`, as materialization writes them), all in
/// one transaction. With an idempotency key, the key is
/// recorded in `<schema>.larder_push_receipts` in the same transaction, and a
/// key already there appends nothing: a retry after a crash that came between
/// this commit and the agent's own journal is not written twice.
final class PushOfflineWriter: Sendable {
    let schema: String
    let url: PostgresURL
    let logger: Logger
    /// Tables (and the receipts table) known to exist: their DDL runs once per agent run.
    private let created = Mutex(Set<String>())

    init(schema: String, url: PostgresURL, logger: Logger) {
        self.schema = schema
        self.url = url
        self.logger = logger
    }
    /// How long receipts are kept in the offline store.
    static let receiptRetention = "7 days"

    var receiptsTable: String { SQLIdentifier.quote(schema) + ".larder_push_receipts" }

    /// Appends `events` to the log and `rows` to each table; false when `key`
    /// was applied before (nothing appended).
    func append(
        _ rows: [(table: OfflineTable, batch: OutputBatch)], events: PushBatch, log: PushEventLog, key: String?, receivedAt: Int64
    ) async throws -> Bool {
        let source = log.source.name
        let connection = try await url.connect(logger: logger)
        do {
            if !created.withLock({ $0.contains(log.name) }) {
                try await log.create(on: connection, logger: logger)
                created.withLock { _ = $0.insert(log.name) }
            }
            for (table, _) in rows where !created.withLock({ $0.contains(table.name) }) {
                try await table.create(on: connection, logger: logger)
                created.withLock { _ = $0.insert(table.name) }
            }
            if key != nil, !created.withLock({ $0.contains("larder_push_receipts") }) {
                try await createReceipts(on: connection)
                created.withLock { _ = $0.insert("larder_push_receipts") }
            }
            let appended = try await connection.inTransaction(logger: logger) { connection -> Bool in
                if let key {
                    var insert = PostgresQuery(unsafeSQL: """
                        INSERT INTO \(receiptsTable) (source, key, received_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1
                        """)
                    insert.binds.append(source)
                    insert.binds.append(key)
                    insert.binds.append(Date(timeIntervalSince1970: Double(receivedAt) / 1_000_000))
                    var inserted = false
                    for try await _ in try await connection.query(insert, logger: logger) { inserted = true }
                    guard inserted else { return false }
                }
                try await connection.execute(PostgresQuery(unsafeSQL: "SET LOCAL search_path TO \(SQLIdentifier.quote(schema))"), logger: logger)
                try await log.append(events, receivedAt: receivedAt, on: connection, logger: logger)
                for (table, batch) in rows {
                    var encoder = CopyTextEncoder()
                    batch.encode(into: &encoder)
                    try await connection.copyFrom(table: table.name, columns: table.columns.map(\.name), logger: logger) { writer in
                        try await writer.write(encoder.buffer)
                    }
                }
                return true
            }
            try await connection.close()
            return appended
        } catch {
            try? await connection.close()
            throw error
        }
    }

    func createReceipts(on connection: PostgresConnection) async throws {
        try await connection.inTransaction(logger: logger) { connection in
            try await connection.execute("SELECT pg_advisory_xact_lock(hashtext(\(receiptsTable)))", logger: logger)
            try await connection.execute(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(SQLIdentifier.quote(schema))"), logger: logger)
            try await connection.execute(PostgresQuery(unsafeSQL: """
                CREATE TABLE IF NOT EXISTS \(receiptsTable) (
                    source text NOT NULL, key text NOT NULL, received_at timestamptz NOT NULL, PRIMARY KEY (source, key))
                """), logger: logger)
            try await connection.execute(PostgresQuery(unsafeSQL: """
                CREATE INDEX IF NOT EXISTS larder_push_receipts_time ON \(receiptsTable) (received_at)
                """), logger: logger)
        }
    }

    /// Forgets receipts older than the retention.
    func pruneReceipts() async throws {
        let connection = try await url.connect(logger: logger)
        do {
            try await createReceipts(on: connection)
            try await connection.execute(
                PostgresQuery(unsafeSQL: "DELETE FROM \(receiptsTable) WHERE received_at < now() - interval '\(Self.receiptRetention)'"), logger: logger)
            try await connection.close()
        } catch {
            try? await connection.close()
            throw error
        }
    }
}

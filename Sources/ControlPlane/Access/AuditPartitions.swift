import Foundation
import Logging
import PostgresNIO
import Shared

/// The audit log's monthly partitions (`audit_log_YYYY_MM`): made ahead of
/// time by the scheduler's leader (and on demand when a record finds none),
/// and dropped whole once past the retention (`LARDER_AUDIT_RETENTION`), each
/// drop itself recorded in the log.
public enum AuditPartitions {
    /// The partition holding `date`, and its bounds.
    static func month(of date: Date) -> (name: String, start: Date, end: Date) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month], from: date)
        let start = calendar.date(from: parts)!
        let end = calendar.date(byAdding: .month, value: 1, to: start)!
        return (String(format: "audit_log_%04d_%02d", parts.year!, parts.month!), start, end)
    }

    /// Makes the partition of `date`'s month if it is missing.
    static func ensure(monthOf date: Date, on connection: PostgresConnection, logger: Logger) async throws {
        let (name, start, end) = month(of: date)
        try await connection.query("SELECT pg_advisory_xact_lock(hashtext(\(name)))", logger: logger)
        guard try await !exists(name, on: connection, logger: logger) else { return }
        // DDL takes no parameters: the bounds are written as literals (made here, from dates).
        try await connection.query(PostgresQuery(unsafeSQL: """
            CREATE TABLE IF NOT EXISTS "\(name)" PARTITION OF audit_log
            FOR VALUES FROM ('\(RFC3339.format(start))') TO ('\(RFC3339.format(end))')
            """), logger: logger)
    }

    static func exists(_ name: String, on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        for try await value in try await connection.query("SELECT to_regclass(\(name)) IS NOT NULL", logger: logger).decode(Bool.self) {
            return value
        }
        return false
    }

    /// Makes this month's and next month's partitions, and drops the months that
    /// ended more than `retention` before `now`, each drop recorded in the log
    /// in its own transaction. Returns the names dropped.
    @discardableResult
    public static func maintain(now: Date, retention: TimeInterval, client: PostgresClient, logger: Logger) async throws -> [String] {
        try await client.withConnection { connection in
            for date in [now, month(of: now).end] {
                try await connection.inTransaction(logger: logger) { try await ensure(monthOf: date, on: $0, logger: logger) }
            }
            let rows = try await connection.query(
                """
                SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'audit_log'::regclass ORDER BY 1
                """, logger: logger)
            var names: [String] = []
            for try await name in rows.decode(String.self) { names.append(name) }
            var dropped: [String] = []
            for name in names {
                guard let end = Self.end(ofPartition: name), end < now.addingTimeInterval(-retention) else { continue }
                try await connection.inTransaction(logger: logger) { connection in
                    try await connection.query(PostgresQuery(unsafeSQL: "DROP TABLE \"\(name)\""), logger: logger)
                    try await ensure(monthOf: now, on: connection, logger: logger)
                    try await connection.query(
                        """
                        INSERT INTO audit_log (principal, action, resource, outcome, status, request_id)
                        VALUES ('larder-control', 'DROP audit partition', \(name), 'success', 200, 'retention')
                        """, logger: logger)
                }
                logger.notice("dropped an audit log month past its retention", metadata: ["larder.partition": .string(name)])
                dropped.append(name)
            }
            return dropped
        }
    }

    /// The end of the month a partition named `audit_log_YYYY_MM` holds.
    static func end(ofPartition name: String) -> Date? {
        let parts = name.split(separator: "_")
        guard parts.count == 4, let year = Int(parts[2]), let month = Int(parts[3]) else { return nil }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar.date(from: DateComponents(year: year, month: month)).flatMap { calendar.date(byAdding: .month, value: 1, to: $0) }
    }
}

import Foundation
import Logging
import PostgresNIO

/// One numbered schema migration.
public struct Migration: Sendable, Hashable {
    /// Its number; migrations run in increasing order.
    public let version: Int
    /// Its name, from the file name (`0001_registry.sql` → `registry`).
    public let name: String
    /// The SQL script.
    public let sql: String
}

/// Brings the control plane's database schema up to date at start-up.
///
/// Each pending migration runs in its own transaction and is recorded in
/// `schema_migrations`. A session-level advisory lock serializes runners, so
/// several replicas starting at once apply each migration exactly once.
public struct MigrationRunner: Sendable {
    /// The advisory lock key: "larder" in ASCII.
    static let lockKey: Int64 = 0x6C61_7264_6572

    /// The migrations to apply, in order.
    public let migrations: [Migration]

    /// Creates a runner for `migrations` (the control plane's own by default).
    public init(migrations: [Migration] = ControlPlaneMigrations.all) {
        self.migrations = migrations.sorted { $0.version < $1.version }
    }

    /// Applies every pending migration; returns the versions it applied.
    @discardableResult
    public func run(on client: PostgresClient, logger: Logger) async throws -> [Int] {
        try await client.withConnection { connection in
            try await connection.query("SELECT pg_advisory_lock(\(Self.lockKey))", logger: logger)
            do {
                let applied = try await migrate(connection, logger: logger)
                try await connection.query("SELECT pg_advisory_unlock(\(Self.lockKey))", logger: logger)
                return applied
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.lockKey))", logger: logger)
                throw error
            }
        }
    }

    private func migrate(_ connection: PostgresConnection, logger: Logger) async throws -> [Int] {
        try await connection.query(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
            """, logger: logger)
        let done = try await appliedVersions(connection, logger: logger)
        var applied: [Int] = []
        for migration in migrations where !done.contains(migration.version) {
            try await connection.inTransaction(logger: logger) { connection in
                for statement in SQLScript.statements(in: migration.sql) {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query(
                    "INSERT INTO schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))", logger: logger)
            }
            logger.info("applied schema migration", metadata: ["larder.migration": "\(migration.version)_\(migration.name)"])
            applied.append(migration.version)
        }
        return applied
    }

    private func appliedVersions(_ connection: PostgresConnection, logger: Logger) async throws -> Set<Int> {
        var versions: Set<Int> = []
        for try await version in try await connection.query("SELECT version FROM schema_migrations", logger: logger).decode(Int.self) {
            versions.insert(version)
        }
        return versions
    }

    /// The versions not yet applied to the database (empty when up to date).
    public func pending(on client: PostgresClient, logger: Logger) async throws -> [Int] {
        try await client.withConnection { connection in
            let exists = try await connection.query("SELECT to_regclass('schema_migrations') IS NOT NULL", logger: logger)
            var hasTable = false
            for try await value in exists.decode(Bool.self) { hasTable = value }
            let done = hasTable ? try await appliedVersions(connection, logger: logger) : []
            return migrations.map(\.version).filter { !done.contains($0) }
        }
    }
}

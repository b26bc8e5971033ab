import Foundation
import Logging
import PostgresNIO
import Shared

/// Gives each test its own PostgreSQL database on the server that
/// `scripts/test` starts (or that `LARDER_TEST_DATABASE_URL` names), so
/// suites can run in parallel without seeing each other's rows.
public enum TestDatabase {
    /// Why a test database could not be had.
    public struct Unavailable: Error, CustomStringConvertible {
        public let description: String
    }

    /// The environment variable naming the test server's URL.
    public static let environmentKey = "LARDER_TEST_DATABASE_URL"

    /// The URL of the test server's maintenance database.
    public static func serverURL() throws -> PostgresURL {
        guard let text = ProcessInfo.processInfo.environment[environmentKey], !text.isEmpty else {
            throw Unavailable(description: """
                \(environmentKey) is not set. Run the suite with scripts/test, which starts a throwaway \
                PostgreSQL, or point \(environmentKey) at a server where this user may create databases.
                """)
        }
        do {
            return try PostgresURL(parsing: text)
        } catch {
            throw Unavailable(description: "\(environmentKey): \(error.description)")
        }
    }

    /// A client configuration for `url`.
    public static func configuration(for url: PostgresURL) -> PostgresClient.Configuration {
        var configuration = PostgresClient.Configuration(
            host: url.host, port: url.port, username: url.username, password: url.password,
            database: url.database, tls: .disable)
        configuration.options.connectTimeout = .seconds(10)
        return configuration
    }

    /// Creates a new, empty database, runs `body` with its URL, and drops the
    /// database afterwards, whether `body` succeeded or threw.
    public static func withIsolatedDatabase<Result: Sendable>(
        _ body: (PostgresURL) async throws -> Result
    ) async throws -> Result {
        let server = try serverURL()
        let name = "larder_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
        try await administer(server) { connection, logger in
            // The name is generated above from hex digits only, so quoting it is enough.
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \"\(name)\""), logger: logger)
        }
        do {
            let result = try await body(server.with(database: name))
            try await reportingHang("test database \(name) to be dropped") { try await drop(name, on: server) }
            return result
        } catch {
            try? await reportingHang("test database \(name) to be dropped after a failure") { try await drop(name, on: server) }
            throw error
        }
    }

    private static func drop(_ name: String, on server: PostgresURL) async throws {
        try await administer(server) { connection, logger in
            try await connection.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \"\(name)\" WITH (FORCE)"), logger: logger)
        }
    }

    /// Runs `body` on one connection to the maintenance database.
    public static func administer(
        _ url: PostgresURL, _ body: (PostgresConnection, Logger) async throws -> Void
    ) async throws {
        let logger = Logger(label: "larder.test-database")
        let connection = try await PostgresConnection.connect(
            configuration: .init(host: url.host, port: url.port, username: url.username, password: url.password,
                                 database: url.database, tls: .disable),
            id: 1, logger: logger)
        do {
            try await body(connection, logger)
            try await connection.close()
        } catch {
            try? await connection.close()
            throw error
        }
    }
}

extension TestDatabase {
    /// Runs `body` with a client pool on `url`, shut down afterwards.
    public static func withClient<Result: Sendable>(
        _ url: PostgresURL, _ body: (PostgresClient) async throws -> Result
    ) async throws -> Result {
        let client = PostgresClient(configuration: configuration(for: url), backgroundLogger: Logger(label: "larder.test-database"))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            let result = try await body(client)
            group.cancelAll()
            try await reportingHang("a test's client of \(url.database) to close") { try await group.waitForAll() }
            return result
        }
    }
}

import Logging
import NIOSSL
import PostgresNIO

// PostgreSQL plumbing both planes use: the control plane for its registry and
// ledger, the agent for the customer's sources and offline store.

extension PostgresURL {
    /// A PostgresNIO client configuration for this URL.
    public func clientConfiguration(maximumConnections: Int = 20) -> PostgresClient.Configuration {
        let mode: PostgresClient.Configuration.TLS
        switch tls {
        case .disable: mode = .disable
        case .prefer: mode = .prefer(.makeClientConfiguration())
        case .require: mode = .require(.makeClientConfiguration())
        }
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: username, password: password, database: database, tls: mode)
        configuration.options.maximumConnections = maximumConnections
        configuration.options.connectTimeout = .seconds(10)
        return configuration
    }

    /// Opens one connection (no pool), for work that needs a single session.
    public func connect(logger: Logger) async throws -> PostgresConnection {
        let mode: PostgresConnection.Configuration.TLS
        switch tls {
        case .disable: mode = .disable
        case .prefer: mode = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
        case .require: mode = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        }
        var configuration = PostgresConnection.Configuration(
            host: host, port: port, username: username, password: password, database: database, tls: mode)
        configuration.options.connectTimeout = .seconds(10)
        return try await PostgresConnection.connect(configuration: configuration, id: Int.random(in: 1...Int.max), logger: logger)
    }
}

extension PostgresConnection {
    /// Runs `body` in a transaction: COMMIT when it returns, ROLLBACK when it
    /// throws. Unlike `withTransaction`, the body's error is rethrown as is, so
    /// typed errors keep their meaning.
    public func inTransaction<Result: Sendable>(
        logger: Logger, begin: String = "BEGIN", _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await query(PostgresQuery(unsafeSQL: begin), logger: logger)
        do {
            let result = try await body(self)
            try requireOpen()
            try await query("COMMIT", logger: logger)
            return result
        } catch {
            if !isClosed { _ = try? await query("ROLLBACK", logger: logger) }
            throw error
        }
    }

    /// Throws when the connection is closed already (the server ended the
    /// session: an idle transaction past its timeout, a restart). A statement
    /// sent on a closed connection is never answered (PostgresNIO 1.x), so
    /// callers about to send one on a connection that may have been ended ask first.
    public func requireOpen() throws {
        if isClosed { throw ConnectionClosed() }
    }
}

/// The database ended the session under a statement about to be sent.
public struct ConnectionClosed: Error, Sendable, CustomStringConvertible {
    public init() {}
    public var description: String { "the database connection was closed (the server ended the session)" }
}

extension PostgresConnection {
    /// Runs a statement and reads its result to the end, so an error the
    /// server reports while executing it (a deadlock, a constraint) is thrown
    /// here rather than lost with the unread rows.
    public func execute(_ statement: PostgresQuery, logger: Logger) async throws {
        for try await _ in try await query(statement, logger: logger) {}
    }
}

extension PostgresClient {
    /// Runs a statement on a pooled connection and reads its result to the end.
    public func execute(_ statement: PostgresQuery, logger: Logger) async throws {
        for try await _ in try await query(statement, logger: logger) {}
    }
}

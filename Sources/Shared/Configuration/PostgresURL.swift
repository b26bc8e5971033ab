import Foundation

/// A PostgreSQL connection URL, `postgres://user:password@host:port/database?sslmode=…`,
/// split into the parts a client needs.
///
/// `description` never shows the password, so the value is safe to log.
public struct PostgresURL: Sendable, Hashable, CustomStringConvertible {
    /// How the connection uses TLS (`sslmode`).
    public enum TLSMode: String, Sendable, Hashable {
        /// Plain TCP.
        case disable
        /// TLS when the server offers it.
        case prefer
        /// TLS, with the server's certificate verified.
        case require
    }

    /// The server's host name or address (or a Unix socket folder).
    public var host: String
    /// The server's port.
    public var port: Int
    /// The role to log in as.
    public var username: String
    /// The role's password, if any.
    public var password: String?
    /// The database to connect to.
    public var database: String
    /// How to use TLS.
    public var tls: TLSMode

    /// Why a URL could not be read.
    public struct ParseError: Error, Sendable, CustomStringConvertible {
        /// What is wrong, without the password.
        public let description: String
    }

    /// Creates a URL from its parts.
    public init(host: String, port: Int = 5432, username: String, password: String? = nil, database: String, tls: TLSMode = .disable) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.tls = tls
    }

    /// Parses `postgres://` or `postgresql://` URLs. The user defaults to
    /// `postgres`, the port to 5432 and the database to the user's name.
    public init(parsing text: String) throws(ParseError) {
        guard let components = URLComponents(string: text),
              let scheme = components.scheme, ["postgres", "postgresql"].contains(scheme)
        else {
            throw ParseError(description: "expected a postgres:// URL such as postgres://user@127.0.0.1:5432/larder")
        }
        guard let host = components.host, !host.isEmpty else {
            throw ParseError(description: "the database URL names no host")
        }
        let username = components.user ?? "postgres"
        var database = components.path
        if database.hasPrefix("/") { database.removeFirst() }
        var tls = TLSMode.prefer
        if let mode = components.queryItems?.first(where: { $0.name == "sslmode" })?.value {
            switch mode {
            case "disable": tls = .disable
            case "allow", "prefer": tls = .prefer
            case "require", "verify-ca", "verify-full": tls = .require
            default: throw ParseError(description: "unknown sslmode '\(mode)'")
            }
        }
        self.init(
            host: host, port: components.port ?? 5432, username: username,
            password: components.password, database: database.isEmpty ? username : database, tls: tls)
    }

    /// The URL with the password left out.
    public var description: String {
        "postgres://\(username)\(password == nil ? "" : ":***")@\(host):\(port)/\(database)?sslmode=\(tls.rawValue)"
    }

    /// The full URL, password included, for handing to another process.
    public var urlString: String {
        var components = URLComponents()
        components.scheme = "postgres"
        components.user = username
        components.password = password
        components.host = host
        components.port = port
        components.path = "/" + database
        components.queryItems = [URLQueryItem(name: "sslmode", value: tls.rawValue)]
        return components.string ?? description
    }

    /// The same server and credentials, another database.
    public func with(database: String) -> PostgresURL {
        var copy = self
        copy.database = database
        return copy
    }
}

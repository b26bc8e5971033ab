import Foundation
import Shared
import Yams

/// How an agent is set up: a YAML file, with the token from the environment
/// or a file of its own (never logged).
///
/// ```yaml
/// control_plane: https://larder.example.com
/// token_file: /etc/larder/agent.token     # or LARDER_AGENT_TOKEN
/// public_key: ed25519:…                   # from `larder-control key`
/// data_directory: /var/lib/larder
/// concurrency: 2                          # jobs run at once
/// connections:                            # what sources' `connection:` names
///   rides_db:
///     postgres: postgres://reader:secret@db.internal:5432/rides?sslmode=require
///   local_files:
///     directory: /data/exports
/// ```
public struct AgentConfiguration: Sendable {
    /// The control plane's base URL.
    public var controlPlaneURL: String
    /// The agent's token.
    public var token: String
    /// The pinned key that must have signed every job spec.
    public var publicKey: SigningPublicKey
    /// Where the agent keeps its stores and state.
    public var dataDirectory: String
    /// How many jobs run at once.
    public var concurrency: Int
    /// The connections sources name, with their credentials: they never leave the agent.
    public var connections: [String: SourceConnection]
    /// Where the offline store lives: a PostgreSQL connection and a schema in it.
    public var offlineStore: OfflineStoreLocation?
    /// The longest a source query may run before PostgreSQL cancels it.
    public var sourceStatementTimeout: Duration

    /// The offline store's place: a schema in one of the agent's PostgreSQL connections.
    public struct OfflineStoreLocation: Sendable, Hashable {
        /// The connection's name.
        public var connection: String
        /// The schema holding one table per feature-view version.
        public var schema: String

        /// Creates a location.
        public init(connection: String, schema: String) {
            self.connection = connection
            self.schema = schema
        }
    }

    /// Why a configuration is unusable: names the file and the field.
    public struct Invalid: Error, Sendable, CustomStringConvertible {
        /// What is wrong.
        public let description: String
    }

    /// Creates a configuration.
    public init(
        controlPlaneURL: String, token: String, publicKey: SigningPublicKey, dataDirectory: String, concurrency: Int = 2,
        connections: [String: SourceConnection] = [:], offlineStore: OfflineStoreLocation? = nil,
        sourceStatementTimeout: Duration = .seconds(600)
    ) {
        self.connections = connections
        self.offlineStore = offlineStore
        self.sourceStatementTimeout = sourceStatementTimeout
        self.controlPlaneURL = controlPlaneURL
        self.token = token
        self.publicKey = publicKey
        self.dataDirectory = dataDirectory
        self.concurrency = concurrency
    }

    /// Reads `path`; the token comes from `LARDER_AGENT_TOKEN` or the file `token_file` names.
    /// Tools that only read the agent's local stores pass `requireToken: false`.
    public init(file path: String, environment: [String: String] = ProcessInfo.processInfo.environment, requireToken: Bool = true) throws(Invalid) {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw Invalid(description: "\(path): cannot read the agent configuration: \(error.localizedDescription)")
        }
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw Invalid(description: "\(path): not valid YAML: \(error)")
        }
        guard let mapping = node?.mapping else { throw Invalid(description: "\(path): expected a mapping of settings") }
        func field(_ name: String) -> (value: String, line: Int)? {
            guard let (key, value) = mapping.first(where: { $0.key.string == name }), let string = value.string else { return nil }
            return (string, key.mark?.line ?? 0)
        }
        let known: Set<String> = [
            "control_plane", "token_file", "public_key", "data_directory", "concurrency", "connections", "offline_store", "source_statement_timeout",
        ]
        for (key, _) in mapping {
            guard let name = key.string, known.contains(name) else {
                throw Invalid(description: "\(path):\(key.mark?.line ?? 0): unknown setting '\(key.string ?? "?")'; settings are \(known.sorted().joined(separator: ", "))")
            }
        }
        guard let url = field("control_plane"), url.value.hasPrefix("http://") || url.value.hasPrefix("https://") else {
            throw Invalid(description: "\(path): control_plane: the control plane's URL, such as https://larder.example.com, is required")
        }
        guard let key = field("public_key") else {
            throw Invalid(description: "\(path): public_key: required; print it on the control plane with 'larder-control key'")
        }
        let publicKey: SigningPublicKey
        do { publicKey = try SigningPublicKey(parsing: key.value) } catch {
            throw Invalid(description: "\(path):\(key.line): public_key: \(error.description)")
        }
        guard let directory = field("data_directory") else { throw Invalid(description: "\(path): data_directory: required") }
        var concurrency = 2
        if let text = field("concurrency") {
            guard let value = Int(text.value), (1...64).contains(value) else {
                throw Invalid(description: "\(path):\(text.line): concurrency: a number from 1 to 64")
            }
            concurrency = value
        }
        var token = environment["LARDER_AGENT_TOKEN"] ?? ""
        if token.isEmpty, let file = field("token_file") {
            do { token = try String(contentsOfFile: file.value, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) } catch {
                throw Invalid(description: "\(path):\(file.line): token_file: cannot read \(file.value)")
            }
        }
        guard !token.isEmpty || !requireToken else {
            throw Invalid(description: "\(path): no token: set LARDER_AGENT_TOKEN or token_file (create one with 'larder tokens create <agent>')")
        }
        var connections: [String: SourceConnection] = [:]
        if let node = mapping.first(where: { $0.key.string == "connections" })?.value {
            connections = try SourceConnection.parse(node, file: path)
        }
        var offlineStore: OfflineStoreLocation?
        if let (key, node) = mapping.first(where: { $0.key.string == "offline_store" }) {
            let line = key.mark?.line ?? 0
            guard let fields = node.mapping, let connection = fields["connection"]?.string, let schema = fields["schema"]?.string, fields.count == 2 else {
                throw Invalid(description: "\(path):\(line): offline_store: give 'connection: <a postgres connection>' and 'schema: <name>'")
            }
            guard case .postgres? = connections[connection] else {
                throw Invalid(description: "\(path):\(line): offline_store.connection: '\(connection)' is not a postgres connection under connections")
            }
            guard Identifier.isValid(schema) else {
                throw Invalid(description: "\(path):\(line): offline_store.schema: '\(schema)' is not a valid schema name (lowercase letters, digits, '_')")
            }
            offlineStore = OfflineStoreLocation(connection: connection, schema: schema)
        }
        var timeout = Duration.seconds(600)
        if let text = field("source_statement_timeout") {
            guard let span = try? TimeSpan.parse(text.value), span.seconds > 0 else {
                throw Invalid(description: "\(path):\(text.line): source_statement_timeout: a duration such as 30s, 10m or 1h")
            }
            timeout = .seconds(span.seconds)
        }
        self.init(
            controlPlaneURL: url.value, token: token, publicKey: publicKey, dataDirectory: directory.value, concurrency: concurrency,
            connections: connections, offlineStore: offlineStore, sourceStatementTimeout: timeout)
    }
}

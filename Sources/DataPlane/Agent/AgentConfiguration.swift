import Foundation
import Shared
import Yams

/// How an agent is set up: a YAML file, with the token from the environment
/// or a file of its own (never logged).
///
/// ```yaml
/// control_plane: https://larder.example.com
/// token_file: /etc/larder/agent.token     # or LARDER_AGENT_TOKEN (`larder-agent enroll` writes both)
/// ca_file: /etc/larder/ca.pem             # trust only this CA for the control plane (default: the system's)
/// allow_insecure_http: false              # true: allow http:// to a host other than this one
/// public_key: ed25519:…                   # from `larder-control key`
/// data_directory: /var/lib/larder
/// concurrency: 2                          # jobs run at once
/// connections:                            # what sources' `connection:` names
///   rides_db:
///     postgres: postgres://reader:secret@db.internal:5432/rides?sslmode=require
///   local_files:
///     directory: /data/exports
/// serving:                                # the feature server (default: listen 127.0.0.1:6566)
///   listen: 0.0.0.0:6566                  # or `serving: off`
///   max_batch_entities: 1000
///   metrics_without_token: false          # true: Prometheus scrapes /metrics without a token
/// ```
public struct AgentConfiguration: Sendable {
    /// The control plane's base URL.
    public var controlPlaneURL: String
    /// The agent's token (as read at start).
    public var token: String
    /// The file the token was read from, re-read when it changes (credential rotation); nil when it came from the environment.
    public var tokenFile: String?
    /// The CA certificates (PEM) the control plane's certificate must chain to; nil: the system's trust store.
    public var caFile: String?
    /// Whether `http://` to a non-loopback control plane is allowed.
    public var allowInsecureHTTP: Bool
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
    /// The feature server's settings; nil when it is off.
    public var serving: ServingSettings?

    /// How the agent's feature server listens and what it accepts.
    public struct ServingSettings: Sendable, Hashable {
        /// The address to listen on.
        public var host: String
        /// The port (0: any free one, written to `<data_directory>/serving-address`).
        public var port: Int
        /// The most entities one request may ask for (more: 413).
        public var maxBatchEntities: Int
        /// The largest request body, in bytes (more: 413).
        public var maxBodyBytes: Int
        /// Whether `/metrics` answers without a token (by default it needs a consumer token, like every read).
        public var metricsWithoutToken: Bool
        /// HTTPS instead of HTTP: the certificate chain and key (`tls_certificate`, `tls_key`).
        public var tls: TLSFiles?

        /// The defaults: loopback port 6566, 1,000 entities, 8 MiB bodies, metrics behind a token.
        public init(host: String = "127.0.0.1", port: Int = 6566, maxBatchEntities: Int = 1_000, maxBodyBytes: Int = 8 << 20, metricsWithoutToken: Bool = false) {
            self.host = host
            self.port = port
            self.maxBatchEntities = maxBatchEntities
            self.maxBodyBytes = maxBodyBytes
            self.metricsWithoutToken = metricsWithoutToken
        }
    }

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
        sourceStatementTimeout: Duration = .seconds(600), serving: ServingSettings? = ServingSettings(), tokenFile: String? = nil,
        caFile: String? = nil, allowInsecureHTTP: Bool = false
    ) {
        self.tokenFile = tokenFile
        self.caFile = caFile
        self.allowInsecureHTTP = allowInsecureHTTP
        self.serving = serving
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
        try self.init(text: text, path: path, environment: environment, requireToken: requireToken)
    }

    /// Reads a configuration's text; `path` names it in errors.
    public init(text: String, path: String, environment: [String: String] = ProcessInfo.processInfo.environment, requireToken: Bool = true) throws(Invalid) {
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
            "control_plane", "token_file", "public_key", "data_directory", "concurrency", "connections", "offline_store", "source_statement_timeout", "serving",
            "ca_file", "allow_insecure_http",
        ]
        for (key, _) in mapping {
            guard let name = key.string, known.contains(name) else {
                throw Invalid(description: "\(path):\(key.mark?.line ?? 0): unknown setting '\(key.string ?? "?")'; settings are \(known.sorted().joined(separator: ", "))")
            }
        }
        guard let url = field("control_plane"), url.value.hasPrefix("http://") || url.value.hasPrefix("https://") else {
            throw Invalid(description: "\(path): control_plane: the control plane's URL, such as https://larder.example.com, is required")
        }
        var allowInsecureHTTP = false
        if let flag = field("allow_insecure_http") {
            guard let value = ["true": true, "false": false][flag.value] else {
                throw Invalid(description: "\(path):\(flag.line): allow_insecure_http: true or false")
            }
            allowInsecureHTTP = value
        }
        allowInsecureHTTP = allowInsecureHTTP || ControlPlaneConnection.insecureHTTPAllowed(in: environment)
        do { try ControlPlaneConnection.check(url.value, allowInsecureHTTP: allowInsecureHTTP, environment: environment) } catch {
            throw Invalid(description: "\(path):\(url.line): control_plane: \(error.description)")
        }
        let caFile = field("ca_file")
        if let caFile, !FileManager.default.isReadableFile(atPath: caFile.value) {
            throw Invalid(description: "\(path):\(caFile.line): ca_file: cannot read \(caFile.value)")
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
        var tokenFile: String?
        if token.isEmpty, let file = field("token_file") {
            tokenFile = file.value
            do { token = try String(contentsOfFile: file.value, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) } catch {
                throw Invalid(description: "\(path):\(file.line): token_file: cannot read \(file.value)")
            }
        }
        guard !token.isEmpty || !requireToken else {
            throw Invalid(description: "\(path): no token: set LARDER_AGENT_TOKEN or token_file (create one with 'larder tokens create <agent>')")
        }
        var connections: [String: SourceConnection] = [:]
        if let node = mapping.first(where: { $0.key.string == "connections" })?.value {
            connections = try SourceConnection.parse(node, file: path, environment: environment)
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
        var serving: ServingSettings? = ServingSettings()
        if let (key, node) = mapping.first(where: { $0.key.string == "serving" }) {
            serving = try Self.serving(node, line: key.mark?.line ?? 0, file: path)
        }
        self.init(
            controlPlaneURL: url.value, token: token, publicKey: publicKey, dataDirectory: directory.value, concurrency: concurrency,
            connections: connections, offlineStore: offlineStore, sourceStatementTimeout: timeout, serving: serving, tokenFile: tokenFile,
            caFile: caFile?.value, allowInsecureHTTP: allowInsecureHTTP)
    }

    /// Reads the `serving:` block: `off`, or a mapping of settings.
    static func serving(_ node: Node, line: Int, file path: String) throws(Invalid) -> ServingSettings? {
        if let text = node.string, text == "off" || text == "false" { return nil }
        guard let fields = node.mapping else {
            throw Invalid(description: "\(path):\(line): serving: 'off', or settings such as 'listen: 127.0.0.1:6566'")
        }
        var settings = ServingSettings()
        var certificate: String?, privateKey: String?
        for (key, value) in fields {
            let at = "\(path):\(key.mark?.line ?? line): serving.\(key.string ?? "?")"
            switch key.string {
            case "listen":
                guard let text = value.string, let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
                      (0...65_535).contains(port), colon > text.startIndex
                else { throw Invalid(description: "\(at): an address and port such as 127.0.0.1:6566 or 0.0.0.0:6566") }
                settings.host = String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
                settings.port = port
            case "max_batch_entities":
                guard let number = value.string.flatMap(Int.init), (1...100_000).contains(number) else {
                    throw Invalid(description: "\(at): a number from 1 to 100000")
                }
                settings.maxBatchEntities = number
            case "max_body_bytes":
                guard let number = value.string.flatMap(Int.init), (1_024...(1 << 30)).contains(number) else {
                    throw Invalid(description: "\(at): a number of bytes from 1024 to 1073741824")
                }
                settings.maxBodyBytes = number
            case "metrics_without_token":
                guard let flag = value.string.flatMap({ ["true": true, "false": false][$0] }) else { throw Invalid(description: "\(at): true or false") }
                settings.metricsWithoutToken = flag
            case "tls_certificate", "tls_key":
                guard let file = value.string, FileManager.default.isReadableFile(atPath: file) else {
                    throw Invalid(description: "\(at): cannot read \(value.string ?? "?") (a PEM file)")
                }
                if key.string == "tls_certificate" { certificate = file } else { privateKey = file }
            default:
                throw Invalid(description: "\(at): unknown setting; serving takes listen, max_batch_entities, max_body_bytes, metrics_without_token, tls_certificate, tls_key")
            }
        }
        switch (certificate, privateKey) {
        case (let certificate?, let privateKey?): settings.tls = TLSFiles(certificate: certificate, key: privateKey)
        case (nil, nil): break
        default: throw Invalid(description: "\(path):\(line): serving: HTTPS needs both tls_certificate and tls_key")
        }
        return settings
    }
}

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
/// workspace: driver-stats                 # pinned (enroll writes it): specs and snapshots of another workspace are refused
/// data_directory: /var/lib/larder
/// concurrency: 2                          # jobs run at once
/// connections:                            # what sources' `connection:` names
///   rides_db:
///     postgres: postgres://reader:secret@db.internal:5432/rides?sslmode=require
///     datasets: training                  # dataset jobs may create new tables in this schema (default: none)
///   local_files:
///     directory: /data/exports
///     datasets: /data/training            # dataset jobs may create new files in this folder (default: none)
/// report_statistics: full                 # per-feature statistics sent to the control plane: full, counts or none
/// statistics_min_rows: 20                 # min/max/mean only for features with at least this many non-null values
/// datasets:                               # dataset builds (defaults shown)
///   entity_queries_on_offline_store: false  # entity queries may run on the offline store's connection
///   max_upload_bytes: 1073741824          # the largest entity table POST /v1/datasets/build takes
///   max_concurrent_builds: 2              # builds at once through the API (more: 429)
///   spool_bytes: 4294967296               # uploads held on disk at once, all builds together (more: 429)
///   lookup_indexes: true                  # make a table's (join keys, time) index when small datasets would look it up
/// online_store: embedded                 # or redis: {addresses: [host:port], …} (see `OnlineStoreSettings`)
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
    /// The workspace pinned at enrollment: every spec and snapshot must name it
    /// (nil, for an agent configured by hand without it: the one its hello answer names).
    public var workspace: String?
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
    /// Where each connection takes dataset outputs; connections absent here take none.
    public var datasetPlaces: [String: DatasetPlace]
    /// Bounds on dataset builds.
    public var datasets: DatasetSettings
    /// Which per-feature statistics jobs report to the control plane.
    public var statistics: StatisticsPolicy
    /// Where the online store lives.
    public var onlineStore: OnlineStoreSettings = .embedded

    /// Which per-feature statistics of a job cross to the control plane:
    /// counts are about the data's shape, min/max/mean are about its values
    /// (of one row, when there is one), so they are sent only for features
    /// with enough non-null values, and only when the customer allows it.
    public struct StatisticsPolicy: Sendable, Hashable {
        /// What is sent.
        public enum Level: String, Sendable, Hashable, CaseIterable {
            /// Counts, null counts, disallowed counts, and min/max/mean where there are enough values.
            case full
            /// Counts only: never min, max or mean.
            case counts
            /// No per-feature statistics at all.
            case none
        }

        /// What is sent.
        public var level: Level
        /// The fewest non-null values a feature's min/max/mean are reported for.
        public var minimumRows: Int

        /// The defaults: full, from 20 values.
        public init(level: Level = .full, minimumRows: Int = 20) {
            self.level = level
            self.minimumRows = minimumRows
        }

        /// `summaries` as they may be reported.
        public func reported(_ summaries: [FeatureSummary]) -> [FeatureSummary] {
            switch level {
            case .none: return []
            case .counts, .full:
                return summaries.map { summary in
                    guard level == .counts || summary.count < Int64(minimumRows) else { return summary }
                    var redacted = summary
                    redacted.min = nil
                    redacted.max = nil
                    redacted.mean = nil
                    return redacted
                }
            }
        }

        /// Expectation results as they may be reported: a min or max check's
        /// observed value only where that feature's min/max is reported.
        public func reported(_ report: ExpectationReport, summaries: [FeatureSummary]) -> ExpectationReport {
            let shown = Dictionary(reported(summaries).map { ($0.feature, $0.min != nil) }, uniquingKeysWith: { first, _ in first })
            var report = report
            report.results = report.results.map { result in
                guard result.check == .min || result.check == .max, shown[result.feature ?? ""] != true else { return result }
                var hidden = result
                hidden.observed = nil
                return hidden
            }
            return report
        }
    }

    /// What dataset builds may do and use.
    public struct DatasetSettings: Sendable, Hashable {
        /// Whether entity queries may run on the offline store's connection (it can write the stores).
        public var entityQueriesOnOfflineStore: Bool
        /// The largest entity table `POST /v1/datasets/build` takes, in bytes.
        public var maxUploadBytes: Int
        /// How many API builds run at once; more get 429.
        public var maxConcurrentBuilds: Int
        /// How many bytes of uploaded entity tables may be on disk at once; more get 429.
        public var spoolBytes: Int
        /// Whether the agent makes an offline table's lookup index when a dataset would rather look it up
        /// than scan it (`TrainingDatasetBuilder.createsLookupIndexes`).
        public var lookupIndexes: Bool

        /// The defaults: no entity queries on the offline store, 1 GiB uploads, 2 builds, 4 GiB spooled, lookup indexes made.
        public init(
            entityQueriesOnOfflineStore: Bool = false, maxUploadBytes: Int = 1 << 30, maxConcurrentBuilds: Int = 2, spoolBytes: Int = 4 << 30,
            lookupIndexes: Bool = true
        ) {
            self.entityQueriesOnOfflineStore = entityQueriesOnOfflineStore
            self.maxUploadBytes = maxUploadBytes
            self.maxConcurrentBuilds = maxConcurrentBuilds
            self.spoolBytes = spoolBytes
            self.lookupIndexes = lookupIndexes
        }
    }

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
        /// Timeouts and limits on each connection (request head time, body rate, header size, bodies without credentials).
        public var connectionLimits = HTTPConnectionLimits()

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
        caFile: String? = nil, allowInsecureHTTP: Bool = false, datasetPlaces: [String: DatasetPlace] = [:],
        datasets: DatasetSettings = DatasetSettings(), statistics: StatisticsPolicy = StatisticsPolicy(), workspace: String? = nil
    ) {
        self.workspace = workspace
        self.statistics = statistics
        self.datasetPlaces = datasetPlaces
        self.datasets = datasets
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
            "ca_file", "allow_insecure_http", "datasets", "report_statistics", "statistics_min_rows", "workspace", "online_store",
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
        var places: [String: DatasetPlace] = [:]
        if let node = mapping.first(where: { $0.key.string == "connections" })?.value {
            places = try DatasetPlace.parse(node, connections: connections, offlineStore: offlineStore, file: path)
        }
        var statistics = StatisticsPolicy()
        if let text = field("report_statistics") {
            guard let level = StatisticsPolicy.Level(rawValue: text.value) else {
                throw Invalid(description: "\(path):\(text.line): report_statistics: full, counts or none")
            }
            statistics.level = level
        }
        if let text = field("statistics_min_rows") {
            guard let value = Int(text.value), (1...1_000_000_000).contains(value) else {
                throw Invalid(description: "\(path):\(text.line): statistics_min_rows: a number from 1 to 1000000000")
            }
            statistics.minimumRows = value
        }
        var datasets = DatasetSettings()
        if let (key, node) = mapping.first(where: { $0.key.string == "datasets" }) {
            datasets = try Self.datasets(node, line: key.mark?.line ?? 0, file: path)
        }
        self.init(
            controlPlaneURL: url.value, token: token, publicKey: publicKey, dataDirectory: directory.value, concurrency: concurrency,
            connections: connections, offlineStore: offlineStore, sourceStatementTimeout: timeout, serving: serving, tokenFile: tokenFile,
            caFile: caFile?.value, allowInsecureHTTP: allowInsecureHTTP, datasetPlaces: places, datasets: datasets,
            statistics: statistics, workspace: field("workspace")?.value)
        if let (key, node) = mapping.first(where: { $0.key.string == "online_store" }) {
            onlineStore = try OnlineStoreSettings.parse(node, line: key.mark?.line ?? 0, file: path)
        }
    }

    /// Reads the `datasets:` block.
    static func datasets(_ node: Node, line: Int, file path: String) throws(Invalid) -> DatasetSettings {
        guard let fields = node.mapping else {
            throw Invalid(description: "\(path):\(line): datasets: settings such as 'max_concurrent_builds: 2'")
        }
        var settings = DatasetSettings()
        for (key, value) in fields {
            let at = "\(path):\(key.mark?.line ?? line): datasets.\(key.string ?? "?")"
            func number(_ range: ClosedRange<Int>) throws(Invalid) -> Int {
                guard let number = value.string.flatMap(Int.init), range.contains(number) else {
                    throw Invalid(description: "\(at): a number from \(range.lowerBound) to \(range.upperBound)")
                }
                return number
            }
            func flag() throws(Invalid) -> Bool {
                guard let flag = value.string.flatMap({ ["true": true, "false": false][$0] }) else { throw Invalid(description: "\(at): true or false") }
                return flag
            }
            switch key.string {
            case "entity_queries_on_offline_store": settings.entityQueriesOnOfflineStore = try flag()
            case "lookup_indexes": settings.lookupIndexes = try flag()
            case "max_upload_bytes": settings.maxUploadBytes = try number(1_024...(1 << 40))
            case "max_concurrent_builds": settings.maxConcurrentBuilds = try number(1...64)
            case "spool_bytes": settings.spoolBytes = try number(1_024...(1 << 44))
            default:
                throw Invalid(description: "\(at): unknown setting; datasets takes entity_queries_on_offline_store, max_upload_bytes, max_concurrent_builds, spool_bytes, lookup_indexes")
            }
        }
        return settings
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

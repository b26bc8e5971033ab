import Foundation
import Logging
import Shared

/// How `larder-control` is set up. Each setting comes from a command-line flag,
/// else an environment variable, else a default:
///
/// | setting | flag | environment | default |
/// |---|---|---|---|
/// | database | `--database-url` | `LARDER_DATABASE_URL` | required |
/// | listen address | `--listen` | `LARDER_LISTEN` | `127.0.0.1:7070` |
/// | TLS certificate (PEM) | `--tls-certificate` | `LARDER_TLS_CERTIFICATE` | none (plain HTTP) |
/// | TLS private key (PEM) | `--tls-key` | `LARDER_TLS_KEY` | none |
/// | log level | `--log-level` | `LARDER_LOG_LEVEL` | `info` |
/// | database pool size | | `LARDER_DATABASE_POOL_SIZE` | 20 |
/// | how long to wait at start for the database to answer | | `LARDER_DATABASE_WAIT` (a duration) | `60s` |
/// | first admin's token | | `LARDER_BOOTSTRAP_TOKEN` | none: a new one is printed once |
/// | how long that token works (it also stops once another admin is made) | | `LARDER_BOOTSTRAP_TTL` (a duration) | `24h` |
/// | how long audit records are kept (whole months dropped past it) | | `LARDER_AUDIT_RETENTION` | `400d` |
/// | how long ended jobs, plans and resolved alerts are kept | | `LARDER_HISTORY_RETENTION` | `90d` |
/// | job lease | | `LARDER_LEASE_SECONDS` | 30 |
/// | agent heartbeat interval | | `LARDER_HEARTBEAT_SECONDS` | 10 |
/// | longest claim wait | | `LARDER_MAX_CLAIM_WAIT_SECONDS` | 30 |
/// | first retry delay (doubling) | | `LARDER_RETRY_BASE_SECONDS` | 5 |
/// | attempts per job | | `LARDER_MAX_ATTEMPTS` | 5 |
/// | scheduler tick | | `LARDER_SCHEDULER_INTERVAL_SECONDS` | 10 |
/// | backfill chunk | | `LARDER_BACKFILL_CHUNK` | `1d` |
/// | scheduler on this replica | | `LARDER_SCHEDULER` (`on`/`off`) | `on` |
/// | the key sealing the signing key at rest | | `LARDER_SIGNING_KEY_FILE` (32 random bytes, base64 or hex) | none: stored in clear, with a warning |
/// | alert webhooks | | `LARDER_ALERT_WEBHOOKS` (comma-separated URLs) | none |
/// | their signing secret | | `LARDER_ALERT_WEBHOOK_SECRET` (at least 16 characters) | required with webhooks |
/// | proxies whose forwarding headers name the client | | `LARDER_TRUSTED_PROXIES` (comma-separated CIDRs) | none |
/// | password checks at once | | `LARDER_LOGIN_CONCURRENCY` | 2 |
/// | failed attempts per token, user or address before 429 | | `LARDER_AUTH_FAILURE_BURST` | 10 |
/// | the window those refill over | | `LARDER_AUTH_FAILURE_WINDOW_SECONDS` | 60 |
public struct ControlPlaneConfiguration: Sendable {
    /// The registry database.
    public var database: PostgresURL
    /// The host to listen on.
    public var host: String
    /// The port to listen on; 0 picks a free one.
    public var port: Int
    /// PEM certificate chain and private key files, when serving HTTPS.
    public var tls: TLSFiles?
    /// The log level.
    public var logLevel: Logger.Level
    /// The most database connections the pool opens.
    public var databasePoolSize: Int
    /// The token of the first admin, created on first start with an empty database.
    public var bootstrapToken: APIToken?
    /// Leases, retries and scheduling.
    public var jobs: JobSettings
    /// Where alert events are posted, if anywhere.
    public var alertWebhooks: AlertWebhookSettings?
    /// Seals the signing key in the database (`LARDER_SIGNING_KEY_FILE`).
    public var signingKeyEncryption: SigningKeyEncryption?
    /// Throttling of failed authentications and bounds on login work.
    public var abuse = AbuseSettings()
    /// How long the bootstrap token works (`LARDER_BOOTSTRAP_TTL`).
    public var bootstrapTokenLifetime: TimeInterval = 86_400
    /// Timeouts and limits on each HTTP connection.
    public var connectionLimits = HTTPConnectionLimits()
    /// How long audit records are kept (`LARDER_AUDIT_RETENTION`).
    public var auditRetention: TimeInterval = 400 * 86_400
    /// How long ended jobs, plans and resolved alerts are kept (see `HistoryRetention`).
    public var historyRetention: TimeInterval = 90 * 86_400
    /// How long the server waits at start for its database to answer before it gives up.
    public var databaseWait: Duration = .seconds(60)

    /// Why a configuration is unusable.
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        /// What is wrong, naming the setting.
        public let description: String
    }

    /// Creates a configuration.
    public init(
        database: PostgresURL, host: String = "127.0.0.1", port: Int = 7070, tls: TLSFiles? = nil,
        logLevel: Logger.Level = .info, databasePoolSize: Int = 20, bootstrapToken: APIToken? = nil, jobs: JobSettings = JobSettings(),
        alertWebhooks: AlertWebhookSettings? = nil, signingKeyEncryption: SigningKeyEncryption? = nil
    ) {
        self.signingKeyEncryption = signingKeyEncryption
        self.jobs = jobs
        self.alertWebhooks = alertWebhooks
        self.database = database
        self.host = host
        self.port = port
        self.tls = tls
        self.logLevel = logLevel
        self.databasePoolSize = databasePoolSize
        self.bootstrapToken = bootstrapToken
    }

    /// Reads the configuration from flags (given as optionals) over the environment.
    public init(
        databaseURL: String?, listen: String?, tlsCertificate: String?, tlsKey: String?, logLevel: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(Invalid) {
        guard let urlText = databaseURL ?? environment["LARDER_DATABASE_URL"], !urlText.isEmpty else {
            throw Invalid(description: "no database: pass --database-url or set LARDER_DATABASE_URL (postgres://user@host:5432/larder)")
        }
        let database: PostgresURL
        do {
            database = try PostgresURL(parsing: urlText)
        } catch {
            throw Invalid(description: "LARDER_DATABASE_URL: \(error.description)")
        }
        let (host, port) = try Self.parseListen(listen ?? environment["LARDER_LISTEN"] ?? "127.0.0.1:7070")
        var tls: TLSFiles?
        let certificate = tlsCertificate ?? environment["LARDER_TLS_CERTIFICATE"]
        let key = tlsKey ?? environment["LARDER_TLS_KEY"]
        switch (certificate, key) {
        case (let certificate?, let key?): tls = TLSFiles(certificate: certificate, key: key)
        case (nil, nil): tls = nil
        default: throw Invalid(description: "TLS needs both a certificate (LARDER_TLS_CERTIFICATE) and a key (LARDER_TLS_KEY)")
        }
        let levelText = logLevel ?? environment["LARDER_LOG_LEVEL"] ?? "info"
        guard let level = Logger.Level(rawValue: levelText.lowercased()) else {
            throw Invalid(description: "log level '\(levelText)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        var poolSize = 20
        if let text = environment["LARDER_DATABASE_POOL_SIZE"] {
            guard let size = Int(text), size >= 1 else { throw Invalid(description: "LARDER_DATABASE_POOL_SIZE must be a positive number") }
            poolSize = size
        }
        var bootstrapToken: APIToken?
        if let text = environment["LARDER_BOOTSTRAP_TOKEN"], !text.isEmpty {
            guard let token = APIToken(parsing: text) else {
                throw Invalid(description: "LARDER_BOOTSTRAP_TOKEN is not a Larder token; make one with 'larder-control token'")
            }
            bootstrapToken = token
        }
        var webhooks: AlertWebhookSettings?
        if let text = environment["LARDER_ALERT_WEBHOOKS"], !text.isEmpty {
            let urls = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            for url in urls where !(url.hasPrefix("https://") || url.hasPrefix("http://")) || URL(string: url)?.host == nil {
                throw Invalid(description: "LARDER_ALERT_WEBHOOKS: '\(url)' is not an http(s) URL")
            }
            guard let secret = environment["LARDER_ALERT_WEBHOOK_SECRET"], secret.count >= 16 else {
                throw Invalid(description: "LARDER_ALERT_WEBHOOK_SECRET must be set (at least 16 characters) when LARDER_ALERT_WEBHOOKS is")
            }
            webhooks = AlertWebhookSettings(urls: urls, secret: secret)
        }
        var encryption: SigningKeyEncryption?
        if let path = environment["LARDER_SIGNING_KEY_FILE"], !path.isEmpty {
            do { encryption = try SigningKeyEncryption(file: path) } catch { throw Invalid(description: error.description) }
        }
        self.init(
            database: database, host: host, port: port, tls: tls, logLevel: level, databasePoolSize: poolSize,
            bootstrapToken: bootstrapToken, jobs: try Self.jobSettings(environment), alertWebhooks: webhooks, signingKeyEncryption: encryption)
        abuse = try Self.abuseSettings(environment)
        /// A duration setting of at least `minimum` seconds (`wording`: "1m, such as 24h"), or nil when unset.
        func seconds(_ name: String, atLeast minimum: Int64, _ wording: String) throws(Invalid) -> Int64? {
            guard let text = environment[name], !text.isEmpty else { return nil }
            guard let span = try? TimeSpan.parse(text), span.seconds >= minimum else {
                throw Invalid(description: "\(name) must be a duration of at least \(wording)")
            }
            return span.seconds
        }
        if let value = try seconds("LARDER_BOOTSTRAP_TTL", atLeast: 60, "1m, such as 24h") { bootstrapTokenLifetime = TimeInterval(value) }
        if let value = try seconds("LARDER_DATABASE_WAIT", atLeast: 1, "1s, such as 60s or 5m") { databaseWait = .seconds(value) }
        if let value = try seconds("LARDER_HISTORY_RETENTION", atLeast: 86_400, "1d, such as 90d") { historyRetention = TimeInterval(value) }
        if let value = try seconds("LARDER_AUDIT_RETENTION", atLeast: 31 * 86_400, "31d, such as 400d") { auditRetention = TimeInterval(value) }
    }

    /// Throttling settings from the environment.
    static func abuseSettings(_ environment: [String: String]) throws(Invalid) -> AbuseSettings {
        var settings = AbuseSettings()
        if let text = environment["LARDER_TRUSTED_PROXIES"], !text.isEmpty {
            var networks: [IPNetwork] = []
            for part in text.split(separator: ",") {
                guard let network = IPNetwork(String(part)) else {
                    throw Invalid(description: "LARDER_TRUSTED_PROXIES: '\(part.trimmingCharacters(in: .whitespaces))' is not an address or CIDR such as 10.0.0.0/8")
                }
                networks.append(network)
            }
            settings.trustedProxies = networks
        }
        func integer(_ name: String, _ range: ClosedRange<Int>) throws(Invalid) -> Int? {
            guard let text = environment[name] else { return nil }
            guard let value = Int(text), range.contains(value) else { throw Invalid(description: "\(name) must be a number from \(range.lowerBound) to \(range.upperBound)") }
            return value
        }
        if let value = try integer("LARDER_LOGIN_CONCURRENCY", 1...256) { settings.loginConcurrency = value }
        if let value = try integer("LARDER_AUTH_FAILURE_BURST", 1...10_000) { settings.failureBurst = value }
        if let value = try integer("LARDER_AUTH_FAILURE_WINDOW_SECONDS", 1...86_400) { settings.failureWindow = TimeInterval(value) }
        return settings
    }


    /// Job settings from the environment.
    static func jobSettings(_ environment: [String: String]) throws(Invalid) -> JobSettings {
        var settings = JobSettings()
        func seconds(_ name: String, _ range: ClosedRange<Double>) throws(Invalid) -> Duration? {
            guard let text = environment[name] else { return nil }
            guard let value = Double(text), range.contains(value) else {
                throw Invalid(description: "\(name) must be a number of seconds from \(range.lowerBound) to \(range.upperBound)")
            }
            return .milliseconds(Int64(value * 1_000))
        }
        if let value = try seconds("LARDER_LEASE_SECONDS", 1...3_600) { settings.leaseDuration = value }
        if let value = try seconds("LARDER_HEARTBEAT_SECONDS", 0.1...600) { settings.heartbeatInterval = value }
        if let value = try seconds("LARDER_MAX_CLAIM_WAIT_SECONDS", 0...300) { settings.maxClaimWait = value }
        if let value = try seconds("LARDER_RETRY_BASE_SECONDS", 0...3_600) { settings.retryBaseDelay = value }
        if let value = try seconds("LARDER_SCHEDULER_INTERVAL_SECONDS", 0.1...3_600) { settings.schedulerInterval = value }
        if let text = environment["LARDER_MAX_ATTEMPTS"] {
            guard let value = Int(text), (1...100).contains(value) else { throw Invalid(description: "LARDER_MAX_ATTEMPTS must be from 1 to 100") }
            settings.maxAttempts = value
        }
        if let text = environment["LARDER_BACKFILL_CHUNK"] {
            guard let span = try? TimeSpan.parse(text), span.seconds >= 60 else {
                throw Invalid(description: "LARDER_BACKFILL_CHUNK must be a duration of at least 1m, such as 6h or 1d")
            }
            settings.backfillChunk = span
        }
        switch environment["LARDER_SCHEDULER"]?.lowercased() {
        case nil, "on", "true", "1": settings.schedulerEnabled = true
        case "off", "false", "0": settings.schedulerEnabled = false
        case let other?: throw Invalid(description: "LARDER_SCHEDULER must be on or off, not '\(other)'")
        }
        return settings
    }

    /// Parses `host:port` (`[::1]:7070` for IPv6).
    static func parseListen(_ text: String) throws(Invalid) -> (String, Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw Invalid(description: "listen address '\(text)' is not host:port")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw Invalid(description: "listen address '\(text)' has no host") }
        return (host, port)
    }
}

/// How the control plane slows down guessing and bounds login work.
public struct AbuseSettings: Sendable, Equatable {
    /// Proxies (load balancers) whose `Forwarded` / `X-Forwarded-For` name the client.
    public var trustedProxies: [IPNetwork] = []
    /// Password checks running at once (each a scrypt: CPU and 16 MiB).
    public var loginConcurrency = 2
    /// Failed attempts per token id, user name or client address before 429.
    public var failureBurst = 10
    /// The seconds over which those attempts come back.
    public var failureWindow: TimeInterval = 60

    /// The defaults.
    public init() {}
}

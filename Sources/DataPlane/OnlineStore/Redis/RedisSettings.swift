import Foundation
import Shared
import Yams

/// Where an agent's online store lives: `online_store:` in its settings.
///
/// ```yaml
/// online_store: embedded                    # the default: in the agent's memory and data directory
/// online_store:
///   redis:
///     addresses: [10.0.0.5:6379]            # one server, or seeds of a Cluster (found by asking)
///     user: larder                          # ACL user (optional)
///     password_file: /etc/larder/redis.pw   # optional; never logged
///     tls_ca_file: /etc/larder/redis-ca.pem # TLS, the server's certificate checked against these CAs
///     key_prefix: larder                    # every key starts with it (one per environment sharing a server)
///     connections_per_node: 2
///     timeout: 2s                           # per call; a call past it fails and its connection is replaced
/// ```
public enum OnlineStoreSettings: Sendable, Hashable {
    /// In the agent's memory and data directory (`OnlineStore`).
    case embedded
    /// One Redis (or Valkey) shared by the environment's agents.
    case redis(RedisSettings)

    /// The kind, as the agent's hello tells the control plane.
    public var kind: OnlineStoreKind {
        switch self {
        case .embedded: return .embedded
        case .redis: return .redis
        }
    }
}

/// How to reach the environment's Redis.
public struct RedisSettings: Sendable, Hashable {
    /// `host:port` of the server, or of some nodes of a Cluster.
    public var endpoints: [RedisEndpoint]
    /// The ACL user, if any.
    public var user: String?
    /// The password (read from `password_file`), if any.
    public var password: String?
    /// CA certificates (PEM) to check the server's certificate against; nil: plain TCP.
    public var tlsCAFile: String?
    /// What every key starts with.
    public var keyPrefix: String
    /// Connections kept to each node (each carries many calls at once).
    public var connectionsPerNode: Int
    /// The longest a call waits for its answer.
    public var timeout: Duration

    /// Creates settings.
    public init(
        endpoints: [RedisEndpoint], user: String? = nil, password: String? = nil, tlsCAFile: String? = nil, keyPrefix: String = "larder",
        connectionsPerNode: Int = 2, timeout: Duration = .seconds(2)
    ) {
        self.endpoints = endpoints
        self.user = user
        self.password = password
        self.tlsCAFile = tlsCAFile
        self.keyPrefix = keyPrefix
        self.connectionsPerNode = connectionsPerNode
        self.timeout = timeout
    }
}

extension RedisSettings: CustomStringConvertible, CustomDebugStringConvertible {
    /// The settings without the password (which is never logged).
    public var description: String {
        "redis(\(endpoints.map(\.description).joined(separator: ", ")), user: \(user ?? "-"), password: \(password == nil ? "none" : "set"), "
            + "tls: \(tlsCAFile == nil ? "off" : "on"), prefix: \(keyPrefix))"
    }

    public var debugDescription: String { description }
}

extension OnlineStoreSettings: CustomStringConvertible {
    public var description: String {
        switch self {
        case .embedded: return "embedded"
        case .redis(let settings): return settings.description
        }
    }
}

/// A Redis node's address.
public struct RedisEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    /// Creates an address.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Reads `host:port` (IPv6 in brackets); nil when it is not one.
    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":"), colon > text.startIndex, let port = Int(text[text.index(after: colon)...]),
              (1...65_535).contains(port)
        else { return nil }
        host = String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        self.port = port
        guard !host.isEmpty else { return nil }
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

extension OnlineStoreSettings {
    /// Reads the `online_store:` setting of the agent's file `path`.
    static func parse(_ node: Node, line: Int, file path: String) throws(AgentConfiguration.Invalid) -> OnlineStoreSettings {
        if node.string == "embedded" { return .embedded }
        guard let outer = node.mapping, outer.count == 1, let (kind, body) = outer.first, kind.string == "redis", let fields = body.mapping else {
            throw AgentConfiguration.Invalid(description: "\(path):\(line): online_store: 'embedded', or 'redis:' with its addresses")
        }
        var endpoints: [RedisEndpoint] = []
        var settings = RedisSettings(endpoints: [])
        for (key, value) in fields {
            let at = "\(path):\(key.mark?.line ?? line): online_store.redis.\(key.string ?? "?")"
            switch key.string {
            case "addresses":
                let texts = value.sequence?.compactMap(\.string) ?? value.string.map { [$0] } ?? []
                for text in texts {
                    guard let endpoint = RedisEndpoint(parsing: text) else {
                        throw AgentConfiguration.Invalid(description: "\(at): '\(text)' is not host:port, such as 10.0.0.5:6379")
                    }
                    endpoints.append(endpoint)
                }
            case "user":
                guard let user = value.string, !user.isEmpty else { throw AgentConfiguration.Invalid(description: "\(at): the ACL user's name") }
                settings.user = user
            case "password_file":
                guard let file = value.string, let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                    throw AgentConfiguration.Invalid(description: "\(at): cannot read \(value.string ?? "?")")
                }
                settings.password = text.trimmingCharacters(in: .whitespacesAndNewlines)
            case "tls_ca_file":
                guard let file = value.string, FileManager.default.isReadableFile(atPath: file) else {
                    throw AgentConfiguration.Invalid(description: "\(at): cannot read \(value.string ?? "?") (PEM CA certificates)")
                }
                settings.tlsCAFile = file
            case "key_prefix":
                guard let prefix = value.string, !prefix.isEmpty, prefix.count <= 64, !prefix.contains("{"), !prefix.contains("}") else {
                    throw AgentConfiguration.Invalid(description: "\(at): 1 to 64 characters without '{' or '}'")
                }
                settings.keyPrefix = prefix
            case "connections_per_node":
                guard let number = value.string.flatMap(Int.init), (1...64).contains(number) else {
                    throw AgentConfiguration.Invalid(description: "\(at): a number from 1 to 64")
                }
                settings.connectionsPerNode = number
            case "timeout":
                guard let text = value.string, let timeout = Self.milliseconds(text), (10...60_000).contains(timeout) else {
                    throw AgentConfiguration.Invalid(description: "\(at): a duration from 10ms to 60s, such as 500ms or 2s")
                }
                settings.timeout = .milliseconds(timeout)
            default:
                throw AgentConfiguration.Invalid(
                    description: "\(at): unknown setting; redis takes addresses, user, password_file, tls_ca_file, key_prefix, connections_per_node, timeout")
            }
        }
        guard !endpoints.isEmpty else {
            throw AgentConfiguration.Invalid(description: "\(path):\(line): online_store.redis.addresses: at least one host:port")
        }
        settings.endpoints = endpoints
        return .redis(settings)
    }

    /// `500ms`, `2s`: milliseconds.
    static func milliseconds(_ text: String) -> Int? {
        if text.hasSuffix("ms") { return Int(text.dropLast(2)) }
        if text.hasSuffix("s") { return Int(text.dropLast()).map { $0 * 1_000 } }
        return nil
    }
}

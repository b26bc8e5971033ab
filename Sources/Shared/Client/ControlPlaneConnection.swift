import AsyncHTTPClient
import Foundation
import NIOCore
import NIOSSL

/// How the CLI and the agent reach the control plane safely: HTTPS verified
/// against the system's trust store or a given CA bundle, and plain HTTP only
/// to a loopback address unless explicitly allowed.
public enum ControlPlaneConnection {
    /// Why a control-plane URL is refused.
    public struct Refused: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// Whether `host` is this machine: `localhost`, or an address in
    /// 127.0.0.0/8 or `::1` (read as an address: `127.evil.example` is a name, not loopback).
    public static func isLoopback(host: String) -> Bool {
        let bare = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")).lowercased()
        return bare == "localhost" || IPAddress(bare)?.isLoopback == true
    }

    /// Whether the environment allows plain HTTP to another host (`LARDER_ALLOW_INSECURE_HTTP=1` or `true`).
    public static func insecureHTTPAllowed(in environment: [String: String]) -> Bool {
        ["1", "true"].contains(environment["LARDER_ALLOW_INSECURE_HTTP"]?.lowercased() ?? "")
    }

    /// Checks `url`: `https://`, or `http://` to a loopback host, or `http://`
    /// anywhere when `allowInsecureHTTP` or the environment allows it (tokens
    /// would cross the network in clear).
    public static func check(
        _ url: String, allowInsecureHTTP: Bool, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(Refused) {
        let allowInsecureHTTP = allowInsecureHTTP || insecureHTTPAllowed(in: environment)
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(), let host = components.host, !host.isEmpty
        else { throw Refused(description: "'\(url)' is not a URL such as https://larder.example.com") }
        switch scheme {
        case "https": return
        case "http":
            guard isLoopback(host: host) || allowInsecureHTTP else {
                throw Refused(description: "refusing plain HTTP to \(host): tokens would cross the network unencrypted; use https://, or allow it explicitly (--allow-insecure-http, allow_insecure_http: true, LARDER_ALLOW_INSECURE_HTTP=1)")
            }
        default:
            throw Refused(description: "'\(url)': the control plane is reached over https:// (or http:// on this machine)")
        }
    }

    /// Refuses a CA bundle that cannot be read, so the mistake is named before any connection.
    public static func checkCAFile(_ caFile: String?) throws(Refused) {
        if let caFile, !FileManager.default.isReadableFile(atPath: caFile) { throw Refused(description: "cannot read the CA bundle \(caFile)") }
    }

    /// How long a pooled connection may sit idle: less than the servers' request-head timeout
    /// (`HTTPConnectionLimits.requestHeadTimeout`, 30 s), which also closes a connection idle between
    /// requests. Past it, the server could close a connection just as the client sends a request on it,
    /// and the request would fail with the connection reset.
    public static let idleTimeout = TimeAmount.seconds(20)

    /// A client for the system's trust store, shared by `ControlPlaneClient`s given no other: as
    /// `HTTPClient.shared` (10 s to connect; never shut down), but with the idle timeout above.
    public static let sharedHTTPClient = makeHTTPClient(caFile: nil) { $0.timeout.connect = .seconds(10) }

    /// An HTTP client that verifies servers against the system's trust store,
    /// or only against the CA certificates in `caFile` (PEM) when given. The
    /// bundle is read when connecting: should it be missing then, connections
    /// fail rather than trust anything else.
    public static func makeHTTPClient(caFile: String?, configure: (inout HTTPClient.Configuration) -> Void = { _ in }) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(5)
        configuration.connectionPool.idleTimeout = idleTimeout
        if let caFile {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(caFile)
            configuration.tlsConfiguration = tls
        }
        configure(&configuration)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }
}

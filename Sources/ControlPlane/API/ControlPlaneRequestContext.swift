import Foundation
import Hummingbird
import Shared

/// The request context of the control plane's API: the request id, who is
/// calling, and the API's JSON conventions.
public struct ControlPlaneRequestContext: RequestContext {
    /// The largest request body accepted (a repository of thousands of views fits).
    public static let maximumBodySize = 16 * 1024 * 1024

    public var coreContext: CoreRequestContextStorage
    /// The request's id, echoed in `X-Request-Id` and every log line.
    public var requestID: String = ""
    /// Who is calling, once a valid token said so; nil for anonymous requests.
    public var caller: Caller?
    /// The client's IP address: the connection's peer, or, behind a trusted
    /// proxy, the address it forwarded (set by `AccessMiddleware`).
    public var clientAddress: String?
    /// The connection's peer address.
    public let peerAddress: String?

    /// The caller's name for records (`created_by`, audit): `anonymous` without a token.
    public var principal: String { caller?.name ?? "anonymous" }

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        peerAddress = source.channel.remoteAddress?.ipAddress
        clientAddress = peerAddress
    }

    public var maxUploadSize: Int { Self.maximumBodySize }
    public var requestDecoder: JSONDecoder { APICoding.makeDecoder() }
    public var responseEncoder: JSONEncoder { APICoding.makeEncoder() }
}

import NIOCore
import NIOHTTP1

/// The limits an HTTP/1 server puts on each connection, so a slow or
/// hostile client cannot hold connections (and their file descriptors and
/// memory) for as long as it likes. Both servers use them: the control
/// plane's API and the agent's feature server.
public struct HTTPConnectionLimits: Sendable, Hashable {
    /// The time a connection has to deliver a complete request head,
    /// counted from when it opened or from the end of the previous answer:
    /// it bounds both the idle time between requests and a head sent a byte
    /// at a time.
    public var requestHeadTimeout: TimeAmount = .seconds(30)
    /// The slowest a request body may arrive, in bytes per second on average,
    /// once `bodyGracePeriod` has passed.
    public var minimumBodyBytesPerSecond = 1_024
    /// How long a body may trickle before the minimum rate applies.
    public var bodyGracePeriod: TimeAmount = .seconds(10)
    /// The largest body of a request without an `Authorization` header (the
    /// routes that take one — login, enrollment — need far less). Larger
    /// bodies get 413 and the connection closes, before anything is read past it.
    public var unauthenticatedBodyBytes = 64 * 1_024
    /// The largest header field, and all header fields together, in bytes.
    public var maximumHeaderFieldBytes = 16 * 1_024, maximumHeaderBytes = 32 * 1_024
    /// The most header fields in one request.
    public var maximumHeaderFields = 100

    /// The defaults.
    public init() {}

    /// The HTTP/1 decoder's limits from these.
    public var decoderLimits: NIOHTTPDecoderLimitConfiguration {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = maximumHeaderFieldBytes
        limits.maxHeaderListSize = maximumHeaderBytes
        limits.maxHeaderFieldCount = maximumHeaderFields
        return limits
    }
}

/// Enforces `HTTPConnectionLimits` on one connection, right after the HTTP/1
/// decoder: it closes a connection that does not deliver a request head in
/// time or whose body arrives too slowly, and answers 413 (then closes) a
/// request without credentials whose body is larger than the unauthenticated
/// limit. While a request is being answered (a long poll, a large dataset)
/// no timer runs: the limits are on what the client sends.
public final class HTTPConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias InboundOut = HTTPServerRequestPart
    public typealias OutboundIn = HTTPServerResponsePart
    public typealias OutboundOut = HTTPServerResponsePart

    let limits: HTTPConnectionLimits

    private enum State {
        /// Waiting for the next request's head.
        case awaitingHead
        /// A request's body is arriving: since when, how much so far, and the most it may have.
        case readingBody(since: NIODeadline, received: Int, limit: Int?)
        /// Requests are being answered.
        case answering
        /// A request was refused: everything else it sends is dropped until the connection closes.
        case refusing
    }

    private var state = State.awaitingHead
    /// Requests whose answer has not ended yet.
    private var unanswered = 0
    private var timer: Scheduled<Void>?

    /// A guard enforcing `limits`.
    public init(limits: HTTPConnectionLimits) { self.limits = limits }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { waitForHead(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        waitForHead(context: context)
        context.fireChannelActive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) { cancelTimer() }

    public func channelInactive(context: ChannelHandlerContext) {
        cancelTimer()
        context.fireChannelInactive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch (state, part) {
        case (.refusing, _):
            return
        case (_, .head(let head)):
            cancelTimer()
            unanswered += 1
            let limit = head.headers[canonicalForm: "authorization"].isEmpty ? limits.unauthenticatedBodyBytes : nil
            if let limit, let length = head.headers.first(name: "content-length").flatMap(Int.init), length > limit {
                refuse(context: context, version: head.version)
                return
            }
            state = .readingBody(since: .now(), received: 0, limit: limit)
            scheduleBodyCheck(context: context)
            context.fireChannelRead(data)
        case (.readingBody(let since, let received, let limit), .body(let bytes)):
            let total = received + bytes.readableBytes
            if let limit, total > limit {
                // A chunked body past the unauthenticated limit: the head went on already, so the connection just closes.
                state = .refusing
                context.close(promise: nil)
                return
            }
            state = .readingBody(since: since, received: total, limit: limit)
            context.fireChannelRead(data)
        case (.readingBody, .end):
            cancelTimer()
            state = .answering
            context.fireChannelRead(data)
        default:
            context.fireChannelRead(data)
        }
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            unanswered = max(0, unanswered - 1)
            if unanswered == 0, case .answering = state {
                state = .awaitingHead
                waitForHead(context: context)
            }
        }
        context.write(data, promise: promise)
    }

    /// Starts the clock for the next request head.
    private func waitForHead(context: ChannelHandlerContext) {
        cancelTimer()
        let channel = context.channel
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: limits.requestHeadTimeout) { [weak self] in
            guard let self, case .awaitingHead = self.state else { return }
            channel.close(promise: nil)
        }
    }

    /// Checks the body's rate every second while it arrives.
    private func scheduleBodyCheck(context: ChannelHandlerContext) {
        let channel = context.channel
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { [weak self] in
            guard let self, case .readingBody(let since, let received, _) = self.state else { return }
            let elapsed = NIODeadline.now() - since
            if elapsed > self.limits.bodyGracePeriod,
               Int64(received) * 1_000_000_000 < Int64(self.limits.minimumBodyBytesPerSecond) * elapsed.nanoseconds {
                self.state = .refusing
                channel.close(promise: nil)
                return
            }
            self.scheduleBodyCheck(context: context)
        }
    }

    /// Answers 413 with `Connection: close` and closes once it is written.
    private func refuse(context: ChannelHandlerContext, version: HTTPVersion) {
        state = .refusing
        let body = #"{"type":"urn:larder:problem:payload-too-large","title":"Body too large","status":413,"#
            + #""detail":"a request without credentials may carry at most \#(limits.unauthenticatedBodyBytes) bytes","field":"body"}"#
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/problem+json")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: .payloadTooLarge, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
    }
}

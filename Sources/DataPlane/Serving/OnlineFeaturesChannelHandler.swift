import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Shared

/// Answers `POST /v1/features/online` on the connection's event loop.
///
/// A feature read is a few microseconds of work that never waits. Through
/// the router it would also pay for Hummingbird's asynchronous request
/// handling: the request's parts handed to a task on Swift's cooperative
/// pool, its body read as an async sequence, the answer handed back to the
/// event loop. This handler sits right after NIO's HTTP/1 decoder
/// (`FeatureServerHTTP1Channel`), collects the body of a feature read
/// itself, answers it with the same `OnlineFeaturesHandler.respond` the
/// router's route calls, and writes the response as NIO's response parts.
/// Every other request passes on untouched, to be converted to Swift HTTP
/// types and answered by the router. With Redis as the online store a read
/// waits for the network: its `MGET`s go out on a Redis connection running on
/// this same event loop and the answer is written when they come back, with no
/// thread in between (`OnlineFeatureReader.answer(…on:)`); meanwhile what the
/// client sends next is held, and handled once the answer is out.
///
/// Responses must leave in the order their requests came. While a request
/// passed on to the router has not been answered, a feature read that follows
/// on the same connection (HTTP pipelining) is passed on too, and the router
/// answers it in turn. A read that asks to close the connection (or one in
/// HTTP/1.0 that does not ask to keep it) is answered with `Connection: close`,
/// and the connection closed once the answer is written; a request after a
/// close goes to the router, which answers it and closes.
///
/// As the router's writer does, it stops reading while the connection cannot
/// take more output (a client pipelining reads without reading the answers),
/// and a graceful shutdown that arrives while a read's body is coming in waits
/// for its answer before Hummingbird closes the idle connection.
final class OnlineFeaturesChannelHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    static let path = "/v1/features/online"

    private enum Mode {
        case idle
        /// Receiving a feature read answered here.
        case reading
        /// Passing a request's parts on to the router, until its end.
        case passing
        /// A read refused before its body was read (no valid token, or a body past the limit):
        /// the rest of what the client sends is dropped and the connection closes once the answer is out.
        case refusing
    }

    private let handler: OnlineFeaturesHandler
    private let logger: Logger
    private var mode = Mode.idle
    /// Requests passed on to the router whose responses have not ended.
    private var unanswered = 0
    // The feature read being received (kept outside `mode`, so appending does not copy).
    private var head: HTTPRequestHead?
    private var fields = ReadFields()
    private var body: ByteBuffer?
    private var bodyTooLarge = false
    private var started = ContinuousClock.now
    private var date = HTTPDateText()
    /// The token this connection last sent, already checked (a model server keeps its connections and its token).
    private var admission: AccessGuard.Admission?
    /// A request asked to close the connection: the rest goes to the router.
    private var closing = false
    /// A read was asked for while the connection could not take more output.
    private var readHeld = false
    /// A graceful shutdown arrived while a read's body was coming in: passed on once it is answered.
    private var quiesceHeld = false
    /// A read's answer is awaited (Redis): what comes in meanwhile is held in `held`, in order.
    private var waiting = false
    private var held = CircularBuffer<HTTPServerRequestPart>()

    init(handler: OnlineFeaturesHandler, logger: Logger) {
        self.handler = handler
        self.logger = logger
    }

    /// Whether `head` is a feature read: a POST to the path (which may carry a query, ignored as the router ignores it).
    static func isFeatureRead(_ head: HTTPRequestHead) -> Bool {
        guard head.method == .POST, head.version.major == 1 else { return false }
        let uri = head.uri.utf8
        guard uri.starts(with: Self.path.utf8) else { return false }
        return uri.count == Self.path.utf8.count || uri[uri.index(uri.startIndex, offsetBy: Self.path.utf8.count)] == UInt8(ascii: "?")
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if waiting {
            held.append(part)
            return
        }
        switch (mode, part) {
        case (.idle, .head(let request)) where unanswered == 0 && !closing && Self.isFeatureRead(request):
            if !request.isKeepAlive { closing = true }
            mode = .reading
            head = request
            fields = ReadFields(request.headers)
            body = nil
            bodyTooLarge = false
            started = .now
            // A body announced past the limit is answered now, before a byte of it is read, and the connection
            // closed. A client that waits for leave to send its body (`Expect: 100-continue`) gets it only once its
            // token passed too; any other read's body (at most the limit, mostly in the head's packet) comes with
            // the head, and `answer` checks its token once.
            let expectsContinue = request.version == .http1_1 && fields.expect?.lowercased() == "100-continue"
            var refused = fields.contentLength.flatMap { Int($0) }.map { $0 > handler.settings.maxBodyBytes } ?? false
            if !refused, expectsContinue {
                do {
                    _ = try FeatureServer.authorize(authorization: fields.authorization, guard: handler.accessGuard, now: handler.now(), admission: &admission)
                } catch {
                    refused = true
                }
            }
            if refused {
                refuse(request, context: context)
                return
            }
            if expectsContinue {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
            }
        case (.refusing, _):
            return
        case (.reading, .body(var bytes)):
            if (body?.readableBytes ?? 0) + bytes.readableBytes > handler.settings.maxBodyBytes {
                // Past the limit (a body without a length): answered now, and the connection closes.
                if let request = head { refuse(request, context: context) }
                return
            } else if body == nil {
                body = bytes
            } else {
                body!.writeBuffer(&bytes)
            }
        case (.reading, .end):
            mode = .idle
            if let request = head { answer(request, context: context) }
            head = nil
            body = nil
        case (.idle, .head(let request)):
            if !request.isKeepAlive { closing = true }
            mode = .passing
            unanswered += 1
            context.fireChannelRead(data)
        case (.passing, .end):
            mode = .idle
            context.fireChannelRead(data)
        default:
            // The rest of a request passed on (or parts out of order, which the router reports).
            context.fireChannelRead(data)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data), unanswered > 0 { unanswered -= 1 }
        context.write(data, promise: promise)
    }

    func read(context: ChannelHandlerContext) {
        guard context.channel.isWritable, !waiting else {
            readHeld = true
            return
        }
        context.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, readHeld, !waiting {
            readHeld = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent, mode == .reading || waiting {
            quiesceHeld = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Answers `request` before (or instead of) reading the rest of its body, with
    /// `Connection: close`: the token's error, or 413 for a body past the limit.
    private func refuse(_ request: HTTPRequestHead, context: ChannelHandlerContext) {
        bodyTooLarge = true
        body = nil
        closing = true
        mode = .refusing
        answer(request, context: context)
        head = nil
    }

    /// Answers the feature read `request` with the body received, and writes the response:
    /// at once from the embedded store; once Redis answered otherwise.
    private func answer(_ request: HTTPRequestHead, context: ChannelHandlerContext) {
        let requestID = RequestID.acceptable(fields.requestID) ?? FeatureServerErrorMiddleware.ids.next()
        let body = bodyTooLarge ? nil : (self.body ?? ByteBuffer())
        guard handler.reader.store == nil else {
            write(Result { try handler.respond(
                authorization: fields.authorization, body: body, started: started, requestID: requestID, logger: logger, admission: &admission) },
                  to: request, requestID: requestID, context: context)
            return
        }
        let answer = handler.respond(
            authorization: fields.authorization, body: body, started: started, requestID: requestID, logger: logger, admission: &admission,
            on: context.eventLoop)
        waiting = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        answer.hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            handler.waiting = false
            handler.write(result, to: request, requestID: requestID, context: context)
            handler.resume(context: context)
        }
    }

    /// Handles what came in while an answer was awaited, then reads on.
    private func resume(context: ChannelHandlerContext) {
        let replayed = !held.isEmpty
        while !waiting, let part = held.popFirst() {
            channelRead(context: context, data: wrapInboundOut(part))
        }
        // Parts passed on to the router are taken up at a read's completion (as NIO's async channel does).
        if replayed { context.fireChannelReadComplete() }
        if !waiting, readHeld, context.channel.isWritable {
            readHeld = false
            context.read()
        }
    }

    /// Writes the answer to `request`: `result`'s JSON, or the problem it failed with.
    private func write(_ result: Result<[UInt8], any Error>, to request: HTTPRequestHead, requestID: String, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        let status: HTTPResponseStatus
        let bytes: [UInt8]
        switch result {
        case .success(let answer):
            bytes = answer
            status = .ok
            headers.add(name: "Content-Type", value: "application/json")
        case .failure(let error):
            let reply = FeatureServerProblem.reply(to: error, requestID: requestID, logger: logger)
            status = HTTPResponseStatus(statusCode: Int(reply.status.code))
            for field in reply.headers { headers.add(name: field.name.rawName, value: field.value) }
            bytes = reply.body
        }
        headers.add(name: Self.requestIDName, value: requestID)
        headers.add(name: "Content-Length", value: String(bytes.count))
        headers.add(name: "Date", value: date.now())
        headers.add(name: "Server", value: FeatureServer.serverName)
        // `closing` was false when this read's head came in (else it went to the router): now it says whether the read asked to close.
        if closing {
            headers.add(name: "Connection", value: "close")
        } else if request.version == .http1_0 {
            headers.add(name: "Connection", value: "keep-alive")   // HTTP/1.0 closes unless the answer says otherwise
        }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
        guard closing || quiesceHeld else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            return
        }
        // Close (or let Hummingbird's shutdown close) only once the answer is written: closing fails pending writes.
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
        let channel = context.channel
        if closing {
            written.futureResult.whenComplete { _ in channel.close(promise: nil) }
        } else {
            quiesceHeld = false
            written.futureResult.whenComplete { _ in channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
        }
    }

    private static let requestIDName = FeatureServerErrorMiddleware.requestIDHeader.rawName

    /// The headers a feature read uses, found in one pass over the request's. A header sent more than once
    /// reads as its values joined with ", ", as Swift HTTP types read it for the router, so that two
    /// `Authorization` headers are refused on both paths alike.
    struct ReadFields {
        var authorization: String?
        var requestID: String?
        var expect: String?
        var contentLength: String?

        init() {}

        init(_ headers: HTTPHeaders) {
            func append(_ text: String, to value: inout String?) { value = value.map { "\($0), \(text)" } ?? text }
            for (name, text) in headers {
                // Names compared by bytes with ASCII letters folded (names are tokens): no string made per header.
                if Self.named(name, "authorization") {
                    append(text, to: &authorization)
                } else if Self.named(name, "x-request-id") {
                    append(text, to: &requestID)
                } else if Self.named(name, "expect") {
                    append(text, to: &expect)
                } else if Self.named(name, "content-length") {
                    append(text, to: &contentLength)
                }
            }
        }

        private static func named(_ name: String, _ lowercase: StaticString) -> Bool {
            let target = UnsafeBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
            return name.utf8.elementsEqual(target) { ($0 >= 65 && $0 <= 90 ? $0 | 0x20 : $0) == $1 }
        }
    }
}

/// The `Date` header's text (IMF-fixdate), made again only when the second changes.
struct HTTPDateText {
    private var second = Int.min
    private var text = ""

    private static let days = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]   // 1970-01-01 was a Thursday
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// The text for the current second.
    mutating func now() -> String {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        let now = Int(time.tv_sec)
        if now != second {
            second = now
            text = Self.format(secondsSinceEpoch: now)
        }
        return text
    }

    /// `secondsSinceEpoch` as IMF-fixdate, such as `Sun, 06 Nov 1994 08:49:37 GMT`.
    static func format(secondsSinceEpoch seconds: Int) -> String {
        let days = Int64(seconds).dividedRoundingDown(by: 86_400)
        let inDay = Int(Int64(seconds) - days * 86_400)
        let (year, month, day) = TimestampText.civil(days: days)
        func two(_ value: some BinaryInteger) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let weekday = Self.days[Int(((days % 7) + 7) % 7)]
        return "\(weekday), \(two(day)) \(Self.months[Int(month) - 1]) \(year) \(two(inDay / 3_600)):\(two(inDay % 3_600 / 60)):\(two(inDay % 60)) GMT"
    }
}

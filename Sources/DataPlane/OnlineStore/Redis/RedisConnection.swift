import NIOCore
import NIOPosix
import NIOSSL
import Shared

/// Why a Redis call failed.
public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The server answered an error (`ERR …`, `WRONGPASS …`, `MOVED …`).
    case server(String)
    /// No answer within the call's timeout: the connection is closed.
    case timedOut
    /// The connection closed before the answer came.
    case closed
    /// The server cannot be reached (the address and what failed).
    case unreachable(String)

    public var description: String {
        switch self {
        case .server(let message): return "Redis answered: \(message)"
        case .timedOut: return "Redis did not answer in time"
        case .closed: return "the connection to Redis closed"
        case .unreachable(let detail): return "cannot reach Redis: \(detail)"
        }
    }
}

/// One connection to a Redis (or Valkey) server speaking RESP2, with
/// pipelining: calls write at once and answers are matched in order, so many
/// calls can be in flight on one connection. Each call has a timeout; one that
/// passes closes the connection (its later answers could no longer be matched).
public final class RedisConnection: Sendable {
    let channel: any Channel
    let timeout: TimeAmount

    init(channel: any Channel, timeout: TimeAmount) {
        self.channel = channel
        self.timeout = timeout
    }

    /// Connects to `host:port` — over TLS when `tls` is given (the server's
    /// certificate checked against its CAs, for `host`) — and authenticates as
    /// `user` (ACL) or with the password alone when given.
    public static func connect(
        host: String, port: Int, user: String? = nil, password: String? = nil, tls: TLSConfiguration? = nil,
        timeout: TimeAmount = .seconds(2), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> RedisConnection {
        let context = try tls.map { try NIOSSLContext(configuration: $0) }
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context {
                        // A name is checked as a name; an address as an address (no SNI for addresses).
                        let name = IPAddress(host) == nil ? host : nil
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: name))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPDecoder()))
                    try channel.pipeline.syncOperations.addHandler(RedisCommandHandler())
                }
            }
            .connect(host: host, port: port).get()
        let connection = RedisConnection(channel: channel, timeout: timeout)
        if let password {
            do {
                _ = try await connection.send(user.map { ["AUTH", .text($0), .text(password)] } ?? ["AUTH", .text(password)])
            } catch {
                try? await connection.close()
                throw error
            }
        }
        return connection
    }

    /// Sends one command; its answer, or `RedisError.server` when the answer is an error.
    @discardableResult
    public func send(_ arguments: [RESPArgument]) async throws -> RESPValue {
        let answer = try await pipeline([arguments])[0]
        if case .error(let message) = answer { throw RedisError.server(message) }
        return answer
    }

    /// Sends `commands` in one write and returns their answers in order (errors as `.error` values).
    public func pipeline(_ commands: [[RESPArgument]]) async throws -> [RESPValue] {
        try await pipelineFuture(commands).get()
    }

    /// The same, as a future completed on the connection's event loop (`eventLoop`).
    func pipelineFuture(_ commands: [[RESPArgument]]) -> EventLoopFuture<[RESPValue]> {
        guard !commands.isEmpty else { return channel.eventLoop.makeSucceededFuture([]) }
        guard channel.isActive else { return channel.eventLoop.makeFailedFuture(RedisError.closed) }
        var buffer = channel.allocator.buffer(capacity: 64 * commands.count)
        for command in commands { RESPCommand.encode(command, into: &buffer) }
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        let channel = self.channel
        let deadline = channel.eventLoop.scheduleTask(in: timeout) {
            promise.fail(RedisError.timedOut)
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in deadline.cancel() }
        // A write that fails (the connection closed meanwhile) fails the call at once.
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { _ in promise.fail(RedisError.closed) }
        channel.writeAndFlush(RedisRequest(bytes: buffer, count: commands.count, promise: promise), promise: written)
        return promise.futureResult
    }

    /// The event loop the connection's channel runs on.
    var eventLoop: any EventLoop { channel.eventLoop }

    /// Whether the connection is open (a closed one is replaced, not reused).
    public var isActive: Bool { channel.isActive }

    /// Closes the connection; calls in flight fail with `RedisError.closed`.
    public func close() async throws {
        do {
            try await channel.close()
        } catch NIOSSLError.uncleanShutdown {
            // The server closed TCP without TLS' close_notify once it had all it needed: nothing is lost.
        } catch ChannelError.alreadyClosed {
        }
    }
}

/// Commands written together, and the promise of their answers.
struct RedisRequest {
    let bytes: ByteBuffer
    let count: Int
    let promise: EventLoopPromise<[RESPValue]>
}

/// Matches answers to requests in order: the first request waiting gets the next answers.
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private var waiting = CircularBuffer<(count: Int, promise: EventLoopPromise<[RESPValue]>)>()
    /// The answers so far to the first request waiting (kept apart, so appending never copies them).
    private var answers: [RESPValue] = []

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        waiting.append((request.count, request.promise))
        context.write(wrapOutboundOut(request.bytes), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        guard !waiting.isEmpty else {
            // An answer nobody asked for: the stream is out of step; nothing after it can be trusted.
            context.close(promise: nil)
            return
        }
        if answers.isEmpty { answers.reserveCapacity(waiting[waiting.startIndex].count) }
        answers.append(value)
        if answers.count == waiting[waiting.startIndex].count {
            let done = waiting.removeFirst()
            let complete = answers
            answers = []
            done.promise.succeed(complete)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RedisError.closed)
        context.fireChannelInactive()
    }

    private func failAll(_ error: any Error) {
        answers = []
        while let entry = waiting.popFirst() { entry.promise.fail(error) }
    }
}


import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Shared

/// The control plane's HTTP/1.1 connections: Hummingbird's HTTP/1 pipeline
/// (as `HTTPServerBuilder.http1()` builds it) with an `HTTPConnectionGuard`
/// right after NIO's decoder, and the decoder's header limits from
/// `HTTPConnectionLimits`: a client that sends its request head or body too
/// slowly, or a body without credentials past 64 KiB, loses the connection.
struct ControlPlaneHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    let responder: HTTPChannelHandler.Responder
    let limits: HTTPConnectionLimits

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let pipeline = channel.pipeline.syncOperations
            try pipeline.configureHTTPServerPipeline(
                withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
                withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits.decoderLimits)
            try pipeline.addHandler(HTTPConnectionGuard(limits: limits))
            try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
            return try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        }
    }

    func handle(value asyncChannel: Value, logger: Logger) async {
        await handleHTTP(asyncChannel: asyncChannel, logger: logger)
    }

    /// A server builder of these channels.
    static func builder(limits: HTTPConnectionLimits) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in ControlPlaneHTTP1Channel(responder: responder, limits: limits) }
    }
}

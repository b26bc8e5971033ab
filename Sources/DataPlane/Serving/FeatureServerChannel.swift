import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Shared

/// The feature server's HTTP/1.1 connections: Hummingbird's HTTP/1 pipeline
/// with `OnlineFeaturesChannelHandler` placed right after NIO's HTTP/1
/// decoder, ahead of the conversion to Swift HTTP types.
///
/// A feature read is answered from NIO's own request head and written as
/// NIO's response parts, so it skips the conversion of its head to
/// `HTTPRequest` and of its answer from `HTTPResponse` (together about an
/// eighth of the server's CPU samples per read, measured by `perf` under load).
/// Every other request goes on through the same handlers as in
/// `HTTPServerBuilder.http1()` (the conversion, Hummingbird's connection
/// state, the router), and so does a read that must wait its turn behind one.
struct FeatureServerHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    let responder: HTTPChannelHandler.Responder
    let handler: OnlineFeaturesHandler
    let logger: Logger
    /// Timeouts and limits on the connection (`HTTPConnectionGuard`).
    var limits = HTTPConnectionLimits()
    /// Handlers put just before the feature-read handler (tests observe the parts it receives).
    var handlersBefore: @Sendable () -> [any RemovableChannelHandler] = { [] }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let pipeline = channel.pipeline.syncOperations
            // As Hummingbird sets it up: requests are answered in order by the async channel, errors by the application.
            try pipeline.configureHTTPServerPipeline(
                withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
                withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits.decoderLimits)
            // Right after the decoder: slow heads and bodies close the connection, whichever handler answers.
            try pipeline.addHandler(HTTPConnectionGuard(limits: limits))
            try pipeline.addHandlers(handlersBefore())
            try pipeline.addHandler(OnlineFeaturesChannelHandler(handler: handler, logger: self.logger))
            try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
            return try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        }
    }

    func handle(value asyncChannel: Value, logger: Logger) async {
        await handleHTTP(asyncChannel: asyncChannel, logger: logger)
    }
}

import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import ServiceLifecycle
import Shared
import Synchronization

/// The agent's feature server: models in the customer's environment read
/// features here, without any call to the control plane.
///
/// - `POST /v1/features/online`: features of a service or references, for a
///   batch of entities (consumer role).
/// - `POST /v1/push/{source}`: rows for a `PushSource` (operator role).
/// - `POST /v1/datasets/build`: a training dataset for the entity table in
///   the body, streamed back as CSV (consumer role).
/// - `GET /metrics`: Prometheus metrics (consumer role, unless configured open).
/// - `GET /healthz`, `GET /readyz`: liveness, and whether the agent holds the
///   snapshots it needs to answer (no token: they reveal nothing else).
public enum FeatureServer {
    /// The `Server` header's value.
    static let serverName = "larder-agent"

    /// The server for `settings`, as a service to run in the agent's group.
    /// `onListening` receives the bound address (`http://host:port`, or `https://` with TLS settings).
    /// Throws when the TLS certificate or key cannot be read.
    public static func build(
        settings: AgentConfiguration.ServingSettings, reader: OnlineFeatureReader, guard accessGuard: AccessGuard, metrics: AgentMetrics,
        push: PushIngestor? = nil, datasets: DatasetRoute? = nil, logger: Logger, onListening: @escaping @Sendable (String) async -> Void = { _ in }
    ) throws -> some Service {
        let router = makeRouter(settings: settings, reader: reader, guard: accessGuard, metrics: metrics, push: push, datasets: datasets)
        let http1 = http1(settings: settings, reader: reader, guard: accessGuard, metrics: metrics, logger: logger)
        let server: HTTPServerBuilder = try settings.tls.map { try .tls(http1, tlsConfiguration: $0.serverConfiguration()) } ?? http1
        let scheme = settings.tls == nil ? "http" : "https"
        return Application(
            router: router, server: server,
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: serverName),
            onServerRunning: { channel in
                let address = "\(scheme)://\(settings.host.contains(":") ? "[\(settings.host)]" : settings.host):\(channel.localAddress?.port ?? settings.port)"
                logger.info("feature server listening", metadata: ["larder.address": .string(address)])
                await onListening(address)
            },
            logger: logger)
    }

    /// HTTP/1.1 with feature reads answered on each connection's event loop
    /// (`FeatureServerHTTP1Channel`, `OnlineFeaturesChannelHandler`); every other request goes to the router.
    public static func http1(
        settings: AgentConfiguration.ServingSettings, reader: OnlineFeatureReader, guard accessGuard: AccessGuard, metrics: AgentMetrics,
        logger: Logger, now: @escaping @Sendable () -> Date = { Date() }
    ) -> HTTPServerBuilder {
        let handler = OnlineFeaturesHandler(settings: settings, reader: reader, accessGuard: accessGuard, metrics: metrics, now: now)
        return HTTPServerBuilder { responder in
            FeatureServerHTTP1Channel(responder: responder, handler: handler, logger: logger, limits: settings.connectionLimits)
        }
    }

    /// The routes, for the server and for tests.
    public static func makeRouter(
        settings: AgentConfiguration.ServingSettings, reader: OnlineFeatureReader, guard accessGuard: AccessGuard, metrics: AgentMetrics,
        push: PushIngestor? = nil, datasets: DatasetRoute? = nil, now: @escaping @Sendable () -> Date = { Date() }
    ) -> Router<FeatureServerContext> {
        let router = Router(context: FeatureServerContext.self)
        router.add(middleware: FeatureServerErrorMiddleware())
        let handler = OnlineFeaturesHandler(settings: settings, reader: reader, accessGuard: accessGuard, metrics: metrics, now: now)
        // Reached only when a read must wait behind another request of its connection (see OnlineFeaturesChannelHandler).
        router.post("/v1/features/online") { request, context in try await handler.handle(request, context: context) }
        if let push {
            router.post("/v1/push/:source") { request, context in
                try FeatureServer.authorize(request, guard: accessGuard, now: now(), role: .operator)
                let source = try context.parameters.require("source")
                let key = try idempotencyKey(request)
                let body = try await request.body.collect(upTo: settings.maxBodyBytes)
                let receipt = try await push.push(source: source, body: Array(body.readableBytesView), key: key, now: now())
                context.logger.debug("rows pushed", metadata: [
                    "larder.source": .string(source), "larder.rows": "\(receipt.rows)", "larder.request_id": .string(context.requestID),
                ])
                return json(String(decoding: try APICoding.makeEncoder().encode(receipt), as: UTF8.self))
            }
        }
        if let datasets {
            router.post("/v1/datasets/build") { request, context in
                try FeatureServer.authorize(request, guard: accessGuard, now: now())
                return try await datasets.handle(request, context: context)
            }
        }
        router.get("/metrics") { request, _ in
            if !settings.metricsWithoutToken { try authorize(request, guard: accessGuard, now: now()) }
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition(store: reader.store, now: now()))))
        }
        router.get("/healthz") { _, _ in json(#"{"status":"ok"}"#) }
        router.get("/readyz") { _, _ in
            guard reader.revision != nil else {
                throw FeatureServerProblem(status: .serviceUnavailable, code: "not-ready", detail: ServingError.noRegistry.description)
            }
            if case .unavailable(let detail) = accessGuard.authorize(token: nil, now: now()) {
                throw FeatureServerProblem(status: .serviceUnavailable, code: "not-ready", detail: detail)
            }
            return json(#"{"status":"ready"}"#)
        }
        return router
    }

    /// Lets the request on if its bearer token may read features; throws the problem otherwise.
    @discardableResult
    static func authorize(_ request: Request, guard accessGuard: AccessGuard, now: Date, role: WorkspaceRole = .consumer) throws -> String {
        var admission: AccessGuard.Admission?
        return try authorize(authorization: request.headers[.authorization], guard: accessGuard, now: now, role: role, admission: &admission)
    }

    /// Lets a request with the `Authorization` header `header` on if its bearer
    /// token has `role`; throws the problem otherwise. `admission` is the
    /// connection's remembered token: used when it still holds, replaced when a
    /// token is allowed.
    @discardableResult
    static func authorize(
        authorization header: String?, guard accessGuard: AccessGuard, now: Date, role: WorkspaceRole = .consumer, admission: inout AccessGuard.Admission?
    ) throws -> String {
        if let header, let admitted = admission, accessGuard.readmits(admitted, header: header, role: role, now: now) { return admitted.principal }
        var token: String?
        if let header {
            // By bytes: Foundation's case folding and trimming cost more than the rest of the check.
            let bytes = header.utf8, space = UInt8(ascii: " ")
            guard bytes.count > 7, zip(bytes, "bearer ".utf8).allSatisfy({ $0 | 0x20 == $1 }) else {
                throw FeatureServerProblem(status: .unauthorized, code: "unauthenticated", detail: "send a token as 'Authorization: Bearer lrd_…'")
            }
            var start = bytes.index(bytes.startIndex, offsetBy: 7), end = bytes.endIndex
            while start < end, bytes[start] == space { start = bytes.index(after: start) }
            while end > start, bytes[bytes.index(before: end)] == space { end = bytes.index(before: end) }
            token = String(Substring(bytes[start..<end]))
        }
        let (decision, granted) = accessGuard.decide(token: token, header: header ?? "", now: now, role: role)
        switch decision {
        case .allowed(let principal):
            admission = granted
            return principal
        case .unauthenticated(let detail): throw FeatureServerProblem(status: .unauthorized, code: "unauthenticated", detail: detail)
        case .forbidden(let principal):
            throw FeatureServerProblem(
                status: .forbidden, code: "forbidden",
                detail: "\(principal) may not \(role == .consumer ? "read features" : "push rows"): it needs the \(role.rawValue) role in this workspace")
        case .unavailable(let detail): throw FeatureServerProblem(status: .serviceUnavailable, code: "access-unavailable", detail: detail)
        }
    }

    static let idempotencyKeyHeader = HTTPField.Name("Idempotency-Key")!

    /// The push's `Idempotency-Key`, if any: at most 128 plain characters.
    static func idempotencyKey(_ request: Request) throws -> String? {
        guard let value = request.headers[idempotencyKeyHeader] else { return nil }
        guard let key = RequestID.acceptable(value) else {
            throw FeatureServerProblem(
                status: .badRequest, code: "invalid-request",
                detail: "an Idempotency-Key is 1 to 128 letters, digits and '-_.:'", field: "Idempotency-Key")
        }
        return key
    }

    static func json(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        json(ByteBuffer(string: text), status: status)
    }

    static func json(_ bytes: [UInt8], status: HTTPResponse.Status = .ok) -> Response {
        json(ByteBuffer(bytes: bytes), status: status)
    }

    static func json(_ body: ByteBuffer, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: body))
    }
}

/// `POST /v1/features/online`: answered by `OnlineFeaturesChannelHandler` on
/// the connection's event loop, or by the router for a read that waits its
/// turn behind another request of its connection. Both call `respond`.
struct OnlineFeaturesHandler: Sendable {
    let settings: AgentConfiguration.ServingSettings
    let reader: OnlineFeatureReader
    let accessGuard: AccessGuard
    let metrics: AgentMetrics
    let now: @Sendable () -> Date

    /// The router's path: reads the body (up to its limit), then `respond`.
    func handle(_ request: Request, context: FeatureServerContext) async throws -> Response {
        let started = ContinuousClock.now
        var body: ByteBuffer?
        do {
            body = try await request.body.collect(upTo: settings.maxBodyBytes)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            body = nil
        }
        var admission: AccessGuard.Admission?
        var service = "none"
        do {
            let (resolved, batch, date, parsed) = try prepare(
                authorization: request.headers[.authorization], body: body, service: &service, admission: &admission)
            let (answer, grid) = try await reader.answerAsync(
                resolved, batch: batch, now: Int64(date.timeIntervalSince1970 * 1_000_000), service: parsed.featureService)
            metrics.observe(service: service, status: 200, nanoseconds: Self.nanoseconds(since: started), grid: grid, outputs: resolved.outputs.count)
            return FeatureServer.json(answer)
        } catch {
            metrics.observe(service: service, status: Int(FeatureServerProblem(error).status.code), nanoseconds: Self.nanoseconds(since: started))
            throw error
        }
    }

    /// The answer's JSON for a request with the `Authorization` header
    /// `authorization` and `body` (nil when the body was larger than allowed),
    /// or the problem to send, thrown. The token
    /// is checked first (`admission`: the connection's remembered token, see
    /// `FeatureServer.authorize`), then the body. Records the request's metrics.
    func respond(
        authorization: String?, body: ByteBuffer?, started: ContinuousClock.Instant, requestID: String, logger: Logger, admission: inout AccessGuard.Admission?
    ) throws -> [UInt8] {
        var service = "none"
        do {
            let (answer, grid, outputs) = try answer(authorization: authorization, body: body, service: &service, admission: &admission)
            metrics.observe(service: service, status: 200, nanoseconds: Self.nanoseconds(since: started), grid: grid, outputs: outputs)
            logger.debug("features served", metadata: [
                "larder.feature_service": .string(service), "larder.entities": "\(grid.entities)", "larder.request_id": .string(requestID),
            ])
            return answer
        } catch {
            metrics.observe(service: service, status: Int(FeatureServerProblem(error).status.code), nanoseconds: Self.nanoseconds(since: started))
            throw error
        }
    }

    /// `respond` for an online store that answers over the network (Redis):
    /// the same checks at once, the answer as a future completed on `eventLoop`.
    func respond(
        authorization: String?, body: ByteBuffer?, started: ContinuousClock.Instant, requestID: String, logger: Logger,
        admission: inout AccessGuard.Admission?, on eventLoop: any EventLoop
    ) -> EventLoopFuture<[UInt8]> {
        var service = "none"
        let metrics = self.metrics
        do {
            let (resolved, batch, date, parsed) = try prepare(authorization: authorization, body: body, service: &service, admission: &admission)
            let label = service
            let read = reader.answer(
                resolved, batch: batch, now: Int64(date.timeIntervalSince1970 * 1_000_000), service: parsed.featureService, on: eventLoop)
            return read.map { answer, grid in
                metrics.observe(service: label, status: 200, nanoseconds: Self.nanoseconds(since: started), grid: grid, outputs: resolved.outputs.count)
                logger.debug("features served", metadata: [
                    "larder.feature_service": .string(label), "larder.entities": "\(grid.entities)", "larder.request_id": .string(requestID),
                ])
                return answer
            }.flatMapErrorThrowing { error in
                metrics.observe(service: label, status: Int(FeatureServerProblem(error).status.code), nanoseconds: Self.nanoseconds(since: started))
                throw error
            }
        } catch {
            metrics.observe(service: service, status: Int(FeatureServerProblem(error).status.code), nanoseconds: Self.nanoseconds(since: started))
            return eventLoop.makeFailedFuture(error)
        }
    }

    static func nanoseconds(since start: ContinuousClock.Instant) -> Int64 {
        let elapsed = ContinuousClock.now - start
        return elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
    }

    /// The answer, with its grid and output count for the metrics; `service`
    /// becomes the metric label once a name resolved.
    private func answer(authorization: String?, body: ByteBuffer?, service: inout String, admission: inout AccessGuard.Admission?) throws -> ([UInt8], FeatureGrid, Int) {
        let (resolved, batch, date, parsed) = try prepare(authorization: authorization, body: body, service: &service, admission: &admission)
        let (bytes, grid) = reader.answer(resolved, batch: batch, now: Int64(date.timeIntervalSince1970 * 1_000_000), service: parsed.featureService)
        return (bytes, grid, resolved.outputs.count)
    }

    /// The checks before a read: the token, then the body parsed and resolved.
    private func prepare(
        authorization: String?, body: ByteBuffer?, service: inout String, admission: inout AccessGuard.Admission?
    ) throws -> (ResolvedRequest, EntityBatch, Date, OnlineFeatureRequest) {
        let date = now()
        try FeatureServer.authorize(authorization: authorization, guard: accessGuard, now: date, admission: &admission)
        guard let body else {
            throw FeatureServerProblem(status: .contentTooLarge, code: "payload-too-large", detail: "the request body is too large for this agent")
        }
        let parsed = try OnlineFeatureRequest(json: body.readableBytesView, limit: settings.maxBatchEntities)
        let resolved: ResolvedRequest
        switch (parsed.featureService, parsed.features) {
        case (let name?, nil):
            resolved = try reader.resolve(service: name)
            service = name   // only a name that resolved becomes a metric label: clients cannot grow the label set
        case (nil, let references?):
            guard !references.isEmpty else { throw FeatureRequestError.invalid("features", "list at least one feature, such as driver_hourly_stats:conv_rate") }
            service = "-"
            resolved = try reader.resolve(references: references)
        default:
            throw FeatureRequestError.invalid("feature_service", "give either feature_service (a service's name) or features (a list of view:feature references), not both")
        }
        let batch = try EntityBatch(parsed, for: resolved, limit: settings.maxBatchEntities)
        return (resolved, batch, date, parsed)
    }
}

/// The request context of the feature server: the request id, and the
/// largest body accepted before the handler's own limit applies.
public struct FeatureServerContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The request's id, echoed in `X-Request-Id` and every log line.
    public var requestID = ""

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }

    public var maxUploadSize: Int { 1 << 30 }
}

/// An error of the feature server, sent as `application/problem+json`.
struct FeatureServerProblem: Error {
    var status: HTTPResponse.Status
    var details: ProblemDetails
    /// For 429: seconds until the client may retry (sent as `Retry-After`).
    var retryAfter: Int?

    init(status: HTTPResponse.Status, code: String, detail: String, field: String? = nil, retryAfter: Int? = nil) {
        self.status = status
        self.retryAfter = retryAfter
        details = ProblemDetails(code: code, title: status.reasonPhrase, status: Int(status.code), detail: detail, field: field)
    }

    /// Every error of the feature server mapped to HTTP, in one place.
    init(_ error: any Error) {
        switch error {
        case let problem as FeatureServerProblem:
            self = problem
        case let serving as ServingError:
            switch serving {
            case .unknownService: self.init(status: .notFound, code: "unknown-feature-service", detail: serving.description, field: "feature_service")
            case .unknownView, .unknownFeature: self.init(status: .notFound, code: "unknown-feature", detail: serving.description, field: "features")
            case .unknownSource: self.init(status: .notFound, code: "unknown-push-source", detail: serving.description)
            case .malformedReference: self.init(status: .badRequest, code: "invalid-request", detail: serving.description, field: "features")
            case .noRegistry, .unreadableSnapshot: self.init(status: .serviceUnavailable, code: "registry-unavailable", detail: serving.description)
            }
        case let push as PushError:
            switch push {
            case .inProgress: self.init(status: .conflict, code: "push-in-progress", detail: push.description, field: "Idempotency-Key")
            case .offlineUnavailable: self.init(status: .serviceUnavailable, code: "offline-store-unavailable", detail: push.description)
            }
        case let dataset as DatasetError:
            switch dataset.kind {
            case .invalidInput: self.init(status: .badRequest, code: "invalid-request", detail: dataset.detail, field: dataset.field)
            case .notMaterialized: self.init(status: .conflict, code: "not-materialized", detail: dataset.detail, field: dataset.field)
            case .noOfflineStore: self.init(status: .serviceUnavailable, code: "offline-store-unavailable", detail: dataset.detail)
            }
        case let redis as RedisError:
            self.init(status: .serviceUnavailable, code: "online-store-unavailable", detail: "the online store cannot be read now (\(redis)); retry")
        case let request as FeatureRequestError:
            switch request.kind {
            case .invalid: self.init(status: .badRequest, code: "invalid-request", detail: request.detail, field: request.field)
            case .tooManyEntities: self.init(status: .contentTooLarge, code: "payload-too-large", detail: request.detail, field: request.field)
            }
        case let http as HTTPError:
            self.init(status: http.status, code: ProblemDetails.code(forStatus: Int(http.status.code)), detail: http.body ?? http.status.reasonPhrase)
        case let http as any HTTPResponseError:
            self.init(status: http.status, code: ProblemDetails.code(forStatus: Int(http.status.code)),
                      detail: http.status == .contentTooLarge ? "the request body is too large for this agent" : http.status.reasonPhrase)
        default:
            self.init(status: .internalServerError, code: "internal",
                      detail: "the agent failed to handle the request; the request id identifies it in the agent's logs")
        }
    }
}

extension FeatureServerProblem {
    /// The `application/problem+json` answer to `error` for request
    /// `requestID`; logs it (as an error when the agent itself failed).
    static func reply(to error: any Error, requestID: String, logger: Logger) -> (status: HTTPResponse.Status, headers: HTTPFields, body: [UInt8]) {
        let problem = FeatureServerProblem(error)
        if problem.status.code >= 500, problem.status != .serviceUnavailable {
            logger.error("request failed", metadata: ["larder.error": .string(String(describing: error)), "larder.request_id": .string(requestID)])
        } else {
            logger.debug("request rejected", metadata: ["larder.problem": .string(problem.details.code), "larder.request_id": .string(requestID)])
        }
        var details = problem.details
        details.requestId = requestID
        var headers = HTTPFields()
        headers[.contentType] = "application/problem+json"
        if problem.status == .unauthorized { headers[.wwwAuthenticate] = "Bearer realm=\"larder\"" }
        if let seconds = problem.retryAfter { headers[.retryAfter] = String(seconds) }
        return (problem.status, headers, Array((try? APICoding.makeEncoder().encode(details)) ?? Data()))
    }
}

/// Gives every request an id, puts it in the logger and the response, and
/// turns every error into an `application/problem+json` response.
struct FeatureServerErrorMiddleware: RouterMiddleware {
    typealias Context = FeatureServerContext
    static let requestIDHeader = HTTPField.Name("X-Request-Id")!
    static let ids = RequestIDs()

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let requestID = RequestID.acceptable(request.headers[Self.requestIDHeader]) ?? Self.ids.next()
        // The id goes into log lines as they are written (setting it on the logger
        // would copy its metadata on every request, logged or not).
        context.requestID = requestID
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            let reply = FeatureServerProblem.reply(to: error, requestID: requestID, logger: context.logger)
            response = Response(status: reply.status, headers: reply.headers, body: .init(byteBuffer: ByteBuffer(bytes: reply.body)))
        }
        response.headers[Self.requestIDHeader] = requestID
        return response
    }
}

/// Request ids without a UUID per request: a random prefix per process and a
/// counter (unique within the agent's logs, and cheap on the hot path).
final class RequestIDs: Sendable {
    private let prefix = String(UInt64.random(in: 0...UInt64.max) & 0xFFFF_FFFF_FFFF, radix: 16)
    private let counter = Atomic<UInt64>(0)

    func next() -> String {
        let value = counter.add(1, ordering: .relaxed).newValue
        return "\(prefix)-\(String(value, radix: 16))"
    }
}

import AsyncHTTPClient
@testable import DataPlane
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import ServiceLifecycle
import Shared
import Testing
import TestSupport

/// Feature reads answered on the event loop (`OnlineFeaturesChannelHandler`)
/// against the same reads through the router, over real HTTP on 127.0.0.1.
@Suite("Feature reads on the event loop")
struct FeatureServerEventLoopTests {
    /// The example's registry and an online store of a few drivers, with a
    /// consumer token and a viewer's token, behind a feature server.
    struct World: Sendable {
        let folder: URL
        var reader: OnlineFeatureReader
        let accessGuard: AccessGuard
        let consumer: String
        let viewer: String
        /// Small limits, so generated requests cross them.
        let settings = AgentConfiguration.ServingSettings(host: "127.0.0.1", port: 0, maxBatchEntities: 6, maxBodyBytes: 600)
        static let drivers = 0..<8

        init() throws {
            folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-event-loop-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let snapshots = try SignedServingSnapshots(
                folder: folder, workspace: "rides", members: [("model", [.consumer]), ("analyst", [.viewer])])
            let repository = snapshots.repository, now = Date()
            accessGuard = snapshots.accessGuard
            consumer = snapshots.tokens[0]
            viewer = snapshots.tokens[1]

            let store = try OnlineStore(directory: folder.appendingPathComponent("online").path)
            let schemas = RepositoryValidator.viewSchemas(of: repository)
            let nowMicros = Int64(now.timeIntervalSince1970 * 1_000_000)
            for view in ["driver_hourly_stats", "driver_trip_aggregates"] {
                let features = schemas[view]!
                let ttl = repository.featureViews.first { $0.name == view }?.ttl?.seconds
                let table = try store.table(for: OnlineTableSchema(
                    view: view, version: 1, keys: [Column(name: "driver_id", type: .int64)], features: features, ttlSeconds: ttl))
                // Drivers 0..<6 are stored (the rest are unknown); driver 1's values are null.
                let stored = 0..<6
                let columns: [ColumnValues] = features.enumerated().map { index, feature in
                    feature.type.isInteger
                        ? .int64(stored.map { $0 == 1 ? nil : Int64($0 * 10 + index) })
                        : .float64(stored.map { $0 == 1 ? nil : Double($0) / 8 + Double(index) })
                }
                _ = try table.upsert(OnlineRows(
                    keys: stored.map { .int(Int64($0)) }, eventTimes: stored.map { nowMicros - Int64($0) * 60_000_000 },
                    createdTimes: Array(repeating: nowMicros, count: stored.count), features: columns))
            }
            reader = OnlineFeatureReader(store: store, registry: snapshots.registry)
        }

        func remove() { try? FileManager.default.removeItem(at: folder) }

        /// The same world reading from the Redis at `port`, its values copied there.
        func onRedis(port: Int) async throws -> (World, RedisOnlineStore) {
            guard let store = reader.store else { throw RedisError.closed }
            let redis = try RedisOnlineStore(settings: RedisSettings(endpoints: [RedisEndpoint(host: "127.0.0.1", port: port)]), logger: Logger(label: "test"))
            for schema in store.schemas {
                guard let table = store.table(view: schema.view, version: schema.version) else { continue }
                try await redis.upsert(table, now: Int64(Date().timeIntervalSince1970 * 1_000_000))
                try await redis.publish(schema)
            }
            var world = self
            world.reader = OnlineFeatureReader(backend: .redis(redis, staging: store), registry: reader.registry)
            return (world, redis)
        }

        /// The agent's server: feature reads answered on the event loop.
        var eventLoopServer: HTTPServerBuilder {
            FeatureServer.http1(settings: settings, reader: reader, guard: accessGuard, metrics: AgentMetrics(), logger: Logger(label: "test"))
        }

        func router() -> Router<FeatureServerContext> {
            FeatureServer.makeRouter(settings: settings, reader: reader, guard: accessGuard, metrics: AgentMetrics())
        }
    }

    /// A generated request: what it sends.
    struct GeneratedRequest: CustomStringConvertible {
        var token: String?
        /// A second `Authorization` header, sent after the first.
        var secondToken: String?
        var body: String
        var description: String {
            "token \(token.map { String($0.prefix(12)) } ?? "none")\(secondToken.map { " and " + String($0.prefix(12)) } ?? ""), body \(body)"
        }
    }

    static func generate(_ world: World, using random: inout SeededGenerator) -> GeneratedRequest {
        func entity() -> String {
            switch Int.random(in: 0..<12, using: &random) {
            case 0: return #"{"driver_id":"seven"}"#               // wrong key type
            case 1: return #"{"rider_id":3}"#                      // missing key
            default: return #"{"driver_id":\#(Int.random(in: World.drivers, using: &random))}"#
            }
        }
        let count = [0, 1, 1, 2, 3, 6, 7][Int.random(in: 0..<7, using: &random)]   // 7 is over the limit of 6
        let entities = "[" + (0..<count).map { _ in entity() }.joined(separator: ",") + "]"
        let context = Int.random(in: 0..<4, using: &random) == 0 ? "" : #","request_context":{"trip_distance_km":\#(Double(Int.random(in: 1...90, using: &random)) / 10)}"#
        let references = ["driver_hourly_stats:conv_rate", "driver_trip_aggregates:fare_mean_7d", "trip_quote:expected_fare", "driver_hourly_stats:nope",
                          "unknown_view:x", "malformed"]
        let body: String
        switch Int.random(in: 0..<10, using: &random) {
        case 0: body = #"{"feature_service":"no_such_service","entities":\#(entities)}"#
        case 1: body = #"{"features":[\#((0..<Int.random(in: 0...2, using: &random)).map { _ in "\"" + references.randomElement(using: &random)! + "\"" }.joined(separator: ","))],"entities":\#(entities)\#(context)}"#
        case 2: body = #"{"feature_service":"driver_ranking","features":["driver_hourly_stats:conv_rate"],"entities":\#(entities)}"#
        case 3: body = #"{"feature_service":"driver_ranking","entities":\#(entities)\#(context)"#   // cut short
        case 4: body = #"{"feature_service":"driver_ranking","entities":\#(entities)\#(context),"note":"\#(String(repeating: "x", count: 700))"}"#   // over 600 bytes
        default: body = #"{"feature_service":"driver_ranking","entities":\#(entities)\#(context)}"#
        }
        let token: String?
        switch Int.random(in: 0..<10, using: &random) {
        case 0: token = nil
        case 1: token = world.viewer
        case 2: token = "lrd_not_a_token"
        default: token = world.consumer
        }
        // Now and then a second Authorization header: both paths read the two as one value, and refuse it.
        let second = Int.random(in: 0..<15, using: &random) == 0 ? [world.consumer, world.viewer][Int.random(in: 0..<2, using: &random)] : nil
        return GeneratedRequest(token: token, secondToken: second, body: body)
    }

    /// What a response shows a client.
    struct Answer: Equatable, CustomStringConvertible {
        var status: UInt
        var contentType: String?
        var authenticate: String?
        var requestID: String?
        var body: String
        var description: String { "\(status) \(contentType ?? "-") \(body)" }
    }

    /// The answer, and its `Server` header: only the event-loop path sets one in these servers (they have no server name).
    static func send(_ request: GeneratedRequest, to url: String, id: String, client: HTTPClient) async throws -> (Answer, server: String?) {
        var http = HTTPClientRequest(url: url + "/v1/features/online")
        http.method = .POST
        http.headers.add(name: "Content-Type", value: "application/json")
        http.headers.add(name: "X-Request-Id", value: id)
        if let token = request.token { http.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let token = request.secondToken { http.headers.add(name: "Authorization", value: "Bearer \(token)") }
        http.body = .bytes(ByteBuffer(string: request.body))
        let response = try await client.execute(http, timeout: .seconds(60))   // a hang guard, not a latency bound
        let body = try await response.body.collect(upTo: 1 << 20)
        let answer = Answer(
            status: response.status.code, contentType: response.headers.first(name: "Content-Type"),
            authenticate: response.headers.first(name: "WWW-Authenticate"), requestID: response.headers.first(name: "X-Request-Id"),
            body: String(buffer: body))
        return (answer, response.headers.first(name: "Server"))
    }

    @Test("generated requests — valid, unknown names, bad keys, too many entities, bodies over the limit, broken JSON, missing, foreign and viewer tokens — get the router's exact answer", arguments: [1, 2, 3] as [UInt64])
    func agreesWithRouter(seed: UInt64) async throws {
        let world = try World()
        defer { world.remove() }
        try await withLoopbackServer(world.router(), server: world.eventLoopServer, label: "event-loop") { eventLoop in
            try await withLoopbackServer(world.router(), server: .http1(), label: "router") { routed in
                let client = HTTPClient.shared
                var random = SeededGenerator(seed: seed)
                var statuses: [UInt: Int] = [:]
                for index in 0..<120 {
                    let request = Self.generate(world, using: &random)
                    let id = "case-\(seed)-\(index)"
                    let (fast, fastServer) = try await Self.send(request, to: eventLoop, id: id, client: client)
                    let (slow, slowServer) = try await Self.send(request, to: routed, id: id, client: client)
                    #expect(fast == slow, "\(request)")
                    // Each answer came from the path it is meant to test.
                    #expect(fastServer == "larder-agent" && slowServer == nil)
                    #expect(fast.requestID == id)
                    statuses[fast.status, default: 0] += 1
                }
                // The generator reaches every answer the route gives.
                #expect(Set(statuses.keys).isSuperset(of: [200, 400, 401, 403, 404, 413]), "\(statuses)")
            }
        }
    }

    @Test("with Redis: reads answered on the event loop over a Redis connection of that loop agree with the router, and pipelined requests behind a waiting read are answered in order")
    func redisOnTheEventLoop() async throws {
        let local = try World()
        defer { local.remove() }
        try await TestRedis.withServer { redisPort in
            let (world, redis) = try await local.onRedis(port: redisPort)
            try await withLoopbackServer(world.router(), server: world.eventLoopServer, label: "event-loop") { eventLoop in
                try await withLoopbackServer(world.router(), server: .http1(), label: "router") { routed in
                    var random = SeededGenerator(seed: 5)
                    var statuses: [UInt: Int] = [:]
                    for index in 0..<150 {
                        let request = Self.generate(world, using: &random)
                        let (fast, fastServer) = try await Self.send(request, to: eventLoop, id: "redis-\(index)", client: .shared)
                        let (slow, _) = try await Self.send(request, to: routed, id: "redis-\(index)", client: .shared)
                        #expect(fast == slow, "\(request)")
                        #expect(fastServer == "larder-agent")
                        statuses[fast.status, default: 0] += 1
                    }
                    #expect(Set(statuses.keys).isSuperset(of: [200, 400, 401, 403, 404, 413]), "\(statuses)")
                }
                // Valid reads go out on a connection of the server's event loop (the first on a loop opens it).
                let before = redis.client.onLoopPipelines.load(ordering: .relaxed)
                let valid = GeneratedRequest(token: world.consumer, body: #"{"feature_service":"driver_ranking","entities":[{"driver_id":3}],"request_context":{"trip_distance_km":1.5}}"#)
                for index in 0..<50 {
                    let (answer, _) = try await Self.send(valid, to: eventLoop, id: "valid-\(index)", client: .shared)
                    #expect(answer.status == 200)
                }
                #expect(redis.client.onLoopPipelines.load(ordering: .relaxed) - before >= 45)

                // Pipelined: each read waits for Redis while what follows is held, then handled in turn.
                let port = Int(eventLoop.split(separator: ":").last!)!
                let read = #"{"feature_service":"driver_ranking","entities":[{"driver_id":2},{"driver_id":7}],"request_context":{"trip_distance_km":2.5}}"#
                func post(_ body: String, close: Bool = false) -> String {
                    "POST /v1/features/online HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(world.consumer)\r\nContent-Type: application/json\r\n"
                        + "Content-Length: \(body.utf8.count)\r\n\(close ? "Connection: close\r\n" : "")\r\n\(body)"
                }
                let single = try await Self.exchange(port: port, pieces: [Array(post(read, close: true).utf8)])
                #expect(single.count == 1 && single.first?.status == "HTTP/1.1 200 OK" && single.first?.server == "larder-agent")
                let expected = single.first?.body ?? ""
                #expect(expected.contains(#""results":[{"values":[0.25,"#))
                let readyz = "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
                let stream = post(read) + post(read) + readyz + post(read) + post(#"{"feature_service":"nope","entities":[]}"#) + post(read, close: true)
                let bytes = Array(stream.utf8)
                let cut = bytes.count - 40
                for pieces in [[bytes], [Array(bytes[..<cut]), Array(bytes[cut...])]] {
                    let answers = try await Self.exchange(port: port, pieces: pieces)
                    #expect(answers.map(\.status) == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1 200 OK"])
                    guard answers.count == 6 else { continue }
                    #expect(answers[0].body == expected && answers[1].body == expected && answers[3].body == expected && answers[5].body == expected)
                    #expect(answers[0].server == "larder-agent" && answers[1].server == "larder-agent")
                    #expect(answers[2].body == #"{"status":"ready"}"#)
                    #expect(answers[4].body.contains("unknown-feature-service"))
                }
            }
            await redis.close()
        }
    }

    /// Sends `bytes` in pieces on one connection (from a thread of its own) and
    /// reads until the server closes it; returns the responses' status lines and bodies.
    /// `awaitAnswers`: each piece but the last is sent only once the answers to those before it have arrived whole.
    static func exchange(
        port: Int, pieces: [[UInt8]], pauseMicroseconds: UInt32 = 2_000, awaitAnswers: Bool = false
    ) async throws -> [(status: String, body: String, server: String?, connection: String?)] {
        let raw: [UInt8] = try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result {
                    try RawConnection.exchange(port: port, pieces: pieces, pauseMicroseconds: pauseMicroseconds, awaitAnswers: awaitAnswers)
                })
            }
        }
        return RawConnection.responses(in: raw)
    }

    @Test("pipelined requests are answered in order: a feature read behind a routed request waits its turn; a body in pieces is collected; Connection: close closes after the answer")
    func pipelined() async throws {
        let world = try World()
        defer { world.remove() }
        try await withLoopbackServer(world.router(), server: world.eventLoopServer, label: "event-loop") { url in
            let port = Int(url.split(separator: ":").last!)!
            let read = #"{"feature_service":"driver_ranking","entities":[{"driver_id":2},{"driver_id":7}],"request_context":{"trip_distance_km":2.5}}"#
            func post(_ body: String, close: Bool = false) -> String {
                "POST /v1/features/online HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(world.consumer)\r\nContent-Type: application/json\r\n"
                    + "Content-Length: \(body.utf8.count)\r\n\(close ? "Connection: close\r\n" : "")\r\n\(body)"
            }
            let readyz = "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", healthz = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            // The expected feature answer, from a request of its own.
            let single = try await Self.exchange(port: port, pieces: [Array(post(read, close: true).utf8)])
            #expect(single.count == 1 && single[0].status == "HTTP/1.1 200 OK")
            #expect(single.first?.server == "larder-agent")   // answered on the event loop
            let expected = single[0].body
            #expect(expected.contains(#""results":[{"values":[0.25,"#))

            // All at once: routed, read, routed, read (split mid-body), read closing the connection.
            let stream = readyz + post(read) + healthz + post(read) + post(#"{"feature_service":"nope","entities":[]}"#, close: true)
            let bytes = Array(stream.utf8)
            let cut = bytes.count - 30
            let answers = try await Self.exchange(port: port, pieces: [Array(bytes[..<cut]), Array(bytes[cut...])])
            #expect(answers.map(\.status) == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found"])
            guard answers.count == 5 else { return }
            #expect(answers[0].body == #"{"status":"ready"}"#)
            #expect(answers[1].body == expected)
            // The reads pipelined behind the routed readyz were answered by the router, in turn.
            #expect(answers[1].server == nil && answers[3].server == nil)
            #expect(answers[2].body == #"{"status":"ok"}"#)
            #expect(answers[3].body == expected)
            #expect(answers[4].body.contains("unknown-feature-service"))

            // A body sent in many small pieces.
            let pieces = stride(from: 0, to: post(read, close: true).utf8.count, by: 17).map { start in
                Array(Array(post(read, close: true).utf8)[start..<min(start + 17, post(read, close: true).utf8.count)])
            }
            let slow = try await Self.exchange(port: port, pieces: pieces)
            #expect(slow.count == 1 && slow.first?.body == expected && slow.first?.server == "larder-agent")

            // HTTP/1.0: answered here, and the connection closed after it (the exchange reads until the server closes)
            // unless the read asks to keep it, when the answer says so and the next request is answered in turn.
            func http10(_ request: String, keepAlive: Bool = false) -> String {
                request.replacingOccurrences(of: " HTTP/1.1\r\n", with: " HTTP/1.0\r\n")
                    .replacingOccurrences(of: "Host: x\r\n", with: keepAlive ? "Host: x\r\nConnection: keep-alive\r\n" : "Host: x\r\n")
            }
            let closed = try await Self.exchange(port: port, pieces: [Array(http10(post(read)).utf8)])
            #expect(closed.count == 1 && closed.first?.body == expected && closed.first?.server == "larder-agent" && closed.first?.connection == "close", "\(closed)")
            let kept = try await Self.exchange(port: port, pieces: [Array(http10(post(read), keepAlive: true).utf8), Array(post(read, close: true).utf8)])
            #expect(kept.count == 2 && kept.allSatisfy { $0.body == expected && $0.server == "larder-agent" }, "\(kept)")
            #expect(kept.first?.connection == "keep-alive" && kept.last?.connection == "close", "\(kept)")

            // A client that sends `Expect: 100-continue` and waits (the exchange sends the body only once an answer
            // came) is told to go on, then answered.
            let split = post(read, close: true).replacingOccurrences(of: "Host: x\r\n", with: "Host: x\r\nExpect: 100-continue\r\n")
            let bodyStart = split.range(of: "\r\n\r\n")!.upperBound
            let continued = try await Self.exchange(
                port: port, pieces: [Array(split[..<bodyStart].utf8), Array(split[bodyStart...].utf8)], awaitAnswers: true)
            #expect(continued.map(\.status) == ["HTTP/1.1 100 Continue", "HTTP/1.1 200 OK"] && continued.last?.body == expected, "\(continued)")

            // An error's status line is the router's, word for word (both write NIO's wording for the code).
            let large = post(#"{"feature_service":"driver_ranking","entities":[],"note":"\#(String(repeating: "x", count: 700))"}"#, close: true)
            let here = try await Self.exchange(port: port, pieces: [Array(large.utf8)])
            let routed = try await Self.exchange(port: port, pieces: [Array((readyz + large).utf8)])
            #expect(here.first?.server == "larder-agent" && routed.last?.server == nil)
            #expect(here.first?.status.hasPrefix("HTTP/1.1 413 ") == true && routed.last?.status == here.first?.status, "\(here) \(routed)")

            // Not pipelined: a read sent after the routed request's answer is answered on the event loop again.
            let turns = try await Self.exchange(port: port, pieces: [Array(readyz.utf8), Array(post(read, close: true).utf8)], awaitAnswers: true)
            #expect(turns.map(\.status) == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"])
            #expect(turns.count == 2 && turns[0].server == nil && turns[1].server == "larder-agent" && turns[1].body == expected)
        }
    }

    @Test("a graceful shutdown that arrives while a read's body is coming in waits for its answer, then the connection closes")
    func shutdownMidRead() async throws {
        let world = try World()
        defer { world.remove() }
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        // The agent's pipeline with a probe in front of the feature-read handler: it says when the first
        // part of a body has been handled, so the shutdown is sent mid-read however slow the machine is.
        let bodyStarted = DispatchSemaphore(value: 0)
        let handler = OnlineFeaturesHandler(settings: world.settings, reader: world.reader, accessGuard: world.accessGuard, metrics: AgentMetrics(), now: { Date() })
        let server = HTTPServerBuilder { responder in
            FeatureServerHTTP1Channel(
                responder: responder, handler: handler, logger: Logger(label: "shutdown"), handlersBefore: { [BodyProbe(started: bodyStarted)] })
        }
        let application = Application(
            router: world.router(), server: server, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                continuation.yield(channel.localAddress?.port ?? 0)
                continuation.finish()
            }, logger: Logger(label: "shutdown"))
        let services = ServiceGroup(configuration: .init(services: [application], logger: Logger(label: "shutdown")))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            var listening = 0
            for await value in ports { listening = value }
            let port = listening
            let body = #"{"feature_service":"driver_ranking","entities":[{"driver_id":2}],"request_context":{"trip_distance_km":2.5}}"#
            let request = Array(("POST /v1/features/online HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(world.consumer)\r\n"
                + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)").utf8)
            let cut = request.count - 20
            // The head and most of the body; then the shutdown; then the rest of the body.
            let raw: [UInt8] = try await withCheckedThrowingContinuation { done in
                Thread.detachNewThread {
                    done.resume(with: Result {
                        try RawConnection.exchange(port: port, pieces: [Array(request[..<cut]), Array(request[cut...])], pauseMicroseconds: 400_000) { _ in
                            // Once the server has read the head and the first part of the body.
                            _ = bodyStarted.wait(timeout: .now() + 20)
                            Task { await services.triggerGracefulShutdown() }
                        }
                    })
                }
            }
            let text = String(decoding: raw, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.1 200 OK"), "\(text.prefix(200))")
            #expect(text.contains(#""results":[{"values":[0.25,"#))
            try await group.waitForAll()
        }
    }

    @Test("a connection's remembered token decides exactly as a fresh check does, through new snapshots (revocations, role changes), token expiry and snapshot expiry", arguments: Array(1...8) as [UInt64])
    func rememberedTokens(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let keys = SigningKeyPair.generate()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-admission-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let guardian = AccessGuard(file: folder.appendingPathComponent("access.json"), publicKey: keys.publicKey, logger: Logger(label: "test"))
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let tokens = (0..<3).map { _ in APIToken.generate() }
        var now = start, version: Int64 = 0, snapshotExpiry = start
        func install() throws {
            version += 1
            snapshotExpiry = now.addingTimeInterval(Double(Int.random(in: 60...600, using: &random)))
            let entries = tokens.enumerated().compactMap { index, token -> AccessSnapshot.Entry? in
                guard Int.random(in: 0..<4, using: &random) > 0 else { return nil }   // revoked in this snapshot
                return AccessSnapshot.Entry(
                    tokenPublicId: token.publicID, secretSha256: Data(token.secretHash).base64URL, principal: "p\(index)",
                    roles: [[.consumer], [.viewer], [.consumer, .operator]].randomElement(using: &random)!,
                    tokenExpiresAt: Bool.random(using: &random) ? nil : now.addingTimeInterval(Double(Int.random(in: 1...300, using: &random))))
            }
            let snapshot = AccessSnapshot(workspace: "rides", version: version, issuedAt: now, expiresAt: snapshotExpiry, entries: entries)
            try guardian.install(try keys.sign(try snapshot.jsonValue()), workspace: "rides")
        }
        try install()
        var admission: AccessGuard.Admission?
        var reused = 0
        for _ in 0..<300 {
            switch Int.random(in: 0..<10, using: &random) {
            case 0: try install()
            case 1, 2: now = now.addingTimeInterval(Double(Int.random(in: 1...120, using: &random)))
            default: break
            }
            let token = tokens.randomElement(using: &random)!
            let role: WorkspaceRole = Int.random(in: 0..<5, using: &random) == 0 ? .operator : .consumer
            let held = admission
            let remembered = Result { try FeatureServer.authorize(authorization: "Bearer \(token.text)", guard: guardian, now: now, role: role, admission: &admission) }
            let fresh = guardian.authorize(token: token.text, now: now, role: role)
            switch (remembered, fresh) {
            case (.success(let principal), .allowed(let expected)): #expect(principal == expected)
            case (.failure(let error as FeatureServerProblem), _):
                let expected: Int? = switch fresh {
                case .allowed: nil
                case .unauthenticated: 401
                case .forbidden: 403
                case .unavailable: 503
                }
                #expect(error.status.code == expected, "remembered: \(error.details.detail); fresh: \(fresh)")
            default: Issue.record("remembered \(remembered), fresh \(fresh)")
            }
            if let held, guardian.readmits(held, header: "Bearer \(token.text)", role: role, now: now) { reused += 1 }
        }
        #expect(reused > 20, "the remembered token was reused \(reused) times")
        // An admission holds the header, a secret: printing it must not show the token.
        if let admission { #expect(!String(describing: admission).contains("lrd_") && !String(reflecting: admission).contains("lrd_")) }
    }

    @Test("the Date header is IMF-fixdate, as HTTP requires")
    func httpDate() {
        #expect(HTTPDateText.format(secondsSinceEpoch: 784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDateText.format(secondsSinceEpoch: 0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDateText.format(secondsSinceEpoch: 951_782_400) == "Tue, 29 Feb 2000 00:00:00 GMT")
        // Against Foundation's formatter over generated times.
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        var random = SeededGenerator(seed: 9)
        for _ in 0..<500 {
            let seconds = Int.random(in: 0...4_102_444_800, using: &random)
            #expect(HTTPDateText.format(secondsSinceEpoch: seconds) == formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds))))
        }
    }
}

/// A blocking TCP connection to 127.0.0.1, for sending bytes exactly as given.
enum RawConnection {
    struct Failure: Error { var what: String }

    /// Connects to `port`, sends each piece (pausing between them), and reads until the server closes.
    /// `between` runs after each piece but the last, before the pause.
    /// The whole responses `bytes` begins with (split by their Content-Length; an incomplete last one is left out).
    static func responses(in bytes: [UInt8]) -> [(status: String, body: String, server: String?, connection: String?)] {
        var responses: [(String, String, String?, String?)] = []
        var rest = bytes[...]
        while let end = rest.firstRange(of: Array("\r\n\r\n".utf8)) {
            let lines = String(decoding: rest[rest.startIndex..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
            func header(_ name: String) -> String? {
                lines.compactMap { line -> String? in
                    let parts = line.split(separator: ":", maxSplits: 1)
                    return parts.count == 2 && parts[0].lowercased() == name ? parts[1].trimmingCharacters(in: .whitespaces) : nil
                }.first
            }
            let length = header("content-length").flatMap { Int($0) } ?? 0
            guard rest.distance(from: end.upperBound, to: rest.endIndex) >= length else { break }
            let bodyEnd = rest.index(end.upperBound, offsetBy: length)
            responses.append((lines[0], String(decoding: rest[end.upperBound..<bodyEnd], as: UTF8.self), header("server"), header("connection")))
            rest = rest[bodyEnd...]
        }
        return responses
    }

    static func exchange(
        port: Int, pieces: [[UInt8]], pauseMicroseconds: UInt32, awaitAnswers: Bool = false, between: (Int) -> Void = { _ in }
    ) throws -> [UInt8] {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw Failure(what: "socket") }
        defer { close(socket) }
        var timeout = timeval(tv_sec: 60, tv_usec: 0)   // a hang guard: a loaded machine may take seconds
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Failure(what: "connect") }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        for (index, piece) in pieces.enumerated() {
            var sent = 0
            while sent < piece.count {
                let count = piece[sent...].withUnsafeBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                guard count > 0 else { throw Failure(what: "send") }
                sent += count
            }
            if index < pieces.count - 1 {
                between(index)
                usleep(pauseMicroseconds)
                while awaitAnswers, responses(in: received).count < index + 1 {
                    let count = buffer.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
                    guard count > 0 else { throw Failure(what: "recv: no answer to piece \(index) before the next was sent") }
                    received += buffer[..<count]
                }
            }
        }
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
            if count == 0 { return received }
            guard count > 0 else { throw Failure(what: "recv: the server did not close the connection") }
            received += buffer[..<count]
        }
    }
}

extension FeatureServerEventLoopTests {
    /// Passes every request part on, and signals `started` once a body part has been handled by the handlers after it.
    final class BodyProbe: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias InboundOut = HTTPServerRequestPart
        let started: DispatchSemaphore
        var signalled = false
        init(started: DispatchSemaphore) { self.started = started }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let isBody = if case .body = unwrapInboundIn(data) { true } else { false }
            context.fireChannelRead(data)
            if isBody, !signalled {
                signalled = true
                started.signal()
            }
        }
    }

    /// Counts the reads that reach the channel (it sits between the channel and the handler under test).
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = NIOAny
        var count = 0
        func read(context: ChannelHandlerContext) {
            count += 1
            context.read()
        }
    }

    @Test("while the connection cannot take more output, reading stops: a read asked for is held, and asked again once it is writable")
    func backpressureHoldsReads() throws {
        let world = try World()
        defer { world.remove() }
        let handler = OnlineFeaturesHandler(settings: world.settings, reader: world.reader, accessGuard: world.accessGuard, metrics: AgentMetrics(), now: { Date() })
        let reads = ReadCounter()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([reads, OnlineFeaturesChannelHandler(handler: handler, logger: Logger(label: "test"))])
        channel.read()
        #expect(reads.count == 1, "a writable connection reads")
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        for _ in 0..<3 { channel.read() }
        #expect(reads.count == 1, "reads are held while the connection cannot take more output")
        // A read already received is still answered: the hold stops reading, not answering.
        let head = HTTPRequestHead(
            version: .http1_1, method: .POST, uri: "/v1/features/online", headers: ["Authorization": "Bearer \(world.consumer)"])
        try channel.writeInbound(HTTPServerRequestPart.head(head))
        try channel.writeInbound(HTTPServerRequestPart.body(ByteBuffer(string: #"{"feature_service":"driver_ranking","entities":[{"driver_id":2}],"request_context":{"trip_distance_km":2.5}}"#)))
        try channel.writeInbound(HTTPServerRequestPart.end(nil))
        guard case .head(let response)? = try channel.readOutbound(as: HTTPServerResponsePart.self) else {
            Issue.record("no answer to the feature read")
            return
        }
        #expect(response.status == .ok)
        guard case .body(.byteBuffer(let body))? = try channel.readOutbound(as: HTTPServerResponsePart.self) else {
            Issue.record("no body in the answer")
            return
        }
        #expect(String(buffer: body).hasPrefix(#"{"feature_service":"driver_ranking""#) && String(buffer: body).contains(#""statuses":["present""#))
        #expect(reads.count == 1)
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(reads.count == 2, "the held read is asked for once writable")
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(reads.count == 2, "with no read held, a writability change asks for none")
        channel.read()
        #expect(reads.count == 3)
        _ = try channel.finish()
    }
}

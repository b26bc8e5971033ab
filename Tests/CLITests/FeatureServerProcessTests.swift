import AsyncHTTPClient
import DataPlane
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PostgresNIO
import Shared
import Testing
import TestSupport

/// A feature-server answer, decoded loosely to check every cell.
struct ServedFeatures: Decodable {
    struct Feature: Decodable { var name: String; var type: String }
    struct Result: Decodable {
        var values: [JSONCell]
        var statuses: [String]
        var eventTimestamps: [String?]
    }

    var featureService: String?
    var registryRevision: Int64
    var features: [Feature]
    var results: [Result]

    /// The cell of entity `row` and feature `name`.
    func cell(_ row: Int, _ name: String) -> (value: JSONCell, status: String, eventTimestamp: String?)? {
        guard let column = features.firstIndex(where: { $0.name == name }), row < results.count else { return nil }
        return (results[row].values[column], results[row].statuses[column], results[row].eventTimestamps[column])
    }
}

/// A JSON value in an answer.
enum JSONCell: Decodable, Equatable {
    case null, bool(Bool), number(Double), string(String)

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null } else if let flag = try? container.decode(Bool.self) { self = .bool(flag) } else if let number = try? container.decode(Double.self) {
            self = .number(number)
        } else { self = .string(try container.decode(String.self)) }
    }
}

/// Calls a real agent's feature server over HTTP.
struct FeatureServerCaller {
    let baseURL: String

    /// Waits for the agent to write its bound address into its data directory.
    static func waitForAddress(dataDirectory: URL, seconds: Double = 30) async throws -> FeatureServerCaller {
        let file = dataDirectory.appendingPathComponent("serving-address")
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let text = try? String(contentsOf: file, encoding: .utf8), text.hasPrefix("http") {
                return FeatureServerCaller(baseURL: text.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CancellationError()
    }

    func call(
        _ method: HTTPMethod = .POST, _ path: String = "/v1/features/online", body: String? = nil, token: String?, timeout: TimeAmount = .seconds(30)
    ) async throws -> (status: Int, body: Data, headers: HTTPHeaders) {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: timeout)
        let bytes = try await response.body.collect(upTo: 64 << 20)
        return (Int(response.status.code), Data(bytes.readableBytesView), response.headers)
    }

    func features(_ body: String, token: String?, timeout: TimeAmount = .seconds(30)) async throws -> ServedFeatures {
        let (status, data, _) = try await call(body: body, token: token, timeout: timeout)
        guard status == 200 else { throw ProblemDetails(code: "unexpected", title: "", status: status, detail: String(decoding: data, as: UTF8.self)) }
        return try APICoding.makeDecoder().decode(ServedFeatures.self, from: data)
    }

    func problem(_ body: String, token: String?) async throws -> (status: Int, problem: ProblemDetails) {
        let (status, data, headers) = try await call(body: body, token: token)
        #expect(headers["Content-Type"].first == "application/problem+json")
        return (status, try APICoding.makeDecoder().decode(ProblemDetails.self, from: data))
    }
}

@Suite("The agent's feature server, as a real process", .serialized)
struct FeatureServerProcessTests {
    static let ranking = #"{"feature_service":"driver_ranking","entities":[{"driver_id":1000},{"driver_id":1007,"trip_distance_km":10},{"driver_id":5000}],"request_context":{"trip_distance_km":3}}"#

    /// The newest offline row of driver_trip_aggregates for `driver` (what the online store must serve).
    static func newestAggregates(_ world: MaterializationWorld, driver: Int) async throws -> (count1d: Int, count7d: Int, fare7d: Double?, time: Date) {
        try await TestDatabase.withClient(world.customer) { client in
            let rows = try await client.query(
                """
                SELECT trips_count_1d::int, trips_count_7d::int, fare_mean_7d::float8, event_timestamp
                FROM larder_offline.rides__driver_trip_aggregates__v1 WHERE driver_id = \(driver) ORDER BY event_timestamp DESC LIMIT 1
                """, logger: Logger(label: "test"))
            for try await (count1d, count7d, fare, time) in rows.decode((Int, Int, Double?, Date).self) { return (count1d, count7d, fare, time) }
            throw CancellationError()
        }
    }

    @Test("a feature service for a batch: stored values with statuses and event times, on-demand outputs, a new version once materialized, every error as problem+json, revocation, and serving with the control plane down")
    func serves() async throws {
        try await MaterializationProcessTests.withWorld(drivers: 20, hours: 48, trips: 3_000) { world in
            let admin = world.jobs.admin, workspace = JobsWorld.workspace
            _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "carol", kind: .serviceAccount))
            _ = try await admin.grant(.consumer, to: "carol", workspace: workspace)
            let carol = try await admin.createToken(for: "carol", audience: .dataPlane)
            _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "victor", kind: .user))
            _ = try await admin.grant(.viewer, to: "victor", workspace: workspace)
            let victor = try await admin.createToken(for: "victor", audience: .dataPlane).token

            let agent = try world.startAgent()
            for view in ["driver_hourly_stats", "driver_trip_aggregates"] {
                let job = try await world.materialize(view, hours: 0..<48)
                #expect(job.job.state == .succeeded, "\(agent.log.suffix(2_000))")
            }
            let server = try await FeatureServerCaller.waitForAddress(dataDirectory: world.dataDirectory)
            // The access snapshot with carol's token reaches the agent within seconds.
            var first: ServedFeatures?
            let deadline = Date().addingTimeInterval(20)
            while first == nil, Date() < deadline {
                first = try? await server.features(Self.ranking, token: carol.token)
                if first == nil { try await Task.sleep(for: .milliseconds(200)) }
            }
            let served = try #require(first, "\(agent.log.suffix(2_000))")
            #expect(served.featureService == "driver_ranking")
            #expect(served.features.map(\.name) == [
                "driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate", "driver_hourly_stats:avg_daily_trips",
                "driver_trip_aggregates:trips_count_1d", "driver_trip_aggregates:trips_count_7d", "driver_trip_aggregates:fare_mean_7d",
                "trip_quote:expected_fare", "trip_quote:likely_to_convert",
            ])
            #expect(served.results.count == 3)
            // driver_hourly_stats has a 2-day TTL and the data is from 2025: expired, no value, the event time still given.
            let lastHour = RFC3339.format(MaterializationWorld.day0.addingTimeInterval(47 * 3_600))
            let expired = try #require(served.cell(0, "driver_hourly_stats:acc_rate"))
            #expect(expired.status == "expired" && expired.value == .null && expired.eventTimestamp == lastHour)
            // The window aggregations have no TTL: the newest row, as the offline store has it.
            for (row, driver) in [(0, 1000), (1, 1007)] {
                let truth = try await Self.newestAggregates(world, driver: driver)
                #expect(served.cell(row, "driver_trip_aggregates:trips_count_7d")?.value == .number(Double(truth.count7d)))
                #expect(served.cell(row, "driver_trip_aggregates:trips_count_1d")?.eventTimestamp == RFC3339.format(truth.time))
                let fare = try #require(served.cell(row, "driver_trip_aggregates:fare_mean_7d"))
                #expect(fare.value == (truth.fare7d.map { .number($0) } ?? .null))
                // expected_fare = trip_distance_km × fare_mean_7d; the second row sends its own distance.
                let distance = row == 1 ? 10.0 : 3.0
                guard case .number(let computed) = try #require(served.cell(row, "trip_quote:expected_fare")).value, let mean = truth.fare7d else {
                    Issue.record("no expected_fare for \(driver)")
                    continue
                }
                #expect(abs(computed - distance * mean) < 1e-9)
                // conv_rate is expired, so likely_to_convert is null.
                #expect(served.cell(row, "trip_quote:likely_to_convert")?.status == "null")
            }
            // A driver never stored: not_found everywhere, the on-demand outputs null.
            #expect(served.results[2].statuses == Array(repeating: "not_found", count: 6) + ["null", "null"])

            // Errors: each a problem with a stable type and the field to blame.
            let noToken = try await server.problem(Self.ranking, token: nil)
            #expect(noToken.status == 401 && noToken.problem.code == "unauthenticated")
            #expect(try await server.problem(Self.ranking, token: victor).status == 403)
            let unknownService = try await server.problem(#"{"feature_service":"ranking","entities":[{"driver_id":1}]}"#, token: carol.token)
            #expect(unknownService.status == 404 && unknownService.problem.field == "feature_service" && unknownService.problem.detail.contains("'ranking'"))
            let unknownFeature = try await server.problem(#"{"features":["driver_hourly_stats:conv"],"entities":[{"driver_id":1}]}"#, token: carol.token)
            #expect(unknownFeature.status == 404 && unknownFeature.problem.detail.contains("'conv'"))
            let missingKey = try await server.problem(#"{"features":["driver_hourly_stats"],"entities":[{"driver_id":1},{}]}"#, token: carol.token)
            #expect(missingKey.status == 400 && missingKey.problem.field == "entities[1].driver_id")
            let wrongType = try await server.problem(#"{"features":["driver_hourly_stats"],"entities":[{"driver_id":"1000"}]}"#, token: carol.token)
            #expect(wrongType.status == 400 && wrongType.problem.field == "entities[0].driver_id")
            let missingField = try await server.problem(#"{"feature_service":"driver_ranking","entities":[{"driver_id":1}]}"#, token: carol.token)
            #expect(missingField.status == 400 && missingField.problem.field == "request_context.trip_distance_km")
            let many = (0..<101).map { #"{"driver_id":\#($0)}"# }.joined(separator: ",")
            let tooMany = try await server.problem(#"{"features":["driver_hourly_stats"],"entities":[\#(many)]}"#, token: carol.token)
            #expect(tooMany.status == 413 && tooMany.problem.field == "entities")
            let notJSON = try await server.problem("{", token: carol.token)
            #expect(notJSON.status == 400)

            // A new version (a longer TTL): served from v1 until its first materialization, then from v2.
            try await RepositoryFixture.example(workspace: workspace).unscheduled()
                .replacing("ttl: 2d", with: "ttl: 3650d", in: "features.yaml").apply(to: workspace, with: admin)
            let moved = Date().addingTimeInterval(10)
            var current = served
            while current.registryRevision <= served.registryRevision, Date() < moved {
                try await Task.sleep(for: .milliseconds(200))
                current = try await server.features(Self.ranking, token: carol.token)
            }
            #expect(current.registryRevision > served.registryRevision)
            #expect(current.cell(0, "driver_hourly_stats:acc_rate")?.status == "expired")
            let job = try await world.materialize("driver_hourly_stats", hours: 0..<48)
            #expect(job.job.state == .succeeded)
            let renewed = try await server.features(Self.ranking, token: carol.token)
            for (row, driver) in [(0, 1000), (1, 1007)] {
                let truth = MaterializationWorld.values(driver: driver - 1_000, hour: 47)
                #expect(renewed.cell(row, "driver_hourly_stats:acc_rate")?.value == .number(truth.acc))
                #expect(renewed.cell(row, "driver_hourly_stats:avg_daily_trips")?.value == .number(Double(truth.trips)))
                let conv = try #require(renewed.cell(row, "driver_hourly_stats:conv_rate"))
                #expect(conv.status == (truth.conv == nil ? "null" : "present") && conv.eventTimestamp == lastHour)
                #expect(renewed.cell(row, "trip_quote:likely_to_convert")?.value == (truth.conv.map { .bool($0 > 0.5) } ?? .null))
            }

            // Metrics: behind a token, with the request latency and the online store's size.
            #expect(try await server.call(.GET, "/metrics", token: nil).status == 401)
            let metrics = String(decoding: try await server.call(.GET, "/metrics", token: carol.token).body, as: UTF8.self)
            #expect(metrics.contains(#"larder_feature_request_duration_seconds_count{feature_service="driver_ranking"}"#))
            // An unknown service is counted without its name: clients cannot grow the label set.
            #expect(metrics.contains(#"larder_feature_requests_total{feature_service="none",code="404"}"#))
            #expect(!metrics.contains(#"feature_service="ranking""#))
            #expect(metrics.contains(#"larder_online_store_entities{view="driver_hourly_stats",version="2"} 20"#))
            #expect(metrics.contains(#"larder_feature_values_total{status="expired"}"#))

            // A revoked token is refused by the agent alone, once a heartbeat (1 s here) has said access changed:
            // well before the 30 s poll. The bound leaves room for a loaded machine (the whole suite runs at once);
            // unloaded it takes 0.1–1.5 s.
            _ = try await admin.revokeToken(carol.resource.publicId, of: "carol")
            let revoked = Date()
            var status = 200
            while status == 200, Date().timeIntervalSince(revoked) < 20 {
                status = try await server.call(body: Self.ranking, token: carol.token).status
                if status == 200 { try await Task.sleep(for: .milliseconds(100)) }
            }
            let took = Date().timeIntervalSince(revoked)
            #expect(status == 401 && took < 10, "refused after \(took) s (status \(status)); the agent's log ends:\n\(agent.log.suffix(3_000))")

            // With the control plane down, the agent answers as before, even after a restart.
            let dana = try await admin.createToken(for: "victor", audience: .dataPlane)
            _ = try await admin.grant(.consumer, to: "victor", workspace: workspace)
            var ready = false
            let granted = Date()
            while !ready, Date().timeIntervalSince(granted) < 10 {
                ready = try await server.call(body: Self.ranking, token: dana.token).status == 200
                if !ready { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(ready)
            _ = await world.jobs.server.stop()
            let before = try await server.features(Self.ranking, token: dana.token)
            #expect(before.results.map(\.values) == renewed.results.map(\.values))
            #expect(await agent.stop() == 0)
            try? FileManager.default.removeItem(at: world.dataDirectory.appendingPathComponent("serving-address"))
            let restarted = try world.startAgent()
            let again = try await FeatureServerCaller.waitForAddress(dataDirectory: world.dataDirectory)
            let after = try await again.features(Self.ranking, token: dana.token)
            #expect(after.results.map(\.values) == renewed.results.map(\.values), "\(restarted.log.suffix(2_000))")
            #expect(try await again.call(.GET, "/readyz", token: nil).status == 200)
            #expect(await restarted.stop() == 0)
        }
    }

    @Test("pushes over HTTP: an operator's rows reach the online store and the offline store once per idempotency key, windows fold them in, a bad row is refused whole, and a restart keeps it all")
    func pushes() async throws {
        try await MaterializationProcessTests.withWorld(drivers: 2, hours: 1, trips: 10) { world in
            let admin = world.jobs.admin, workspace = JobsWorld.workspace
            try await RepositoryFixture.example(workspace: workspace).unscheduled().adding("pushes.yaml", RepositoryFixture.pushes)
                .apply(to: workspace, with: admin)
            _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "ingest", kind: .serviceAccount))
            _ = try await admin.grant(.operator, to: "ingest", workspace: workspace)
            _ = try await admin.grant(.consumer, to: "ingest", workspace: workspace)
            let ingest = try await admin.createToken(for: "ingest", audience: .dataPlane).token
            _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "model", kind: .serviceAccount))
            _ = try await admin.grant(.consumer, to: "model", workspace: workspace)
            let model = try await admin.createToken(for: "model", audience: .dataPlane).token

            let agent = try world.startAgent()
            let server = try await FeatureServerCaller.waitForAddress(dataDirectory: world.dataDirectory)
            let now = Date()
            let recent = RFC3339.format(now.addingTimeInterval(-5))
            let earlier = RFC3339.format(now.addingTimeInterval(-1_800))
            let body = #"{"rows":[{"driver_id":1001,"event_timestamp":"\#(earlier)","lat":38.7,"lon":-9.1,"speed":40},{"driver_id":1001,"event_timestamp":"\#(recent)","lat":41.1,"lon":-8.6,"speed":60},{"driver_id":1002,"event_timestamp":"\#(recent)","lat":40.2,"lon":-8.4,"speed":null}]}"#
            func push(_ body: String, token: String?, key: String? = nil) async throws -> (status: Int, body: Data) {
                var request = HTTPClientRequest(url: server.baseURL + "/v1/push/driver_pings")
                request.method = .POST
                if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
                if let key { request.headers.add(name: "Idempotency-Key", value: key) }
                request.body = .bytes(ByteBuffer(string: body))
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
                return (Int(response.status.code), Data(try await response.body.collect(upTo: 1 << 20).readableBytesView))
            }
            // The access snapshot with the new tokens arrives within seconds.
            var first = try await push(body, token: ingest, key: "batch-1")
            let deadline = Date().addingTimeInterval(20)
            while first.status == 401 || first.status == 503, Date() < deadline {
                try await Task.sleep(for: .milliseconds(200))
                first = try await push(body, token: ingest, key: "batch-1")
            }
            #expect(first.status == 200, "\(String(decoding: first.body, as: UTF8.self)) \(agent.log.suffix(2_000))")
            let receipt = try APICoding.makeDecoder().decode(PushReceipt.self, from: first.body)
            #expect(receipt.rows == 3 && !receipt.duplicate && receipt.views == ["driver_position", "driver_speed"])
            // A retry with the same key: nothing written twice.
            let retry = try APICoding.makeDecoder().decode(PushReceipt.self, from: try await push(body, token: ingest, key: "batch-1").body)
            #expect(retry.duplicate)
            #expect(try await push(body, token: model, key: "batch-2").status == 403)
            #expect(try await push(body, token: nil).status == 401)
            let rejected = try await push(#"{"rows":[{"driver_id":1003,"event_timestamp":"\#(recent)"},{"driver_id":1003,"event_timestamp":"\#(recent)","speed":"fast"}]}"#, token: ingest)
            #expect(rejected.status == 400)
            #expect(try APICoding.makeDecoder().decode(ProblemDetails.self, from: rejected.body).field == "rows[1].speed")
            #expect(try await push(#"{"rows":[{}]}"#, token: ingest).status == 400)
            var missing = HTTPClientRequest(url: server.baseURL + "/v1/push/trips")
            missing.method = .POST
            missing.headers.add(name: "Authorization", value: "Bearer \(ingest)")
            missing.body = .bytes(ByteBuffer(string: body))
            #expect(try await HTTPClient.shared.execute(missing, timeout: .seconds(30)).status.code == 404)

            // Online: the newest position per driver; the window counts what closed tiles hold.
            func read() async throws -> ServedFeatures {
                try await server.features(
                    #"{"features":["driver_position:lat","driver_speed:speed_count_1h","driver_speed:speed_mean_1h"],"entities":[{"driver_id":1001},{"driver_id":1002},{"driver_id":1003}]}"#,
                    token: model)
            }
            let served = try await read()
            #expect(served.cell(0, "driver_position:lat")?.value == .number(41.1))
            #expect(served.cell(1, "driver_position:lat")?.value == .number(40.2))
            #expect(served.results[2].statuses == ["not_found", "not_found", "not_found"])
            // The window at the last 10-minute boundary: the event 30 minutes ago is in it (the recent ones only once their tile closes).
            // (A boundary may pass while the test runs: either side's count is right.)
            let counts = [now, Date()].map { instant in
                let boundary = floor(instant.timeIntervalSince1970 / 600) * 600
                return JSONCell.number(Double([now.addingTimeInterval(-1_800), now.addingTimeInterval(-5)].filter { $0.timeIntervalSince1970 < boundary }.count))
            }
            #expect(counts.contains(served.cell(0, "driver_speed:speed_count_1h")?.value ?? .null))

            // Offline: each row once, although pushed twice.
            let offline = try await world.count("SELECT count(*)::int FROM larder_offline.rides__driver_position__v1")
            #expect(offline == 3)
            #expect(try await world.count("SELECT count(*)::int FROM larder_offline.rides__driver_pings__events") == 3)
            #expect(try await world.count("SELECT count(*)::int FROM larder_offline.larder_push_receipts WHERE key = 'batch-1'") == 1)

            // Without a key, the same rows are new rows: the offline store gets them again.
            #expect(try await push(body, token: ingest).status == 200)
            #expect(try await world.count("SELECT count(*)::int FROM larder_offline.rides__driver_position__v1") == 6)
            #expect(try await world.count("SELECT count(*)::int FROM larder_offline.rides__driver_pings__events") == 6)
            let before = try await read()

            // A restart replays the journal: the same values, and the key is still known.
            #expect(await agent.stop() == 0)
            try? FileManager.default.removeItem(at: world.dataDirectory.appendingPathComponent("serving-address"))
            let restarted = try world.startAgent()
            let again = try await FeatureServerCaller.waitForAddress(dataDirectory: world.dataDirectory)
            let reread = try await again.features(
                #"{"features":["driver_position:lat","driver_speed:speed_count_1h","driver_speed:speed_mean_1h"],"entities":[{"driver_id":1001},{"driver_id":1002},{"driver_id":1003}]}"#,
                token: model)
            #expect(reread.results.map(\.values) == before.results.map(\.values))
            var replay = HTTPClientRequest(url: again.baseURL + "/v1/push/driver_pings")
            replay.method = .POST
            replay.headers.add(name: "Authorization", value: "Bearer \(ingest)")
            replay.headers.add(name: "Idempotency-Key", value: "batch-1")
            replay.body = .bytes(ByteBuffer(string: body))
            let replayed = try await HTTPClient.shared.execute(replay, timeout: .seconds(30))
            let replayedReceipt = try APICoding.makeDecoder().decode(PushReceipt.self, from: Data(try await replayed.body.collect(upTo: 1 << 20).readableBytesView))
            #expect(replayedReceipt.duplicate)
            #expect(try await world.count("SELECT count(*)::int FROM larder_offline.rides__driver_position__v1") == 6)
            #expect(await restarted.stop() == 0)
        }
    }
}

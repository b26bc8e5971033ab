import AsyncHTTPClient
import DataPlane
import Foundation
import Logging
import NIOCore
import PostgresNIO
import Shared
import Testing
import TestSupport

/// Training datasets from a real `larder-agent` over HTTP, against a
/// brute-force SQL join over the offline tables the agent materialized.
@Suite("Training datasets from a real agent", .serialized)
struct DatasetProcessTests {
    static func build(_ server: FeatureServerCaller, query: String, csv: String, token: String?) async throws -> (status: Int, body: String, headers: [String: String]) {
        var request = HTTPClientRequest(url: server.baseURL + "/v1/datasets/build?" + query)
        request.method = .POST
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        request.headers.add(name: "Content-Type", value: "text/csv")
        request.body = .bytes(ByteBuffer(string: csv))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let bytes: ByteBuffer
        do { bytes = try await response.body.collect(upTo: 64 << 20) } catch {
            Issue.record("\(query): \(response.status) \(response.headers): \(error)")
            throw error
        }
        var headers: [String: String] = [:]
        for header in response.headers { headers[header.name.lowercased()] = header.value }
        return (Int(response.status.code), String(decoding: bytes.readableBytesView, as: UTF8.self), headers)
    }

    /// A principal holding `role` in the workspace, and its token.
    static func member(_ name: String, _ role: WorkspaceRole, in world: MaterializationWorld) async throws -> String {
        let admin = world.jobs.admin
        _ = try await admin.createPrincipal(CreatePrincipalRequest(name: name, kind: .user))
        _ = try await admin.grant(role, to: name, workspace: JobsWorld.workspace)
        return try await admin.createToken(for: name, audience: .both).token
    }

    /// Starts the world's agent and materializes the example's two batch views over their 48 hours.
    static func materializedAgent(_ world: MaterializationWorld) async throws -> AgentProcess {
        let agent = try world.startAgent()
        for view in ["driver_hourly_stats", "driver_trip_aggregates"] {
            let job = try await world.materialize(view, hours: 0..<48)
            #expect(job.job.state == .succeeded, "\(agent.log.suffix(2_000))")
        }
        return agent
    }

    @Test("a feature service's training set for random labelled events: every cell equals a SQL point-in-time lookup in the offline store, labels pass through, the same bytes twice; errors as problem+json")
    func buildsOverHTTP() async throws {
        try await MaterializationProcessTests.withWorld(drivers: 20, hours: 48, trips: 3_000) { world in
            let dora = try await Self.member("dora", .consumer, in: world)
            let agent = try await Self.materializedAgent(world)
            let server = try await FeatureServerCaller.waitForAddress(dataDirectory: world.dataDirectory)

            // Labelled events: known and unknown drivers, before, during and well after the data.
            var random = SeededGenerator(seed: 7)
            var events: [(driver: Int, time: Date, distance: Double, label: Int)] = []
            for _ in 0..<150 {
                let driver = Int.random(in: 0..<10, using: &random) == 0 ? 5_000 : 1_000 + Int.random(in: 0..<20, using: &random)
                let time = MaterializationWorld.day0.addingTimeInterval(Double(Int.random(in: -7_200...(52 * 3_600 + 3 * 86_400), using: &random)))
                events.append((driver, time, Double(Int.random(in: 1...200, using: &random)) / 10, Int.random(in: 0...1, using: &random)))
            }
            let csv = "driver_id,event_timestamp,trip_distance_km,label\n"
                + events.map { "\($0.driver),\(RFC3339.format($0.time)),\($0.distance),\($0.label)" }.joined(separator: "\n") + "\n"

            // The consumer's access snapshot reaches the agent within seconds.
            var answer: (status: Int, body: String, headers: [String: String])
            do { answer = try await Self.build(server, query: "feature_service=driver_ranking", csv: csv, token: dora) } catch {
                Issue.record("\(error): \(agent.log.suffix(3_000))")
                throw error
            }
            let deadline = Date().addingTimeInterval(20)
            while answer.status != 200, Date() < deadline {
                try await Task.sleep(for: .milliseconds(200))
                do { answer = try await Self.build(server, query: "feature_service=driver_ranking", csv: csv, token: dora) } catch {
                    Issue.record("\(error) after \(answer.status) \(answer.body): \(agent.log.suffix(3_000))")
                    throw error
                }
            }
            #expect(answer.status == 200, "\(answer.body)")
            #expect(answer.headers["content-type"] == "text/csv; charset=utf-8")
            #expect(answer.headers["larder-dataset-views"] == "driver_hourly_stats@1,driver_trip_aggregates@1")
            let lines = answer.body.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            #expect(lines.first == "driver_id,event_timestamp,trip_distance_km,label,driver_hourly_stats__conv_rate,driver_hourly_stats__acc_rate,driver_hourly_stats__avg_daily_trips,driver_trip_aggregates__trips_count_1d,driver_trip_aggregates__trips_count_7d,driver_trip_aggregates__fare_mean_7d,trip_quote__expected_fare,trip_quote__likely_to_convert")
            #expect(lines.count == events.count + 2 && lines.last == "")

            // The oracle: the newest offline row at or before each event (2-day TTL for the hourly stats).
            try await TestDatabase.withClient(world.customer) { client in
                let logger = Logger(label: "test")
                var present = 0
                for (index, event) in events.enumerated() where index + 1 < lines.count {
                    let cells = lines[index + 1].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                    #expect(cells.prefix(4) == ["\(event.driver)", RFC3339.format(event.time), "\(event.distance)", "\(event.label)"][...])
                    var stats: [String] = ["", "", ""]
                    for try await (conv, acc, trips, time) in try await client.query("""
                        SELECT conv_rate::float8, acc_rate::float8, avg_daily_trips::bigint, event_timestamp FROM larder_offline.rides__driver_hourly_stats__v1
                        WHERE driver_id = \(event.driver) AND event_timestamp <= \(event.time)
                        ORDER BY event_timestamp DESC, created_timestamp DESC NULLS LAST LIMIT 1
                        """, logger: logger).decode((Double?, Double?, Int64?, Date).self) where time >= event.time.addingTimeInterval(-2 * 86_400) {
                        stats = [conv.map { "\($0)" } ?? "", acc.map { "\($0)" } ?? "", trips.map { "\($0)" } ?? ""]
                        present += 1
                    }
                    #expect(Array(cells[4...6]) == stats, "row \(index + 1): \(lines[index + 1])")
                    var windows: [String] = ["", "", ""]
                    var fare: Double?
                    for try await (count1d, count7d, mean) in try await client.query("""
                        SELECT trips_count_1d::bigint, trips_count_7d::bigint, fare_mean_7d::float8 FROM larder_offline.rides__driver_trip_aggregates__v1
                        WHERE driver_id = \(event.driver) AND event_timestamp <= \(event.time) ORDER BY event_timestamp DESC LIMIT 1
                        """, logger: logger).decode((Int64?, Int64?, Double?).self) {
                        windows = [count1d.map { "\($0)" } ?? "", count7d.map { "\($0)" } ?? "", mean.map { "\($0)" } ?? ""]
                        fare = mean
                    }
                    #expect(Array(cells[7...9]) == windows, "row \(index + 1): \(lines[index + 1])")
                    #expect(cells[10] == (fare.map { "\(event.distance * $0)" } ?? ""), "row \(index + 1): expected_fare")
                    #expect(cells[11] == (Double(stats[0]).map { $0 > 0.5 ? "true" : "false" } ?? ""), "row \(index + 1): likely_to_convert")
                }
                #expect(present > 10, "some events fall within the stats' TTL")
            }

            // The same request, the same bytes.
            #expect(try await Self.build(server, query: "feature_service=driver_ranking", csv: csv, token: dora).body == answer.body)

            // Errors.
            func problem(_ query: String, _ csv: String, token: String? = dora) async throws -> (Int, ProblemDetails?) {
                let (status, body, headers) = try await Self.build(server, query: query, csv: csv, token: token)
                #expect(headers["content-type"] == "application/problem+json")
                return (status, try? APICoding.makeDecoder().decode(ProblemDetails.self, from: Data(body.utf8)))
            }
            #expect(try await problem("feature_service=driver_ranking", csv, token: nil).0 == 401)
            let naive = try await problem("features=driver_hourly_stats", "driver_id,event_timestamp\n1000,2025-01-01 10:00:00\n")
            #expect(naive.0 == 400 && naive.1?.field == "entities row 1, column event_timestamp")
            let unknown = try await problem("feature_service=ranking", csv)
            #expect(unknown.0 == 404 && unknown.1?.field == "feature_service")
            let noKey = try await problem("features=driver_hourly_stats", "driver,event_timestamp\n1000,2025-01-01T10:00:00Z\n")
            #expect(noKey.0 == 400 && noKey.1?.field == "entities: column driver_id")
            let assumed = try await Self.build(server, query: "features=driver_hourly_stats:conv_rate&assume_utc=true", csv: "driver_id,event_timestamp\n1000,2025-01-01 10:00:00\n", token: dora)
            #expect(assumed.status == 200 && assumed.body.hasPrefix("driver_id,event_timestamp,driver_hourly_stats__conv_rate\n1000,2025-01-01 10:00:00,"))
            // An entity table past the agent's datasets.max_upload_bytes (1 MiB here): 413, naming the setting.
            let big = "driver_id,event_timestamp\n" + String(repeating: "1000,2025-01-01T10:00:00Z\n", count: 60_000)
            let tooBig = try await problem("features=driver_hourly_stats", big)
            #expect(tooBig.0 == 413 && tooBig.1?.field == "entities" && tooBig.1?.detail.contains("max_upload_bytes") == true, "\(String(describing: tooBig.1))")
            // Whatever the answer was, no upload stays spooled.
            let uploads = world.dataDirectory.appendingPathComponent("datasets").path
            let left = ((try? FileManager.default.contentsOfDirectory(atPath: uploads)) ?? []).filter { $0.hasPrefix("entities-") }
            #expect(left.isEmpty, "\(left)")
            #expect(await agent.stop() == 0)
        }
    }

    @Test("dataset jobs through the control plane: larder datasets create from a CSV file and from a query, to a CSV file (the same bytes as the agent's API gives) and to a new table (the same values), ls and describe with metadata only, and clear refusals")
    func jobsThroughTheControlPlane() async throws {
        try await MaterializationProcessTests.withWorld(drivers: 20, hours: 48, trips: 3_000) { world in
            let workspace = JobsWorld.workspace
            let dora = try await Self.member("dora", .consumer, in: world)
            let vic = try await Self.member("vic", .viewer, in: world)
            let ed = try await Self.member("ed", .editor, in: world)
            let agent = try await Self.materializedAgent(world)
            // The labelled events: a CSV file in the agent's folder, and the same rows in the customer's database.
            var random = SeededGenerator(seed: 11)
            var events: [(driver: Int, time: Date, distance: Double, label: Int)] = []
            for _ in 0..<120 {
                let driver = Int.random(in: 0..<10, using: &random) == 0 ? 5_000 : 1_000 + Int.random(in: 0..<20, using: &random)
                let time = MaterializationWorld.day0.addingTimeInterval(Double(Int.random(in: -7_200...(52 * 3_600), using: &random)))
                events.append((driver, time, Double(Int.random(in: 1...200, using: &random)) / 10, Int.random(in: 0...1, using: &random)))
            }
            let csv = "driver_id,event_timestamp,trip_distance_km,label\n"
                + events.map { "\($0.driver),\(RFC3339.format($0.time)),\($0.distance),\($0.label)" }.joined(separator: "\n") + "\n"
            try csv.write(to: world.files.appendingPathComponent("labels.csv"), atomically: true, encoding: .utf8)
            try await TestDatabase.withClient(world.customer) { client in
                let logger = Logger(label: "test")
                try await client.execute(
                    "CREATE TABLE public.labels (seq int, driver_id bigint, event_timestamp timestamptz, trip_distance_km float8, label int)",
                    logger: logger)
                for (index, event) in events.enumerated() {
                    try await client.execute(
                        "INSERT INTO public.labels VALUES (\(index), \(event.driver), \(event.time), \(event.distance), \(event.label))", logger: logger)
                }
            }
            let environment = ["LARDER_URL": world.jobs.server.baseURL, "LARDER_TOKEN": dora, "LARDER_WORKSPACE": workspace]
            func larder(_ arguments: [String], token: String? = nil) async throws -> LarderBinary.Result {
                var merged = environment
                if let token { merged["LARDER_TOKEN"] = token }
                return try await LarderBinary.run(arguments, in: world.jobs.folder, environment: merged)
            }
            func larder(_ arguments: String..., token: String? = nil) async throws -> LarderBinary.Result { try await larder(arguments, token: token) }

            // From the CSV file to a CSV file: the bytes the agent's API gives for the same table.
            let built = try await larder(
                "datasets", "create", "--service", "driver_ranking", "--entities", "local_files:labels.csv", "--out", "local_files:out/training.csv",
                "--wait")
            #expect(built.status == 0, "\(built.standardOutput)\(built.standardError)\(agent.log.suffix(2_000))")
            #expect(built.standardOutput.contains("rows:       120"), "\(built.standardOutput)")
            #expect(built.standardOutput.contains("driver_hourly_stats v1, driver_trip_aggregates v1"))
            let file = try String(contentsOf: world.files.appendingPathComponent("datasets/out/training.csv"), encoding: .utf8)
            let server = try await FeatureServerCaller.waitForAddress(dataDirectory: world.dataDirectory)
            var direct = try await Self.build(server, query: "feature_service=driver_ranking", csv: csv, token: dora)
            let deadline = Date().addingTimeInterval(20)
            while direct.status != 200, Date() < deadline {
                try await Task.sleep(for: .milliseconds(200))
                direct = try await Self.build(server, query: "feature_service=driver_ranking", csv: csv, token: dora)
            }
            #expect(direct.status == 200 && file == direct.body)

            // From free SQL (an operator's) to a new table: the same feature values, row for row.
            let freeSQL = ["--entities-query", "warehouse:SELECT seq, driver_id, event_timestamp, trip_distance_km, label FROM public.labels ORDER BY seq"]
            let refused = try await larder(["datasets", "create", "--service", "driver_ranking"] + freeSQL + ["--out-table", "rides_db:training"])
            #expect(refused.status != 0 && refused.standardError.contains("operator"), "a consumer's free SQL: \(refused.standardError)")
            let table = try await larder(["datasets", "create", "--service", "driver_ranking"] + freeSQL + ["--out-table", "rides_db:ml.training", "--wait"], token: ed)
            #expect(table.status == 0, "\(table.standardOutput)\(table.standardError)")
            let lines = file.split(separator: "\n").dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
            try await TestDatabase.withClient(world.customer) { client in
                var row = 0
                for try await (seq, conv, count7d, fare, likely) in try await client.query(
                    """
                    SELECT seq::int, driver_hourly_stats__conv_rate, driver_trip_aggregates__trips_count_7d, trip_quote__expected_fare,
                           trip_quote__likely_to_convert
                    FROM ml.training ORDER BY seq::int
                    """, logger: Logger(label: "test")).decode((Int, Double?, Int64?, Double?, Bool?).self) {
                    #expect(seq == row)
                    let cells = lines[row]
                    #expect(conv.map { "\($0)" } ?? "" == cells[4], "row \(row)")
                    #expect(count7d.map { "\($0)" } ?? "" == cells[8], "row \(row)")
                    #expect(fare.map { "\($0)" } ?? "" == cells[10], "row \(row)")
                    #expect(likely.map { "\($0)" } ?? "" == cells[11], "row \(row)")
                    row += 1
                }
                #expect(row == 120)
            }

            // The control plane holds the metadata: ls and describe.
            let listed = try await larder("datasets", "ls")
            #expect(listed.status == 0 && listed.standardOutput.contains("rides_db:ml.training") && listed.standardOutput.contains("local_files:out/training.csv"))
            let id = try #require(built.standardOutput.split(separator: "\n").first?.split(separator: " ").dropFirst().first?.dropLast())
            let described = try await larder("datasets", "describe", String(id), "--json")
            let job = try APICoding.makeDecoder().decode(JobResource.self, from: Data(described.standardOutput.utf8))
            let metadata = try #require(job.metrics?.dataset)
            #expect(metadata.rows == 120 && metadata.columns.count == 12 && metadata.columns[0] == .init(name: "driver_id", type: "input"))
            #expect(metadata.columns[4] == .init(name: "driver_hourly_stats__conv_rate", type: "float64"))
            #expect(metadata.sha256.count == 64 && metadata.earliest == events.map(\.time).min())

            // Refusals: an existing table, a viewer, an unknown service, a missing file.
            let again = try await larder(
                "datasets", "create", "--service", "driver_ranking", "--entities", "local_files:labels.csv", "--out-table", "rides_db:training", "--wait")
            #expect(again.status != 0 && again.standardOutput.contains("exists already"), "\(again.standardOutput)")
            let viewer = try await larder("datasets", "create", "--service", "driver_ranking", "--entities", "local_files:labels.csv", "--out", "local_files:x.csv", token: vic)
            #expect(viewer.status != 0 && viewer.standardError.contains("consumer"), "\(viewer.standardError)")
            let unknown = try await larder("datasets", "create", "--service", "ranking", "--entities", "local_files:labels.csv", "--out", "local_files:x.csv")
            #expect(unknown.status != 0 && unknown.standardError.contains("no feature service named 'ranking'"), "\(unknown.standardError)")
            let missing = try await larder("datasets", "create", "--service", "driver_ranking", "--entities", "local_files:nope.csv", "--out", "local_files:x.csv", "--wait")
            #expect(missing.status != 0 && missing.standardOutput.contains("nope.csv"), "\(missing.standardOutput)")
            #expect(!FileManager.default.fileExists(atPath: world.files.appendingPathComponent("datasets/x.csv").path))
            // A bad value fails the job naming its row and column; the value itself stays on the agent.
            try "driver_id,event_timestamp,trip_distance_km\n1001,2025-01-01T10:00:00Z,1\n1002,2025-01-01 10:00:07,2\n"
                .write(to: world.files.appendingPathComponent("naive.csv"), atomically: true, encoding: .utf8)
            let naive = try await larder("datasets", "create", "--service", "driver_ranking", "--entities", "local_files:naive.csv", "--out", "local_files:x.csv", "--wait")
            #expect(naive.status != 0 && naive.standardOutput.contains("entities row 2, column event_timestamp"), "\(naive.standardOutput)")
            #expect(!naive.standardOutput.contains("10:00:07"))
            let badQuery = try await larder(
                "datasets", "create", "--service", "driver_ranking", "--entities-query", "warehouse:SELECT 'secret-42'::int AS driver_id",
                "--out", "local_files:x.csv", "--wait", token: ed)
            #expect(badQuery.status != 0 && badQuery.standardOutput.contains("SQLSTATE 22P02"), "\(badQuery.standardOutput)")
            // (The query itself is the request's, shown as asked; the server's message quoting the value is not.)
            #expect(badQuery.standardOutput.split(separator: "\n").filter { $0.hasPrefix("error:") }.allSatisfy { !$0.contains("secret-42") })
            #expect(agent.log.contains("secret-42"), "the agent's own log has the whole message")
            #expect(await agent.stop() == 0)
        }
    }

    @Test("window features in a dataset equal what the online store served when materialization stood at those times: replayed at 24 h and 48 h")
    func windowsMatchOnlineReplay() async throws {
        try await MaterializationProcessTests.withWorld(drivers: 20, hours: 48, trips: 3_000) { world in
            let dora = try await Self.member("dora", .consumer, in: world)
            let agent = try world.startAgent()
            let server = try await FeatureServerCaller.waitForAddress(dataDirectory: world.dataDirectory)
            let features = ["trips_count_1h", "trips_count_1d", "trips_count_7d", "fare_mean_1d", "fare_mean_7d", "distance_km_sum_7d"]
            let drivers = Array(1_000..<1_020)
            var served: [Int: [JSONCell]] = [:]
            for hours in [24, 48] {
                // Materialization up to `hours`: the online store now holds each driver's values as of then.
                let job = try await world.materialize("driver_trip_aggregates", hours: (hours - 24)..<hours)
                #expect(job.job.state == .succeeded, "\(agent.log.suffix(2_000))")
                let request = #"{"features":["driver_trip_aggregates"],"entities":[\#(drivers.map { #"{"driver_id":\#($0)}"# }.joined(separator: ","))]}"#
                var answer: ServedFeatures?
                let deadline = Date().addingTimeInterval(20)
                while answer == nil, Date() < deadline {
                    answer = try? await server.features(request, token: dora)
                    if answer == nil { try await Task.sleep(for: .milliseconds(200)) }
                }
                let online = try #require(answer)
                for (row, driver) in drivers.enumerated() {
                    served[driver] = features.map { online.cell(row, "driver_trip_aggregates:\($0)")?.value ?? .null }
                }
                // The dataset at that instant (and a second before it) gives the same values.
                let instant = MaterializationWorld.day0.addingTimeInterval(Double(hours) * 3_600)
                let csv = "driver_id,event_timestamp\n" + drivers.map { "\($0),\(RFC3339.format(instant))" }.joined(separator: "\n") + "\n"
                let built = try await Self.build(server, query: "features=driver_trip_aggregates", csv: csv, token: dora)
                #expect(built.status == 200, "\(built.body)")
                let lines = built.body.split(separator: "\n").dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
                #expect(lines.count == drivers.count)
                for (row, driver) in drivers.enumerated() where row < lines.count {
                    let cells = lines[row].dropFirst(2).map { text -> JSONCell in text.isEmpty ? .null : .number(Double(text)!) }
                    #expect(cells == served[driver], "driver \(driver) at \(hours) h: dataset \(cells), online \(served[driver] ?? [])")
                }
            }
            #expect(await agent.stop() == 0)
        }
    }
}

import DataPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

/// A control plane, a customer database and CSV folder with generated data,
/// and a real `larder-agent` configured to read them and keep its stores there.
struct MaterializationWorld {
    var jobs: JobsWorld
    let customer: PostgresURL
    let files: URL
    let drivers: Int
    let hours: Int
    static let day0 = RFC3339.parse("2025-01-01T00:00:00Z")!

    /// Writes `drivers × hours` hourly rows of driver_hourly_stats.csv and
    /// `trips` rows of public.trips, then the agent's configuration.
    static func make(
        registry: PostgresURL, customer: PostgresURL, drivers: Int, hours: Int, trips: Int, environment: [String: String] = [:], redis: Int? = nil
    ) async throws -> MaterializationWorld {
        let jobs = try await JobsWorld.make(database: registry, agents: 1, environment: environment, redis: redis.map { "127.0.0.1:\($0)" })
        let files = jobs.folder.appendingPathComponent("files")
        try FileManager.default.createDirectory(at: files, withIntermediateDirectories: true)
        var csv = "driver_id,event_timestamp,created,conv_rate,acc_rate,avg_daily_trips\n"
        for hour in 0..<hours {
            for driver in 0..<drivers {
                let time = RFC3339.format(day0.addingTimeInterval(Double(hour) * 3_600))
                let (conv, acc, trips) = values(driver: driver, hour: hour)
                csv += "\(1_000 + driver),\(time),\(time),\(conv.map { String($0) } ?? ""),\(acc),\(trips)\n"
            }
        }
        try csv.write(to: files.appendingPathComponent("driver_hourly_stats.csv"), atomically: true, encoding: .utf8)
        try await TestDatabase.withClient(customer) { client in
            let logger = Logger(label: "test")
            try await client.execute(
                """
                CREATE TABLE public.trips (trip_id bigint, driver_id bigint, customer_id text, fare numeric(10,2),
                    distance_km real, rating integer, completed_at timestamptz)
                """, logger: logger)
            // Pseudo-random times over the hours, inserted out of order.
            try await client.execute(
                """
                INSERT INTO public.trips
                SELECT g, 1000 + (g * 7) % \(drivers), 'c' || (g % 37), (g % 50) + 0.25, (g % 13) + 0.5,
                       CASE WHEN g % 11 = 0 THEN NULL ELSE g % 5 + 1 END,
                       timestamptz '2025-01-01 00:00:00+00' + ((g::bigint * 7919) % \(hours * 3_600)) * interval '1 second'
                FROM generate_series(1, \(trips)) g
                """, logger: logger)
        }
        // A read-only user of the customer's database: the `warehouse` connection entity queries run on.
        try await TestDatabase.withClient(customer) { client in
            let logger = Logger(label: "test")
            let role = "\"" + readerRole(customer) + "\""
            try await client.execute(PostgresQuery(unsafeSQL: """
                DO $$ BEGIN
                  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '\(readerRole(customer))') THEN CREATE ROLE \(role) LOGIN; END IF;
                END $$
                """), logger: logger)
            try await client.execute(PostgresQuery(unsafeSQL: "GRANT USAGE ON SCHEMA public TO \(role)"), logger: logger)
            try await client.execute(PostgresQuery(unsafeSQL: "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \(role)"), logger: logger)
            try await client.execute(PostgresQuery(unsafeSQL: "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO \(role)"), logger: logger)
        }
        return MaterializationWorld(jobs: jobs, customer: customer, files: files, drivers: drivers, hours: hours)
    }

    /// The read-only role of a customer database (roles are the server's, so named after the database).
    static func readerRole(_ customer: PostgresURL) -> String { "reader_" + customer.database.lowercased().filter { $0.isLetter || $0.isNumber || $0 == "_" } }

    /// The customer database as its read-only user.
    var reader: PostgresURL {
        var url = customer
        url.username = Self.readerRole(customer)
        url.password = nil
        return url
    }

    /// The generated values of one driver and hour (conv_rate is sometimes null).
    static func values(driver: Int, hour: Int) -> (conv: Double?, acc: Double, trips: Int) {
        let conv: Double? = (driver + hour) % 17 == 0 ? nil : Double((driver * 31 + hour) % 100) / 100
        return (conv, Double((driver * 7 + hour * 3) % 100) / 100, (driver + hour) % 40)
    }

    /// Writes the agent's configuration and starts `larder-agent` (`name`: one of the world's agents, agent-1 by default).
    func startAgent(timeout: String = "10m", name: String = "agent-1") throws -> AgentProcess {
        let url = jobs.folder.appendingPathComponent("\(name).yaml")
        try """
            control_plane: \(jobs.server.baseURL)
            public_key: \(jobs.publicKey)
            data_directory: \(jobs.folder.appendingPathComponent(name).path)
            concurrency: 2
            source_statement_timeout: \(timeout)
            connections:
              local_files:
                directory: \(files.path)
                datasets: datasets
              rides_db:
                postgres: \(customer.urlString)
                datasets: ml
              warehouse:
                postgres: \(reader.urlString)
            offline_store:
              connection: rides_db
              schema: larder_offline
            serving:
              listen: 127.0.0.1:0
              max_batch_entities: 100
            datasets:
              max_upload_bytes: 1048576
            \(jobs.onlineStore ?? "")
            """.write(to: url, atomically: true, encoding: .utf8)
        return try AgentProcess(name: name, config: url, token: jobs.agentTokens[name]!, jobMilliseconds: 0, binary: "larder-agent")
    }

    /// Registers another agent of the workspace's environment, with a token.
    mutating func addAgent(_ name: String) async throws {
        _ = try await jobs.admin.createTestAgent(
            name: name, environment: "prod", workspace: JobsWorld.workspace, onlineStore: jobs.onlineStore == nil ? .embedded : .redis)
        jobs.agentTokens[name] = try await jobs.admin.createToken(for: name).token
    }

    var dataDirectory: URL { jobs.folder.appendingPathComponent("agent-1") }

    /// Materializes `view` over hours `[from, to)` in daily (or `chunk`) pieces and waits for the backfill.
    func materialize(_ view: String, hours range: Range<Int>, chunk: String = "1d", timeout: TimeInterval = 120) async throws -> JobDetailResource {
        let started = try await jobs.admin.materialize(
            MaterializeRequest(
                featureView: view, start: Self.day0.addingTimeInterval(Double(range.lowerBound) * 3_600),
                end: Self.day0.addingTimeInterval(Double(range.upperBound) * 3_600), chunk: chunk),
            workspace: JobsWorld.workspace)
        return try await jobs.waitUntilFinished(started.backfill.id, timeout: timeout)
    }

    /// Rows, and a digest of every row, of an offline table.
    func offline(_ table: String) async throws -> (count: Int, digest: String) {
        try await TestDatabase.withClient(customer) { client in
            let rows = try await client.query(
                PostgresQuery(unsafeSQL: "SELECT count(*)::int, coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM larder_offline.\"\(table)\" t"),
                logger: Logger(label: "test"))
            for try await (count, digest) in rows.decode((Int, String).self) { return (count, digest) }
            return (0, "")
        }
    }

    /// Runs a query on the customer database that returns one integer.
    func count(_ sql: String) async throws -> Int {
        try await TestDatabase.withClient(customer) { client in
            let rows = try await client.query(PostgresQuery(unsafeSQL: sql), logger: Logger(label: "test"))
            for try await count in rows.decode(Int.self) { return count }
            return -1
        }
    }
}

@Suite("Materialization by a real agent: sources, offline and online stores", .serialized)
struct MaterializationProcessTests {
    /// With `redis` (a server's port) the environment's online store is that Redis.
    static func withWorld(
        drivers: Int, hours: Int, trips: Int, environment: [String: String] = [:], redis: Int? = nil, _ body: (MaterializationWorld) async throws -> Void
    ) async throws {
        try await TestDatabase.withIsolatedDatabase { registry in
            try await TestDatabase.withIsolatedDatabase { customer in
                let world = try await MaterializationWorld.make(
                    registry: registry, customer: customer, drivers: drivers, hours: hours, trips: trips, environment: environment, redis: redis)
                try await withCleanup({ _ = await world.jobs.server.stop() }) {   // before the databases are dropped
                    try await body(world)
                }
            }
        }
    }

    @Test("CSV and PostgreSQL sources: exact offline rows, reruns replace rather than duplicate, online keeps each entity's newest row")
    func materializes() async throws {
        try await Self.withWorld(drivers: 40, hours: 72, trips: 5_000) { world in
            let agent = try world.startAgent()
            // Days 1–2 first, then day 0: the older backfill must not move online values back.
            let later = try await world.materialize("driver_hourly_stats", hours: 24..<72)
            #expect(later.job.state == .succeeded, "\(later.job) \(agent.log.suffix(3_000))")
            let earlier = try await world.materialize("driver_hourly_stats", hours: 0..<24)
            #expect(earlier.job.state == .succeeded)
            let first = try await world.offline("rides__driver_hourly_stats__v1")
            #expect(first.count == 40 * 72)
            // Declared metrics of one day's chunk: rows and per-feature statistics, no values.
            let chunk = try #require(try await world.jobs.chunks(of: earlier.job.id).first)
            let metrics = try #require(chunk.metrics)
            #expect(metrics.rowsRead == 40 * 24 && metrics.rowsWritten == 40 * 24)
            let nulls = (0..<40).flatMap { driver in (0..<24).filter { (driver + $0) % 17 == 0 } }.count
            #expect(metrics.features.map(\.feature) == ["conv_rate", "acc_rate", "avg_daily_trips"])
            #expect(metrics.features.first?.nullCount == Int64(nulls))
            #expect(metrics.features.last?.max == 39)

            // A rerun replaces the interval: the same rows, once.
            let rerun = try await world.materialize("driver_hourly_stats", hours: 0..<72, chunk: "12h")
            #expect(rerun.job.state == .succeeded)
            #expect(try await world.offline("rides__driver_hourly_stats__v1") == first)

            // Window aggregations from PostgreSQL, checked against a brute-force count in SQL at every stored boundary
            // and at probe times between them (the value at t is the last row at or before t).
            let windows = try await world.materialize("driver_trip_aggregates", hours: 0..<72)
            #expect(windows.job.state == .succeeded, "\(agent.log.suffix(3_000))")
            #expect(try await world.count("SELECT count(*)::int FROM larder_offline.rides__driver_trip_aggregates__v1") > 0)
            let wrong = try await world.count(
                """
                SELECT count(*)::int FROM (
                    SELECT d.driver_id, p.t FROM generate_series(1000, 1039) d(driver_id),
                        generate_series(timestamptz '2025-01-01 00:00:01+00', timestamptz '2025-01-03 23:59:59+00', interval '97 minutes') p(t)) probe
                LEFT JOIN LATERAL (SELECT * FROM larder_offline.rides__driver_trip_aggregates__v1 o
                    WHERE o.driver_id = probe.driver_id AND o.event_timestamp <= probe.t ORDER BY o.event_timestamp DESC LIMIT 1) o ON true
                CROSS JOIN LATERAL (SELECT date_trunc('hour', probe.t) AS b) boundary
                CROSS JOIN LATERAL (SELECT
                    count(*) FILTER (WHERE completed_at >= b - interval '1 hour') AS c1h,
                    count(*) FILTER (WHERE completed_at >= b - interval '1 day') AS c1d,
                    count(*) AS c7d,
                    avg(fare) FILTER (WHERE completed_at >= b - interval '1 day') AS fare1d,
                    sum(distance_km) AS distance7d
                    FROM public.trips t WHERE t.driver_id = probe.driver_id AND completed_at >= b - interval '7 days' AND completed_at < b) truth
                WHERE coalesce(o.trips_count_1h, 0) <> truth.c1h OR coalesce(o.trips_count_1d, 0) <> truth.c1d
                   OR coalesce(o.trips_count_7d, 0) <> truth.c7d
                   OR abs(coalesce(o.fare_mean_1d, -1) - coalesce(truth.fare1d, -1)) > 1e-9
                   OR abs(coalesce(o.distance_km_sum_7d, -1) - coalesce(truth.distance7d, -1)) > 1e-3
                """)
            #expect(wrong == 0)

            // A SQL transformation run in the customer's database.
            let transformed = try await world.materialize("customer_trip_stats", hours: 0..<72)
            #expect(transformed.job.state == .succeeded, "\(agent.log.suffix(3_000))")
            #expect(try await world.count("SELECT count(*)::int FROM larder_offline.rides__customer_trip_stats__v1") == 5_000)
            #expect(try await world.count(
                "SELECT count(*)::int FROM larder_offline.rides__customer_trip_stats__v1 o JOIN public.trips t ON t.customer_id = o.customer_id AND t.completed_at = o.event_timestamp AND o.rating IS NOT DISTINCT FROM t.rating") >= 5_000)
            // `larder-agent online` reads the running agent's store without disturbing it.
            let config = world.jobs.folder.appendingPathComponent("agent-1.yaml").path
            let tables = try await LarderBinary.run(["online", "--config", config], binary: "larder-agent")
            #expect(tables.status == 0)
            #expect(tables.standardOutput.contains("driver_hourly_stats     v1       40        2d"), "\(tables.standardOutput)")
            let (conv, acc, trips) = MaterializationWorld.values(driver: 3, hour: 71)
            let lookup = try await LarderBinary.run(
                ["online", "--config", config, "--view", "driver_hourly_stats", "--key", "1003", "--key", "999"], binary: "larder-agent")
            let lines = lookup.standardOutput.split(separator: "\n").map { $0.split(separator: " ").joined(separator: " ") }
            #expect(lines.contains("1003 expired 2025-01-03T23:00:00Z \(conv.map { "\($0)" } ?? "null") \(acc) \(trips)"), "\(lookup.standardOutput)")
            #expect(lines.contains("999 not_found - - - -"), "\(lookup.standardOutput)")
            let refused = try await LarderBinary.run(["online", "--config", config, "--view", "driver_hourly_stats", "--key", "x"], binary: "larder-agent")
            #expect(refused.status != 0 && refused.standardError.contains("'x': driver_id is an integer"))
            #expect(await agent.stop() == 0)

            // With the control plane down, a restarted agent opens its stores and verified definitions from disk,
            // and keeps running (retrying the control plane) rather than giving up.
            _ = await world.jobs.server.stop()
            let restarted = try world.startAgent()
            let opened = Date().addingTimeInterval(20)
            while !restarted.log.contains("opened the online store"), Date() < opened { try await Task.sleep(for: .milliseconds(50)) }
            // Definitions, tables and both signed snapshots come back from disk, with no control plane to ask.
            let opening = restarted.log.split(separator: "\n").first { $0.contains("opened the online store") }.map(String.init) ?? ""
            #expect(opening.contains("cached_definitions=3") && opening.contains("tables=3"), "\(restarted.log)")
            #expect(!opening.contains("access_version=none") && !opening.contains("registry_revision=none"), "\(opening)")
            try await Task.sleep(for: .seconds(2))
            #expect(restarted.process.isRunning)
            let offline = try await LarderBinary.run(["online", "--config", config, "--view", "driver_hourly_stats", "--key", "1003"], binary: "larder-agent")
            #expect(offline.standardOutput.contains("1003") && offline.standardOutput.contains("2025-01-03T23:00:00Z"))
            #expect(await restarted.stop() == 0)

            // The online store, reopened from the agent's disk: each driver's newest hour.
            let store = try OnlineStore(directory: world.dataDirectory.appendingPathComponent("online").path)
            let table = try #require(store.table(view: "driver_hourly_stats", version: 1))
            let lastHour = MaterializationWorld.day0.addingTimeInterval(71 * 3_600)
            let now = Int64(lastHour.timeIntervalSince1970 * 1_000_000)
            for driver in 0..<40 {
                let (conv, acc, trips) = MaterializationWorld.values(driver: driver, hour: 71)
                #expect(table.lookup(.int(Int64(1_000 + driver)), now: now) == .present(OnlineRecord(
                    eventTime: now, createdTime: now, values: [conv.map(FeatureValue.double) ?? .null, .double(acc), .int(Int64(trips))])))
            }
            // TTL (2 days): past it the value reads as expired.
            if case .expired = table.lookup(.int(1_000), now: now + 2 * 86_400 * 1_000_000 + 1) {} else { Issue.record("not expired after the TTL") }
            #expect(store.table(view: "driver_trip_aggregates", version: 1)?.count == 40)
            // The signed definitions the agent ran, cached and verifiable offline.
            let cache = try DefinitionCache(
                directory: world.dataDirectory.appendingPathComponent("definitions").path, publicKey: SigningPublicKey(parsing: world.jobs.publicKey))
            #expect(try cache.load(view: "driver_hourly_stats")?.version == 1)
        }
    }

    @Test("an agent killed with SIGKILL in the middle of writing: the retried job leaves one copy of each row and a consistent online store")
    func killedMidWrite() async throws {
        try await Self.withWorld(drivers: 3_000, hours: 48, trips: 10, environment: ["LARDER_LEASE_SECONDS": "5"]) { world in
            let first = try world.startAgent()
            // One job of 144,000 rows (4-day chunks are cut at multiples of 4 days since 1970: these 2 days fit in one).
            let started = try await world.jobs.admin.materialize(
                MaterializeRequest(
                    featureView: "driver_hourly_stats", start: MaterializationWorld.day0,
                    end: MaterializationWorld.day0.addingTimeInterval(48 * 3_600), chunk: "4d"),
                workspace: JobsWorld.workspace)
            #expect(started.chunksQueued == 1)
            // Kill the agent once it has written its first batch to the online store (of 9).
            let log = world.dataDirectory.appendingPathComponent("online/driver_hourly_stats@v1.log").path
            Self.signal(first, SIGKILL, once: log, reaches: 200_000).start()
            while first.process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
            _ = await first.stop()
            let chunks = try await world.jobs.chunks(of: started.backfill.id)
            #expect(chunks.allSatisfy { $0.state != .succeeded }, "the job finished before the kill")
            let second = try world.startAgent()
            let detail = try await world.jobs.waitUntilFinished(started.backfill.id, timeout: 120)
            #expect(detail.job.state == .succeeded, "\(second.log.suffix(3_000))")
            // The killed attempt's lease expired and a later attempt succeeded (on a loaded machine a slow
            // attempt may lose its 5-second lease too; no attempt may fail).
            let chunk = try #require(try await world.jobs.chunks(of: started.backfill.id).first)
            let attempts = try await world.jobs.admin.job(chunk.id, workspace: JobsWorld.workspace).attempts
            #expect(attempts.count >= 2 && attempts.first?.outcome == "lease-expired" && attempts.last?.outcome == "succeeded",
                    "\(attempts.map { "\($0.outcome) \(String(describing: $0.failure))" })")
            #expect(attempts.allSatisfy { $0.outcome == "lease-expired" || $0.outcome == "succeeded" })
            let stored = try await world.offline("rides__driver_hourly_stats__v1").count
            #expect(stored == 3_000 * 48, "\(second.log.suffix(2_000))")
            #expect(try await world.count(
                "SELECT count(*)::int FROM (SELECT 1 FROM larder_offline.rides__driver_hourly_stats__v1 GROUP BY driver_id, event_timestamp HAVING count(*) > 1) d") == 0)
            #expect(await second.stop() == 0)
            try Self.expectNewestHour(in: world.dataDirectory)
        }
    }

    /// A thread that sends `signal` to `agent` once `file` holds `bytes` (or after a minute). A thread of
    /// its own, not a task: a test task can wake late on a busy machine, after the job has finished.
    static func signal(_ agent: AgentProcess, _ signal: Int32, once file: String, reaches bytes: Int) -> Thread {
        let pid = agent.process.processIdentifier
        return Thread {
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline, ((try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0) < bytes {
                usleep(200)
            }
            kill(pid, signal)
        }
    }

    /// Sends `signal` to `agent` once `condition` holds (checked from a thread of its own, for up to a minute).
    static func signal(_ agent: AgentProcess, _ signal: Int32, when condition: @escaping @Sendable () -> Bool) -> Thread {
        let pid = agent.process.processIdentifier
        return Thread {
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline, !condition() { usleep(500) }
            kill(pid, signal)
        }
    }

    /// The Redis at `port` holds each of `drivers` drivers' row of `hour` of driver_hourly_stats, as version 1 (served).
    static func expectNewestHour(inRedis port: Int, drivers: Int = 3_000, hour: Int = 47) async throws {
        let store = try RedisOnlineStore(settings: RedisSettings(endpoints: [RedisEndpoint(host: "127.0.0.1", port: port)]), logger: Logger(label: "test"))
        defer { Task { await store.close() } }
        let schema = try #require(try await store.servingSchema(view: "driver_hourly_stats", upTo: 1))
        #expect(schema.version == 1)
        let lastHour = Int64(MaterializationWorld.day0.addingTimeInterval(Double(hour) * 3_600).timeIntervalSince1970 * 1_000_000)
        for driver in stride(from: 0, to: drivers, by: 97) {
            let (conv, acc, trips) = MaterializationWorld.values(driver: driver, hour: hour)
            #expect(try await store.lookup(.int(Int64(1_000 + driver)), schema: schema, now: lastHour) == .present(OnlineRecord(
                eventTime: lastHour, createdTime: lastHour, values: [conv.map(FeatureValue.double) ?? .null, .double(acc), .int(Int64(trips))])))
        }
    }

    /// The online store under `dataDirectory` holds each of the 3,000 drivers' hour-47 row of driver_hourly_stats.
    static func expectNewestHour(in dataDirectory: URL) throws {
        let table = try #require(try OnlineStore(directory: dataDirectory.appendingPathComponent("online").path)
            .table(view: "driver_hourly_stats", version: 1))
        #expect(table.count == 3_000)
        let lastHour = Int64(MaterializationWorld.day0.addingTimeInterval(47 * 3_600).timeIntervalSince1970 * 1_000_000)
        for driver in stride(from: 0, to: 3_000, by: 97) {
            let (conv, acc, trips) = MaterializationWorld.values(driver: driver, hour: 47)
            #expect(table.lookup(.int(Int64(1_000 + driver)), now: lastHour) == .present(OnlineRecord(
                eventTime: lastHour, createdTime: lastHour, values: [conv.map(FeatureValue.double) ?? .null, .double(acc), .int(Int64(trips))])))
        }
    }

    @Test("fencing: two agents sharing Redis, one stopped with SIGSTOP mid-write past its lease, the job retried and finished by the other, the first resumed — one copy of each row, the newest values online, the stale attempt refused")
    func pausedAgentIsFenced() async throws {
        try await TestRedis.withServer { redis in
        try await Self.withWorld(drivers: 3_000, hours: 48, trips: 10, environment: ["LARDER_LEASE_SECONDS": "5"], redis: redis) { world in
            var world = world
            try await world.addAgent("agent-2")
            let first = try world.startAgent()
            // Pause the first agent in the middle of its write (its first online rows are in Redis, so the offline
            // transaction is open), on a thread of its own that watches before the job is even queued: the
            // job takes about a second, and a watcher started late on a loaded machine would miss it.
            let pid = first.process.processIdentifier
            let paused = Self.signal(first, SIGSTOP) {
                // DBSIZE by hand over a socket of its own (a thread cannot await a client).
                guard let socket = try? RawSocket(port: redis, timeout: 1), socket.send("DBSIZE\r\n") else { return false }
                let answer = socket.read(for: 0.02)
                return answer.hasPrefix(":") && answer.dropFirst().prefix { $0.isNumber } != "0"
            }
            paused.start()
            let started = try await world.jobs.admin.materialize(
                MaterializeRequest(
                    featureView: "driver_hourly_stats", start: MaterializationWorld.day0,
                    end: MaterializationWorld.day0.addingTimeInterval(48 * 3_600), chunk: "4d"),
                workspace: JobsWorld.workspace)
            #expect(started.chunksQueued == 1)
            while paused.isExecuting || !paused.isFinished { try await Task.sleep(for: .milliseconds(20)) }
            let chunk = try #require(try await world.jobs.chunks(of: started.backfill.id).first)
            #expect(chunk.state != .succeeded, "the job finished before the pause")
            // The second agent takes the job over once the lease has run out; the paused writer's transaction is
            // ended by PostgreSQL (idle past three leases), so the interval is free for it.
            let second = try world.startAgent(name: "agent-2")
            let detail = try await world.jobs.waitUntilFinished(started.backfill.id, timeout: 120)
            #expect(detail.job.state == .succeeded, "\(second.log.suffix(3_000))")
            let stored = try await world.offline("rides__driver_hourly_stats__v1")
            #expect(stored.count == 3_000 * 48)
            // The first wakes up: it finds its lease gone and writes nothing more.
            kill(pid, SIGCONT)
            let deadline = Date().addingTimeInterval(30)
            // Whichever it hears first — its lease extension refused, or the heartbeat's abort — it stops, and its completion is refused.
            func stopped() -> Bool { first.log.contains("lost the lease") || first.log.contains("problem=lease-lost") }
            while !stopped(), Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
            #expect(stopped(), "\(first.log.suffix(3_000))")
            try await Task.sleep(for: .seconds(2))
            #expect(try await world.offline("rides__driver_hourly_stats__v1") == stored, "the resumed agent changed the offline table")
            #expect(try await world.count(
                "SELECT count(*)::int FROM (SELECT 1 FROM larder_offline.rides__driver_hourly_stats__v1 GROUP BY driver_id, event_timestamp HAVING count(*) > 1) d") == 0)
            // The interval's fence holds the term of the attempt that finished; the paused attempt's lease expired.
            #expect(try await world.count(
                "SELECT count(*)::int FROM larder_offline.larder_fences WHERE relation = 'rides__driver_hourly_stats__v1' AND job = \(chunk.id)") == 1)
            let attempts = try await world.jobs.admin.job(chunk.id, workspace: JobsWorld.workspace).attempts
            #expect(attempts.first?.agent == "agent-1" && attempts.first?.outcome == "lease-expired", "\(attempts.map { "\($0.agent) \($0.outcome)" })")
            #expect(attempts.last?.agent == "agent-2" && attempts.last?.outcome == "succeeded")
            // The shared store holds the newest values.
            #expect(await second.stop() == 0)
            #expect(await first.stop() == 0)
            try await Self.expectNewestHour(inRedis: redis)
        }
        }
    }

    @Test("source failures — a query past the statement timeout, a query failing on a value, a malformed CSV value — fail cleanly, report no customer values, and the agent goes on working")
    func statementTimeout() async throws {
        try await Self.withWorld(drivers: 5, hours: 24, trips: 100, environment: ["LARDER_MAX_ATTEMPTS": "1"]) { world in
            var fixture = RepositoryFixture.example(workspace: JobsWorld.workspace).unscheduled()
            fixture.files["slow.yaml"] = """
                kind: PostgresSource
                name: slow_trips
                connection: rides_db
                query: SELECT * FROM public.trips WHERE pg_sleep(5) IS NOT NULL
                timestamp_field: completed_at
                columns:
                  trip_id: int64
                  driver_id: int64
                ---
                kind: FeatureView
                name: slow_driver_trips
                entities: [driver]
                source: slow_trips
                feature_start_time: 2025-01-01T00:00:00Z
                features:
                  - name: trip_id
                    type: int64
                ---
                kind: PostgresSource
                name: broken_trips
                connection: rides_db
                query: SELECT trip_id, driver_id, completed_at FROM public.trips WHERE driver_id = 'secret-value'::bigint
                timestamp_field: completed_at
                columns:
                  trip_id: int64
                  driver_id: int64
                ---
                kind: FeatureView
                name: broken_driver_trips
                entities: [driver]
                source: broken_trips
                feature_start_time: 2025-01-01T00:00:00Z
                features:
                  - name: trip_id
                    type: int64
                ---
                kind: PostgresSource
                name: endless_trips
                connection: rides_db
                query: SELECT trip_id, driver_id, completed_at, 'infinity'::timestamptz AS recorded_at FROM public.trips
                timestamp_field: completed_at
                created_timestamp_field: recorded_at
                columns:
                  trip_id: int64
                  driver_id: int64
                ---
                kind: FeatureView
                name: endless_driver_trips
                entities: [driver]
                source: endless_trips
                feature_start_time: 2025-01-01T00:00:00Z
                features:
                  - name: trip_id
                    type: int64

                """
            try await fixture.apply(to: JobsWorld.workspace, with: world.jobs.admin)
            let agent = try world.startAgent(timeout: "1s")
            let began = Date()
            let slow = try await world.materialize("slow_driver_trips", hours: 0..<24)
            #expect(slow.job.state == .failed)
            #expect(Date().timeIntervalSince(began) < 30)
            let chunk = try #require(try await world.jobs.chunks(of: slow.job.id).first)
            let failure = try await world.jobs.admin.job(chunk.id, workspace: JobsWorld.workspace).attempts.first?.failure
            #expect(failure?.message.contains("statement timeout (1 s)") == true, "\(String(describing: failure))")
            // A query that fails on a value: the failure is reported by its code, never the server's message; it is not retried.
            let broken = try await world.materialize("broken_driver_trips", hours: 0..<24)
            #expect(broken.job.state == .failed)
            let brokenAttempt = try await world.jobs.admin.job(
                try #require(try await world.jobs.chunks(of: broken.job.id).first).id, workspace: JobsWorld.workspace).attempts.first
            let reported = brokenAttempt?.failure?.message ?? ""
            #expect(reported.contains("SQLSTATE 22P02 (invalid_text_representation)") && !reported.contains("invalid input syntax"), "\(reported)")
            #expect(!reported.contains("secret-value") && brokenAttempt?.failure?.retryable == false)
            #expect(agent.log.contains("secret-value"))
            // An infinite timestamp has no place in a store: the job fails for good, naming the column.
            let endless = try await world.materialize("endless_driver_trips", hours: 0..<24)
            #expect(endless.job.state == .failed)
            let endlessAttempt = try await world.jobs.admin.job(
                try #require(try await world.jobs.chunks(of: endless.job.id).first).id, workspace: JobsWorld.workspace).attempts.first
            #expect(endlessAttempt?.failure?.message.contains("column recorded_at holds an infinite timestamp") == true,
                    "\(String(describing: endlessAttempt?.failure))")
            #expect(endlessAttempt?.failure?.retryable == false)

            // A malformed value in a CSV file fails the job for good, naming the file, line and column.
            let file = world.files.appendingPathComponent("driver_hourly_stats.csv")
            let original = try String(contentsOf: file, encoding: .utf8)
            var lines = original.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            lines[7] = "1002,2025-01-01T01:00:00Z,2025-01-01T01:00:00Z,0.5,high,3"
            try lines.joined(separator: "\n").write(to: file, atomically: true, encoding: .utf8)
            let malformed = try await world.materialize("driver_hourly_stats", hours: 0..<12)
            #expect(malformed.job.state == .failed)
            let brokenChunk = try #require(try await world.jobs.chunks(of: malformed.job.id).first)
            let attempt = try await world.jobs.admin.job(brokenChunk.id, workspace: JobsWorld.workspace).attempts.first
            // The control plane hears where, not the value: that is customer data, kept in the agent's own log.
            #expect(attempt?.failure?.message.hasSuffix("driver_hourly_stats.csv:8: column acc_rate: the value is not a number") == true,
                    "\(String(describing: attempt?.failure))")
            #expect(attempt?.failure?.message.contains("high") == false)
            #expect(attempt?.failure?.retryable == false)
            #expect(agent.log.contains("driver_hourly_stats.csv:8: column acc_rate: 'high' is not a number"))
            try original.write(to: file, atomically: true, encoding: .utf8)

            let next = try await world.materialize("driver_hourly_stats", hours: 0..<24)
            #expect(next.job.state == .succeeded, "\(agent.log.suffix(3_000))")

            #expect(await agent.stop() == 0)
        }
    }
}

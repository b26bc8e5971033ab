import DataPlane
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import ServiceLifecycle
import Shared
import Synchronization
import TestSupport

/// The serving benchmark: a feature service of 5 stored features from 2
/// views and 1 on-demand feature, over 1,000,000 stored entities.
///
/// - In process: the cost of a read per (entity, view), without HTTP.
/// - Over loopback: a child `larder-bench serve-features` process runs the
///   agent's real feature server; `wrk` loads it, closed-loop at several
///   connection counts and paced at about 5,000 requests/s.
extension LarderBench {
    static let benchService = """
        kind: FeatureService
        name: bench_ranking
        features:
          - driver_hourly_stats:conv_rate
          - driver_hourly_stats:acc_rate
          - driver_hourly_stats:avg_daily_trips
          - driver_trip_aggregates:trips_count_7d
          - driver_trip_aggregates:fare_mean_7d
          - trip_quote:expected_fare

        """

    /// A feature server's state over `entities` generated drivers: the
    /// example's registry plus `bench_ranking`, one consumer token, both views filled.
    struct ServingWorld {
        let folder: URL
        let store: OnlineStore
        let reader: OnlineFeatureReader
        let registry: RegistryCache
        let accessGuard: AccessGuard
        let token: String

        init(entities: Int) throws {
            folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-serving-bench-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let snapshots = try SignedServingSnapshots(
                folder: folder, workspace: "bench", extraFiles: [("bench_service.yaml", LarderBench.benchService)],
                members: [("model", [.viewer, .consumer])])
            let repository = snapshots.repository, registry = snapshots.registry, now = Date()
            accessGuard = snapshots.accessGuard
            token = snapshots.tokens[0]

            store = try OnlineStore(directory: folder.appendingPathComponent("online").path)
            let schemas = RepositoryValidator.viewSchemas(of: repository)
            let nowMicros = Int64(now.timeIntervalSince1970 * 1_000_000)
            var random = SystemRandomNumberGenerator()
            for view in ["driver_hourly_stats", "driver_trip_aggregates"] {
                let features = schemas[view]!
                let ttl = repository.featureViews.first { $0.name == view }?.ttl?.seconds
                let table = try store.table(for: OnlineTableSchema(
                    view: view, version: 1, keys: [Column(name: "driver_id", type: .int64)], features: features, ttlSeconds: ttl))
                var start = 0
                while start < entities {
                    let end = min(start + 100_000, entities)
                    let count = end - start
                    let columns = ServingWorld.randomColumns(features, count: count, using: &random)
                    try table.upsert(OnlineRows(
                        keys: (start..<end).map { .int(Int64($0)) },
                        eventTimes: (0..<count).map { _ in nowMicros - Int64.random(in: 0...3_600_000_000, using: &random) },
                        createdTimes: Array(repeating: nowMicros, count: count), features: columns))
                    start = end
                }
            }
            reader = OnlineFeatureReader(store: store, registry: registry)
            self.registry = registry
        }

        func remove() { try? FileManager.default.removeItem(at: folder) }

        /// `count` random values for each of `features` (integers 0–500, doubles 0–1).
        static func randomColumns(_ features: [Column], count: Int, using random: inout some RandomNumberGenerator) -> [ColumnValues] {
            features.map { feature in
                feature.type.isInteger
                    ? .int64((0..<count).map { _ in Int64.random(in: 0...500, using: &random) })
                    : .float64((0..<count).map { _ in Double.random(in: 0...1, using: &random) })
            }
        }

        /// A materialization's batch for `table`: 16,384 rows of random entities among `entities`, with
        /// random values and no times yet (the writer sets them, newer than anything stored).
        static func writeBatch(for table: OnlineTable, entities: Int, using random: inout some RandomNumberGenerator) -> OnlineRows {
            OnlineRows(
                keys: (0..<16_384).map { _ in .int(Int64.random(in: 0..<Int64(entities), using: &random)) },
                eventTimes: [], createdTimes: [], features: randomColumns(table.schema.features, count: 16_384, using: &random))
        }
    }

    /// `larder-bench serving`: in-process reads, then HTTP under wrk.
    static func serving(entities: Int, seconds: Int) async throws {
        print("\n## online serving: bench_ranking (5 stored features from 2 views + 1 on-demand), \(entities) entities per view")
        let world = try ServingWorld(entities: entities)
        defer { world.remove() }
        try inProcessReads(world, entities: entities)
        try readsWhileWriting(world, entities: entities)
        try await overHTTP(entities: entities, seconds: seconds)
    }

    /// Single-entity reads on one thread while another upserts batches of
    /// 16,384 rows into one of the views (a materialization's batch size),
    /// for several slice sizes of the upsert (rows stored per hold of the
    /// table's lock): how long a read can wait behind a write.
    static func readsWhileWriting(_ world: ServingWorld, entities: Int) throws {
        let resolved = try world.reader.resolve(references: [
            "driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate", "driver_hourly_stats:avg_daily_trips",
            "driver_trip_aggregates:trips_count_7d", "driver_trip_aggregates:fare_mean_7d",
        ])
        guard let table = world.store.table(view: "driver_hourly_stats", version: 1) else { return }
        var random = SystemRandomNumberGenerator()
        let batches = try (0..<4_096).map { _ in
            try EntityBatch(
                OnlineFeatureRequest(entities: [["driver_id": .int(Int64.random(in: 0..<Int64(entities), using: &random))]], requestContext: nil),
                for: resolved, limit: 1_000)
        }
        let writes = (0..<8).map { _ in ServingWorld.writeBatch(for: table, entities: entities, using: &random) }
        print("\n| in process, while another thread upserts batches of 16,384 rows | rows per lock hold | rows written/s | reads | read p50 | p99 | p99.9 | max |")
        print("|---|---|---|---|---|---|---|---|")
        for rowsPerLock in [Int.max, 1_024, 256, OnlineTable.rowsPerLock, 32] {
            let stop = Atomic(false)
            let written = Atomic(0)
            let writerDone = DispatchSemaphore(value: 0)
            let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
            let writer = Thread {
                var round: Int64 = 0
                while !stop.load(ordering: .relaxed) {
                    var rows = writes[Int(round) % writes.count]
                    // Newer than anything stored, so every row wins and is written.
                    rows.eventTimes = Array(repeating: now + round, count: rows.count)
                    rows.createdTimes = rows.eventTimes
                    written.add((try? table.upsert(rows, rowsPerLock: rowsPerLock)) ?? 0, ordering: .relaxed)
                    round += 1
                }
                writerDone.signal()
            }
            writer.start()
            let clock = ContinuousClock()
            var latencies: [Double] = []
            latencies.reserveCapacity(4_000_000)
            var sink = 0
            let started = clock.now
            while clock.now - started < .seconds(2) {
                for batch in batches {
                    let before = clock.now
                    sink &+= world.reader.read(resolved, batch: batch, now: now).values.count
                    let took = (clock.now - before).components
                    latencies.append(Double(took.seconds) * 1e6 + Double(took.attoseconds) / 1e12)
                }
            }
            let elapsed = clock.now - started
            stop.store(true, ordering: .relaxed)
            writerDone.wait()
            precondition(sink > 0)
            latencies.sort()
            func micros(_ fraction: Double) -> String {
                String(format: "%.1f µs", latencies[min(latencies.count - 1, Int(Double(latencies.count) * fraction))])
            }
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print("| | \(rowsPerLock == Int.max ? "the whole batch" : String(rowsPerLock)) | \(String(format: "%.0f", Double(written.load(ordering: .relaxed)) / seconds)) | \(latencies.count) | \(micros(0.5)) | \(micros(0.99)) | \(micros(0.999)) | \(String(format: "%.1f µs", latencies.last ?? 0)) |")
        }
    }

    /// Reads without HTTP: per (entity, view), stored features only and the whole service.
    static func inProcessReads(_ world: ServingWorld, entities: Int) throws {
        let stored = try world.reader.resolve(references: [
            "driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate", "driver_hourly_stats:avg_daily_trips",
            "driver_trip_aggregates:trips_count_7d", "driver_trip_aggregates:fare_mean_7d",
        ])
        let service = try world.reader.resolve(service: "bench_ranking")
        var random = SystemRandomNumberGenerator()
        print("\n| in process | entities per request | requests | ns per request | ns per (entity, view) |")
        print("|---|---|---|---|---|")
        for (name, resolved) in [("stored features (read)", stored), ("bench_ranking (read + on-demand + JSON)", service)] {
            for size in [1, 100] {
                let batches = try (0..<1_000).map { _ in
                    try EntityBatch(
                        OnlineFeatureRequest(
                            entities: (0..<size).map { _ in ["driver_id": .int(Int64.random(in: 0..<Int64(entities), using: &random))] },
                            requestContext: resolved.requestFields.isEmpty ? nil : ["trip_distance_km": 3.5]),
                        for: resolved, limit: 1_000)
                }
                let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
                let encode = !resolved.derivations.isEmpty
                var requests = 0
                var sink = 0
                let clock = ContinuousClock()
                let started = clock.now
                while clock.now - started < .seconds(2) {
                    for batch in batches {
                        if encode {
                            sink &+= world.reader.answer(resolved, batch: batch, now: now, service: "bench_ranking").body.count
                        } else {
                            sink &+= world.reader.read(resolved, batch: batch, now: now).values.count
                        }
                    }
                    requests += batches.count
                }
                let elapsed = clock.now - started
                let nanoseconds = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
                let perRequest = nanoseconds / Double(requests)
                precondition(sink > 0)
                print("| \(name) | \(size) | \(requests) | \(String(format: "%.0f", perRequest)) | \(String(format: "%.0f", perRequest / Double(size * resolved.views.count))) |")
            }
        }
    }

    /// `larder-bench serve-features ENTITIES [router-only] [writer=N]`: the child process of the HTTP
    /// benchmark. Prints `ready <url> <token>` once it listens; runs until SIGTERM.
    /// `router-only` serves feature reads through the router, as before they were answered on the event loops.
    /// `writer=N` also runs a materialization's writes meanwhile: a batch of 16,384 rows upserted into
    /// `driver_hourly_stats` every 100 ms, N rows per hold of the table's lock (0: the whole batch at once).
    static func serveFeatures(entities: Int, routerOnly: Bool, writerRowsPerLock: Int? = nil, redis: Int? = nil) async throws {
        let world = try ServingWorld(entities: entities)
        defer { world.remove() }
        // `redis=PORT`: the same values copied into that Redis, and read from there.
        var reader = world.reader
        if let redis { reader = try await redisReader(world, port: redis) }
        if let writerRowsPerLock, let table = world.store.table(view: "driver_hourly_stats", version: 1) {
            var random = SystemRandomNumberGenerator()
            let batch = ServingWorld.writeBatch(for: table, entities: entities, using: &random)
            let writer = Thread {
                let clock = ContinuousClock()
                var next = clock.now, round: Int64 = 0
                while true {
                    var rows = batch
                    // Newer than anything stored, so every row is written.
                    rows.eventTimes = Array(repeating: Int64(Date().timeIntervalSince1970 * 1_000_000) + round, count: rows.count)
                    rows.createdTimes = rows.eventTimes
                    _ = try? table.upsert(rows, rowsPerLock: writerRowsPerLock == 0 ? Int.max : writerRowsPerLock)
                    round += 1
                    next = next.advanced(by: .milliseconds(100))
                    let wait = (next - clock.now).components
                    Thread.sleep(forTimeInterval: max(0, Double(wait.seconds) + Double(wait.attoseconds) / 1e18))
                }
            }
            writer.start()
        }
        var logger = Logger(label: "bench-server")
        logger.logLevel = .warning
        let settings = AgentConfiguration.ServingSettings(host: "127.0.0.1", port: 0, maxBatchEntities: 1_000)
        let metrics = AgentMetrics()
        let router = FeatureServer.makeRouter(settings: settings, reader: reader, guard: world.accessGuard, metrics: metrics)
        // Calibration: the HTTP cost of a request like a feature read (a POST whose body is
        // read, a 1 KiB answer) with none of the feature server's work.
        let answer = ByteBuffer(bytes: Array(repeating: UInt8(ascii: " "), count: 1_024))
        router.post("/bench/echo") { request, _ in
            _ = try await request.body.collect(upTo: 1 << 20)
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: answer))
        }
        // The agent's HTTP/1 setup: feature reads answered on the event loops, the rest by the router.
        let server = Application(
            router: router,
            server: routerOnly ? .http1() : FeatureServer.http1(settings: settings, reader: reader, guard: world.accessGuard, metrics: metrics, logger: logger),
            configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "larder-bench"),
            onServerRunning: { channel in
                FileHandle.standardOutput.write(Data("ready http://127.0.0.1:\(channel.localAddress?.port ?? 0) \(world.token)\n".utf8))
            },
            logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: server)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    /// Starts a `serve-features ENTITIES OPTIONS…` child and waits for its `ready` line: its process, address and token.
    /// `pinnedTo`: the CPU the child may run on (through `taskset`); `environment`: added to this process' own.
    static func startServingChild(
        entities: Int, options: [String], pinnedTo cpu: Int? = nil, environment: [String: String] = [:]
    ) throws -> (process: Process, url: String, token: String) {
        let child = Process()
        let arguments = ["serve-features", "\(entities)"] + options
        if let cpu {
            child.executableURL = URL(fileURLWithPath: "/usr/bin/taskset")
            child.arguments = ["-c", "\(cpu)", CommandLine.arguments[0]] + arguments
        } else {
            child.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
            child.arguments = arguments
        }
        child.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let output = Pipe()
        child.standardOutput = output
        try child.run()
        var line = ""
        let handle = output.fileHandleForReading
        while !line.hasSuffix("\n") {
            let byte = handle.readData(ofLength: 1)
            guard !byte.isEmpty else { throw CocoaError(.fileReadUnknown) }
            line += String(decoding: byte, as: UTF8.self)
        }
        let parts = line.split(separator: " ").map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) }
        guard parts.count == 3, parts[0] == "ready" else { throw CocoaError(.fileReadCorruptFile) }
        return (child, parts[1], parts[2])
    }

    /// `larder-bench serving-pinned`: the feature server pinned to the first CPU and
    /// this process (the load generator) to the second, as a server given one core
    /// is run: the server's event loops sized to its allowance (one), beside two
    /// (the machine's cores, as they were sized before), in the same run.
    static func servingPinned(entities: Int, seconds: Int) async throws {
        guard ProcessInfo.processInfo.activeProcessorCount >= 2 else {
            print("\n## serving, pinned: needs two CPUs")
            return
        }
        let pin = Process()
        pin.executableURL = URL(fileURLWithPath: "/usr/bin/taskset")
        pin.arguments = ["-a", "-c", "-p", "1", "\(ProcessInfo.processInfo.processIdentifier)"]
        pin.standardOutput = FileHandle.nullDevice
        try pin.run()
        pin.waitUntilExit()
        print("\n## serving, the server pinned to CPU 0 and the load generator to CPU 1 (\(entities) entities, \(seconds) s each, 1 s warm-up)")
        print("\n| server's event loops | entities per request | arrivals | connections | requests/s | p50 | p99 | p99.9 | max | errors |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for (label, environment) in [("1 (sized to its CPU allowance)", [:]), ("2 (`LARDER_EVENT_LOOPS=2`: the machine's cores)", ["LARDER_EVENT_LOOPS": "2"])] {
            let (child, url, token) = try startServingChild(entities: entities, options: [], pinnedTo: 0, environment: environment)
            defer {
                child.terminate()
                child.waitUntilExit()
            }
            let port = Int(url.split(separator: ":").last ?? "") ?? 0
            let requests = featureRequests(entities: entities, batch: 1, token: token)
            _ = try LoadGenerator(host: "127.0.0.1", port: port, connections: 4, arrivals: .closedLoop, seconds: 1, requests: requests).run()
            for (arrivals, name, connections) in [
                (LoadGenerator.Arrivals.closedLoop, "closed loop", 8), (.closedLoop, "closed loop", 32), (.constant(perSecond: 5_000), "evenly 5000/s", 16),
            ] {
                let result = try LoadGenerator(
                    host: "127.0.0.1", port: port, connections: connections, arrivals: arrivals, seconds: Double(seconds), requests: requests
                ).run()
                func ms(_ micros: Double) -> String { String(format: "%.2f ms", micros / 1_000) }
                print("| \(label) | 1 | \(name) | \(connections) | \(String(format: "%.0f", result.rate)) | \(ms(result.p50)) | \(ms(result.p99)) | \(ms(result.p999)) | \(ms(result.max)) | \(result.errors) |")
            }
        }
    }

    /// One load run's figures (wrk's or larder-bench's generator's), latencies in microseconds.
    typealias LoadResult = LoadGenerator.Result


    static let wrkScript = #"""
        local batch = tonumber(os.getenv("LARDER_BENCH_BATCH"))
        local population = tonumber(os.getenv("LARDER_BENCH_ENTITIES"))
        local pace = tonumber(os.getenv("LARDER_BENCH_DELAY_MS") or "0")
        local health = os.getenv("LARDER_BENCH_HEALTH") == "1"
        local echo = os.getenv("LARDER_BENCH_ECHO") == "1"
        wrk.method = "POST"
        wrk.headers["Content-Type"] = "application/json"
        wrk.headers["Authorization"] = "Bearer " .. os.getenv("LARDER_BENCH_TOKEN")
        local threads = 0
        function setup(thread) threads = threads + 1; thread:set("seed", threads) end
        -- Each thread encodes 20,000 requests for random entities up front and sends them in turn: building a
        -- request per call in Lua cost wrk about as much CPU as a tenth of the server's work per request.
        local pool, size, turn = {}, batch > 10 and 2000 or 20000, 0
        function init(args)
          math.randomseed(seed * 7919 + os.time())
          if health then pool[1] = wrk.format("GET", "/healthz", nil, nil); size = 1; return end
          for n = 1, size do
            local parts = {}
            for i = 1, batch do parts[i] = '{"driver_id":' .. math.random(0, population - 1) .. '}' end
            pool[n] = wrk.format(nil, echo and "/bench/echo" or "/v1/features/online", nil,
              '{"feature_service":"bench_ranking","request_context":{"trip_distance_km":3.5},"entities":[' .. table.concat(parts, ",") .. ']}')
          end
        end
        function request()
          turn = turn % size + 1
          return pool[turn]
        end
        -- Staggered: each wait drawn from 1 .. 2 × pace − 1 ms, so connections do not fall into step and send in bursts.
        local stagger = os.getenv("LARDER_BENCH_STAGGER") == "1"
        if pace > 0 then function delay() if stagger then return math.random(1, 2 * pace - 1) end return pace end end
        function done(summary, latency, requests)
          io.write(string.format("RESULT %d %d %.0f %.0f %.0f %.0f %d\n", summary.requests, summary.duration,
            latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
            summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
        end
        """#

    /// 20,000 encoded `POST /v1/features/online` requests for `service`, each for `batch` entities whose
    /// `key` is drawn from `0..<entities`, with `context` as the request context.
    static func featureRequests(
        entities: Int, batch: Int, token: String, service: String = "bench_ranking", key: String = "driver_id",
        context: String = #"{"trip_distance_km":3.5}"#
    ) -> [[UInt8]] {
        var random = SystemRandomNumberGenerator()
        return (0..<20_000).map { _ in
            let keys = (0..<batch).map { _ in #"{"\#(key)":\#(Int.random(in: 0..<entities, using: &random))}"# }.joined(separator: ",")
            let body = #"{"feature_service":"\#(service)","request_context":\#(context),"entities":[\#(keys)]}"#
            return Array(("POST /v1/features/online HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\n"
                + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)").utf8)
        }
    }

    /// `larder-bench load http://127.0.0.1:PORT TOKEN [rate=N | poisson=N] [connections=N] [seconds=N] [batch=N]
    /// [service=NAME key=NAME entities=N context=JSON]`: loads a running feature server (the benchmark's child, or an
    /// agent) with larder-bench's generator — open loop at `rate` (evenly) or `poisson` requests per second, or closed
    /// loop when neither is given — and prints the figures. The defaults ask for `bench_ranking`.
    static func load(_ arguments: [String]) throws {
        guard arguments.count >= 2, let port = arguments[0].split(separator: ":").last.flatMap({ Int($0) }),
              arguments[0].hasPrefix("http://127.0.0.1:")
        else {
            print("usage: larder-bench load http://127.0.0.1:PORT TOKEN [rate=N | poisson=N] [connections=N] [seconds=N] [batch=N] [service=NAME key=NAME entities=N context=JSON]")
            return
        }
        var options: [String: String] = [:]
        for option in arguments.dropFirst(2) {
            let parts = option.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { options[String(parts[0])] = String(parts[1]) }
        }
        let arrivals: LoadGenerator.Arrivals =
            if let rate = options["rate"].flatMap(Double.init) { .constant(perSecond: rate) }
            else if let rate = options["poisson"].flatMap(Double.init) { .poisson(perSecond: rate) }
            else { .closedLoop }
        let result = try LoadGenerator(
            host: "127.0.0.1", port: port, connections: options["connections"].flatMap { Int($0) } ?? 16, arrivals: arrivals,
            seconds: options["seconds"].flatMap(Double.init) ?? 10,
            requests: featureRequests(
                entities: options["entities"].flatMap { Int($0) } ?? 1_000_000, batch: options["batch"].flatMap { Int($0) } ?? 1, token: arguments[1],
                service: options["service"] ?? "bench_ranking", key: options["key"] ?? "driver_id", context: options["context"] ?? #"{"trip_distance_km":3.5}"#)
        ).run()
        func ms(_ micros: Double) -> String { String(format: "%.2f ms", micros / 1_000) }
        print("requests/s \(String(format: "%.0f", result.rate)), p50 \(ms(result.p50)), p99 \(ms(result.p99)), "
            + "p99.9 \(ms(result.p999)), max \(ms(result.max)), errors \(result.errors)")
    }

    /// Starts the server child, runs the wrk matrix against it, prints the table.
    static func overHTTP(entities: Int, seconds: Int) async throws {
        guard let wrk = ["/usr/bin/wrk", "/usr/local/bin/wrk"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            print("\nwrk is not installed (apt-get install wrk): skipping the HTTP part")
            return
        }
        func startServer(routerOnly: Bool = false, writerRowsPerLock: Int? = nil) throws -> (process: Process, url: String, token: String) {
            try startServingChild(entities: entities, options: (routerOnly ? ["router-only"] : []) + (writerRowsPerLock.map { ["writer=\($0)"] } ?? []))
        }
        func stop(_ child: Process) {
            guard child.isRunning else { return }
            child.terminate()
            child.waitUntilExit()
        }
        let (child, url, token) = try startServer()
        defer { stop(child) }
        let script = FileManager.default.temporaryDirectory.appendingPathComponent("larder-bench-\(UUID().uuidString).lua")
        try wrkScript.write(to: script, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: script) }

        func load(
            batch: Int, threads: Int, connections: Int, delayMilliseconds: Int = 0, staggered: Bool = false, health: Bool = false, echo: Bool = false,
            url: String = url,
            token: String = token
        ) throws -> LoadResult {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: wrk)
            process.arguments = ["-t\(threads)", "-c\(connections)", "-d\(seconds)s", "--timeout", "5s", "-s", script.path, url]
            process.environment = [
                "LARDER_BENCH_BATCH": "\(batch)", "LARDER_BENCH_ENTITIES": "\(entities)", "LARDER_BENCH_TOKEN": token,
                "LARDER_BENCH_DELAY_MS": "\(delayMilliseconds)", "LARDER_BENCH_HEALTH": health ? "1" : "0", "LARDER_BENCH_ECHO": echo ? "1" : "0",
                "LARDER_BENCH_STAGGER": staggered ? "1" : "0",
            ]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            guard let result = text.split(separator: "\n").first(where: { $0.hasPrefix("RESULT ") })?.split(separator: " ").dropFirst().compactMap({ Double($0) }),
                  result.count == 7
            else { throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: text]) }
            return LoadResult(requests: Int(result[0]), seconds: result[1] / 1e6, p50: result[2], p99: result[3], p999: result[4], max: result[5], errors: Int(result[6]))
        }

        // Warm up: the server's first requests fault pages in.
        _ = try load(batch: 1, threads: 1, connections: 4)
        print("\n| over HTTP (wrk, \(seconds) s each) | entities per request | wrk threads × connections | requests/s | p50 | p99 | p99.9 | max | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
        func row(_ what: String, _ batch: some CustomStringConvertible, _ threads: Int, _ connections: Int, _ result: LoadResult) {
            func ms(_ micros: Double) -> String { String(format: "%.2f ms", micros / 1_000) }
            print("| \(what) | \(batch) | \(threads == 0 ? "\(connections)" : "\(threads) × \(connections)") | \(String(format: "%.0f", result.rate)) | \(ms(result.p50)) | \(ms(result.p99)) | \(ms(result.p999)) | \(ms(result.max)) | \(result.errors) |")
        }
        // Paced: 16 connections each waiting 2 ms after every answer (about 5,000–6,000 requests/s).
        row("paced", 1, 1, 16, try load(batch: 1, threads: 1, connections: 16, delayMilliseconds: 2))
        // The same mean wait, drawn at random per request: arrivals spread out instead of coming in bursts of 16.
        row("paced, staggered (1–3 ms)", 1, 1, 16, try load(batch: 1, threads: 1, connections: 16, delayMilliseconds: 2, staggered: true))
        for connections in [1, 8, 32, 128] {
            row("closed loop", 1, connections == 1 ? 1 : 2, connections, try load(batch: 1, threads: connections == 1 ? 1 : 2, connections: connections))
        }
        // The HTTP stack's own ceiling on this machine, in the same run: GET /healthz does no work.
        row("GET /healthz (no work: the server's ceiling)", 0, 2, 32, try load(batch: 0, threads: 2, connections: 32, health: true))
        row("POST /bench/echo (the same body read, a 1 KiB answer, no work)", 1, 2, 32, try load(batch: 1, threads: 2, connections: 32, echo: true))
        row("paced", 100, 1, 4, try load(batch: 100, threads: 1, connections: 4, delayMilliseconds: 2))
        for connections in [1, 8, 32] {
            row("closed loop", 100, connections == 1 ? 1 : 2, connections, try load(batch: 100, threads: connections == 1 ? 1 : 2, connections: connections))
        }
        print("(server process peak memory: \(peakResidentMiB(process: "\(child.processIdentifier)")) MiB)")

        // Open loop with larder-bench's own generator: requests are due at a set rate (evenly spaced, or at random
        // as Poisson arrivals), and each one's latency counts from when it was due, so waiting behind a slow answer
        // counts too (wrk's paced runs instead wait after each answer). Closed loop: the same generator sending as
        // fast as answers come, for the saturation figures with a client cheaper than wrk.
        print("\n| larder-bench's load generator (\(seconds) s each, 1 s warm-up) | arrivals | connections | requests/s | p50 | p99 | p99.9 | max | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
        func generate(_ arrivals: LoadGenerator.Arrivals, connections: Int, url: String = url, token: String = token) throws -> LoadResult {
            let port = Int(url.split(separator: ":").last ?? "") ?? 0
            return try LoadGenerator(
                host: "127.0.0.1", port: port, connections: connections, arrivals: arrivals, seconds: Double(seconds),
                requests: featureRequests(entities: entities, batch: 1, token: token)
            ).run()
        }
        for rate in [5_000, 10_000] {
            row("open loop, 1 entity", "evenly \(rate)/s", 0, 16, try generate(.constant(perSecond: Double(rate)), connections: 16))
            row("open loop, 1 entity", "Poisson \(rate)/s", 0, 16, try generate(.poisson(perSecond: Double(rate)), connections: 16))
        }
        for connections in [32, 64] {
            row("closed loop, 1 entity", "as answered", 0, connections, try generate(.closedLoop, connections: connections))
        }

        // The same reads answered through the router (Hummingbird's asynchronous path), in the same run.
        stop(child)
        let (routed, routedURL, routedToken) = try startServer(routerOnly: true)
        defer { stop(routed) }
        _ = try load(batch: 1, threads: 1, connections: 4, url: routedURL, token: routedToken)
        print("\n| through the router (as before the event-loop path) | entities per request | wrk threads × connections | requests/s | p50 | p99 | p99.9 | max | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
        row("paced", 1, 1, 16, try load(batch: 1, threads: 1, connections: 16, delayMilliseconds: 2, url: routedURL, token: routedToken))
        row("paced, staggered (1–3 ms)", 1, 1, 16,
            try load(batch: 1, threads: 1, connections: 16, delayMilliseconds: 2, staggered: true, url: routedURL, token: routedToken))
        row("closed loop", 1, 2, 32, try load(batch: 1, threads: 2, connections: 32, url: routedURL, token: routedToken))
        row("closed loop", 100, 2, 8, try load(batch: 100, threads: 2, connections: 8, url: routedURL, token: routedToken))
        row("open loop (larder-bench's generator)", "evenly 5000/s", 0, 16,
            try generate(.constant(perSecond: 5_000), connections: 16, url: routedURL, token: routedToken))
        stop(routed)

        // Reads while a materialization writes: the event-loop server again, with a writer storing a batch of
        // 16,384 rows every 100 ms into one of the views, all at once (as before) or 128 rows per hold of the lock.
        print("\n| while a writer upserts 16,384 rows every 100 ms | rows per hold of the lock | wrk threads × connections | requests/s | p50 | p99 | p99.9 | max | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
        for rowsPerLock in [0, OnlineTable.rowsPerLock] {
            let (writing, writingURL, writingToken) = try startServer(writerRowsPerLock: rowsPerLock)
            defer { stop(writing) }
            _ = try load(batch: 1, threads: 1, connections: 4, url: writingURL, token: writingToken)
            let label = rowsPerLock == 0 ? "the whole batch" : "\(rowsPerLock)"
            for (what, staggered) in [("paced", false), ("paced, staggered (1–3 ms)", true)] {
                row(what, label, 1, 16, try load(batch: 1, threads: 1, connections: 16, delayMilliseconds: 2, staggered: staggered, url: writingURL, token: writingToken))
            }
            stop(writing)
        }
    }
}

import DataPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import TestSupport

/// Materialization of the driver-stats dataset by the agent's executor, in
/// process: CSV → online store, CSV → both stores, PostgreSQL → both stores,
/// windowed aggregations, and CSV → a Redis online store (alone and with the
/// offline store); and the online store's memory per stored value.
extension LarderBench {
    static func materialize(drivers: Int, runs: Int) async throws {
        let hours = 30 * 24
        let rows = drivers * hours
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-bench-materialize-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("driver_hourly_stats.csv")
        try writeDriverStats(drivers: drivers, hours: hours, to: file)
        print("\n## materialize driver stats: \(drivers) drivers × \(hours) hours = \(rows) rows, one 30-day job")
        let phases = ProcessInfo.processInfo.environment["LARDER_BENCH_PHASES"].map { Set($0.split(separator: ",").compactMap { Int($0) }) }
        // Phases 5 and 6 write a redis-server's online store (started here, on 127.0.0.1).
        if phases.map({ !$0.isDisjoint(with: [5, 6]) }) ?? true {
            try await TestRedis.withServer { try await materialize(drivers: drivers, runs: runs, file: file, folder: folder, phases: phases, redis: $0) }
        } else {
            try await materialize(drivers: drivers, runs: runs, file: file, folder: folder, phases: phases, redis: nil)
        }
    }

    static func materialize(drivers: Int, runs: Int, file: URL, folder: URL, phases: Set<Int>?, redis: Int?) async throws {
        let rows = drivers * 30 * 24
        let logger = Logger(label: "larder-bench")
        try await TestDatabase.withIsolatedDatabase { database in
            try await loadTable(from: file, into: database, logger: logger)
            let specs = try driverStatsSpecs(hours: 30 * 24)
            var configuration = AgentConfiguration(
                controlPlaneURL: "http://127.0.0.1:1", token: "unused", publicKey: SigningKeyPair.generate().publicKey,
                dataDirectory: folder.path, connections: ["local_files": .directory(folder), "bench_db": .postgres(database)],
                offlineStore: .init(connection: "bench_db", schema: "larder_offline"))
            configuration.concurrency = 1
            print(Samples.header)
            var figures: [(String, Duration, Int)] = []
            let connection = try await database.connect(logger: logger)
            for (phase, (name, spec, offlineTable, intoRedis)) in [
                ("CSV → online store", specs.csvOnline, nil, false), ("CSV → online + offline stores", specs.csvBoth, "driver_stats_csv__v1", false),
                ("PostgreSQL → online + offline stores", specs.postgresBoth, "driver_stats_pg__v1", false),
                ("CSV → windowed aggregations (5 features, 1 h slide) → online + offline stores", specs.csvWindows, "driver_windows_csv__v1", false),
                ("CSV → Redis online store", specs.csvOnline, nil, true),
                ("CSV → Redis online + offline stores", specs.csvBoth, "driver_stats_csv__v1", true),
            ].enumerated() where (phases?.contains(phase + 1) ?? true) && (!intoRedis || redis != nil) {
                // A job writing the offline store runs twice per round: on a new
                // interval (the table dropped beforehand), then again over the
                // same interval, which it deletes and writes anew.
                let kinds = offlineTable == nil ? [name] : ["\(name), new interval", "\(name), rerun replacing it"]
                var samples = Array(repeating: Samples(), count: kinds.count)
                var peaks = Array(repeating: 0, count: kinds.count)
                for run in 0..<runs {
                    if let offlineTable {
                        try await connection.execute(PostgresQuery(unsafeSQL: "DROP TABLE IF EXISTS larder_offline.\"\(offlineTable)\""), logger: logger)
                    }
                    for kind in kinds.indices {
                        let store = try OnlineStore(directory: folder.appendingPathComponent("online-\(run)-\(UUID().uuidString)").path)
                        var online = OnlineBackend.embedded(store)
                        if intoRedis, let redis {
                            // Each run writes a new key space, as a new version's backfill does.
                            _ = try await TestRedis.command(redis, ["FLUSHALL"])
                            let settings = RedisSettings(endpoints: [RedisEndpoint(host: "127.0.0.1", port: redis)])
                            online = .redis(try RedisOnlineStore(settings: settings, logger: logger), staging: store)
                        }
                        let executor = MaterializeExecutor(configuration: configuration, online: online, logger: logger)
                        // Every measurement starts after a checkpoint, so none pays for another's writes.
                        _ = try? await connection.execute("CHECKPOINT", logger: logger)
                        resetPeakResident()
                        var metrics: JobMetrics?
                        samples[kind].add(try await measure {
                            metrics = try await executor.execute(spec, context: JobContext(attempt: 1, report: { _ in }))
                        })
                        peaks[kind] = max(peaks[kind], peakResidentMiB())
                        precondition(metrics?.rowsWritten == Int64(rows), "wrote \(String(describing: metrics?.rowsWritten)) of \(rows)")
                        await online.close()
                        try? FileManager.default.removeItem(atPath: store.directory)
                    }
                }
                for kind in kinds.indices {
                    print(samples[kind].row(kinds[kind]))
                    figures.append((kinds[kind], samples[kind].values.sorted()[samples[kind].values.count / 2], peaks[kind]))
                }
            }
            try await connection.close()
            for (name, median, peak) in figures {
                let seconds = Double(median.components.seconds) + Double(median.components.attoseconds) / 1e18
                print(String(format: "%@: %.0f rows/s (median), peak resident memory %d MiB", name, Double(rows) / seconds, peak))
            }
        }
    }

    /// Stored bytes per feature value in the online store: the resident
    /// memory a table of `entities` entities × 3 features adds.
    static func onlineMemory(entities: Int) throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-bench-online-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = try OnlineStore(directory: folder.path)
        let schema = OnlineTableSchema(
            view: "driver_hourly_stats", version: 1, keys: [Column(name: "driver_id", type: .int64)],
            features: [Column(name: "conv_rate", type: .float64), Column(name: "acc_rate", type: .float64), Column(name: "avg_daily_trips", type: .int64)],
            ttlSeconds: nil)
        let before = residentBytes()
        let table = try store.table(for: schema)
        var written = 0
        var random = SystemRandomNumberGenerator()
        let batch = 65_536
        let clock = ContinuousClock()
        let started = clock.now
        while written < entities {
            let count = min(batch, entities - written)
            let keys = (0..<count).map { EntityKey.int(Int64(written + $0)) }
            try table.upsert(OnlineRows(
                keys: keys, eventTimes: Array(repeating: 1_735_689_600_000_000, count: count), createdTimes: Array(repeating: 0, count: count),
                features: [
                    .float64((0..<count).map { _ in Double.random(in: 0...1, using: &random) }),
                    .float64((0..<count).map { _ in Double.random(in: 0...1, using: &random) }),
                    .int64((0..<count).map { _ in Int64.random(in: 0..<40, using: &random) }),
                ]))
            written += count
        }
        let elapsed = clock.now - started
        let after = residentBytes()
        let values = entities * 3
        print("\n## online store memory: \(entities) entities × 3 features")
        print(String(
            format: "resident memory added: %.1f MiB = %.1f bytes per stored feature value (%.1f per entity); loaded in %@ (%.0f rows/s)",
            Double(after - before) / 1_048_576, Double(after - before) / Double(values), Double(after - before) / Double(entities),
            Samples.format(elapsed), Double(entities) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)))
        precondition(table.count == entities)
    }

    /// Copies the CSV into `public.driver_hourly_stats` of `database`.
    static func loadTable(from file: URL, into database: PostgresURL, logger: Logger) async throws {
        let connection = try await database.connect(logger: logger)
        try await connection.execute(
            """
            CREATE TABLE public.driver_hourly_stats (driver_id bigint, event_timestamp timestamptz, created timestamptz,
                conv_rate double precision, acc_rate double precision, avg_daily_trips bigint)
            """, logger: logger)
        let handle = try FileHandle(forReadingFrom: file)
        defer { try? handle.close() }
        var first = true
        try await connection.copyFrom(table: "driver_hourly_stats", logger: logger) { writer in
            var carry: [UInt8] = []
            while let data = try handle.read(upToCount: 1 << 20), !data.isEmpty {
                var bytes = carry + [UInt8](data)
                let cut = (bytes.lastIndex(of: UInt8(ascii: "\n")) ?? -1) + 1
                carry = Array(bytes[cut...])
                bytes.removeSubrange(cut...)
                if first, let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) {
                    bytes.removeSubrange(...newline)
                    first = false
                }
                for index in bytes.indices where bytes[index] == UInt8(ascii: ",") { bytes[index] = UInt8(ascii: "\t") }
                try await writer.write(ByteBuffer(bytes: bytes))
            }
        }
        try await connection.execute("ANALYZE public.driver_hourly_stats", logger: logger)
        try await connection.close()
    }

    /// Signed-spec payloads for the three runs, from a repository built in code.
    static func driverStatsSpecs(hours: Int) throws -> (csvOnline: JobSpec, csvBoth: JobSpec, postgresBoth: JobSpec, csvWindows: JobSpec) {
        let columns = [
            Column(name: "driver_id", type: .int64), Column(name: "conv_rate", type: .float64), Column(name: "acc_rate", type: .float64),
            Column(name: "avg_daily_trips", type: .int64),
        ]
        let features = [
            FeatureDefinition(name: "conv_rate", type: .float64), FeatureDefinition(name: "acc_rate", type: .float64),
            FeatureDefinition(name: "avg_daily_trips", type: .int64),
        ]
        let repository = FeatureRepository(
            config: RepositoryConfig(workspace: "bench"),
            entities: [EntityDefinition(name: "driver", joinKeys: [Column(name: "driver_id", type: .int64)])],
            sources: [
                SourceDefinition(
                    name: "driver_stats_files", connector: .file(connection: "local_files", paths: ["driver_hourly_stats.csv"]),
                    timestampField: "event_timestamp", createdTimestampField: "created", columns: columns),
                SourceDefinition(
                    name: "driver_stats_table", connector: .postgres(connection: "bench_db", relation: .table("public.driver_hourly_stats")),
                    timestampField: "event_timestamp", createdTimestampField: "created", columns: columns),
            ],
            featureViews: [
                FeatureViewDefinition(name: "driver_stats_csv", entities: ["driver"], source: "driver_stats_files", features: features, ttl: TimeSpan(seconds: 172_800)),
                FeatureViewDefinition(name: "driver_stats_pg", entities: ["driver"], source: "driver_stats_table", features: features, ttl: TimeSpan(seconds: 172_800)),
                FeatureViewDefinition(
                    name: "driver_windows_csv", entities: ["driver"], source: "driver_stats_files", features: [],
                    aggregations: [
                        AggregationDefinition(function: .mean, column: "conv_rate", windows: [TimeSpan(seconds: 3_600), TimeSpan(seconds: 86_400), TimeSpan(seconds: 604_800)]),
                        AggregationDefinition(function: .sum, column: "avg_daily_trips", windows: [TimeSpan(seconds: 86_400), TimeSpan(seconds: 604_800)]),
                    ],
                    slide: TimeSpan(seconds: 3_600), ttl: TimeSpan(seconds: 172_800)),
            ])
        let definitions = DefinitionCanonicalizer.canonicalize(repository).map {
            JobSpec.Definition(kind: $0.key.kind.rawValue, name: $0.key.name, version: 1, contentHash: $0.contentHash, definition: $0.spec)
        }
        let start = Date(timeIntervalSince1970: 1_735_689_600)
        let end = start.addingTimeInterval(Double(hours) * 3_600)
        func spec(_ view: String, online: Bool, offline: Bool) -> JobSpec {
            JobSpec(
                jobId: 1, kind: .materialize, workspace: "bench", featureView: view, version: 1, start: start, end: end,
                definitions: definitions, targets: .init(offline: offline, online: online), issuedAt: Date())
        }
        return (spec("driver_stats_csv", online: true, offline: false), spec("driver_stats_csv", online: true, offline: true),
                spec("driver_stats_pg", online: true, offline: true), spec("driver_windows_csv", online: true, offline: true))
    }
}

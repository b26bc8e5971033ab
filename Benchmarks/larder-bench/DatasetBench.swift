import DataPlane
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import NIOCore
import PostgresNIO
import Shared
import TestSupport

/// Training datasets built in process, as the agent builds them: the
/// driver-stats offline table (drivers × 720 hours) and a customer view,
/// against entity tables of random labelled events.
extension LarderBench {
    /// The workspace the bench's views are materialized and read in.
    static let workspace = "driver-stats"

    static func datasets(driverCounts: [Int], entityRows: [Int], runs: Int) async throws {
        var logger = Logger(label: "larder-bench")
        if ProcessInfo.processInfo.environment["LARDER_BENCH_DEBUG"] != nil { logger.logLevel = .debug }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-bench-datasets-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let reader = try scaffoldReader(folder: folder)
        let customers = 100_000
        for drivers in driverCounts {
            try await TestDatabase.withIsolatedDatabase { database in
                let connection = try await database.connect(logger: logger)
                let started = ContinuousClock.now
                // The source tables, then the offline tables written from them by the agent's materialization,
                // one job per day as a daily schedule runs them (the rows and their segments).
                for statement in [
                    """
                    CREATE TABLE public.driver_stats_source AS
                    SELECT (1000 + d)::bigint AS driver_id, t AS event_timestamp, t AS created,
                           round(random()::numeric, 6)::float8 AS conv_rate, round(random()::numeric, 6)::float8 AS acc_rate,
                           floor(random() * 40)::bigint AS avg_daily_trips
                    FROM generate_series(0, 719) AS h, generate_series(0, \(drivers - 1)) AS d,
                         LATERAL (SELECT timestamptz '2025-01-01T00:00:00Z' + h * interval '1 hour' AS t) AS times
                    ORDER BY h, d
                    """,
                    """
                    CREATE TABLE public.customer_trips_source AS
                    SELECT 'c' || (i % \(customers)) AS customer_id, t AS event_timestamp,
                           round((random() * 5)::numeric, 3)::float8 AS fare_per_km, (1 + floor(random() * 5))::integer AS rating
                    FROM generate_series(0, \(customers * 10 - 1)) AS i,
                         LATERAL (SELECT timestamptz '2025-01-01T00:00:00Z' + (i::float8 / \(customers * 10)) * interval '30 days' AS t) AS times
                    """,
                    "CREATE INDEX ON public.driver_stats_source (event_timestamp)",
                    "CREATE INDEX ON public.customer_trips_source (event_timestamp)",
                    "ANALYZE",
                ] {
                    try await connection.execute(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                let generated = ContinuousClock.now - started
                try await materializeDatasetTables(into: database, folder: folder, logger: logger)
                for view in ["driver_hourly_stats", "customer_trip_stats"] {
                    // The offline table's name, `<workspace>__<view>__v<version>` (short enough to be kept whole).
                    try await connection.execute(PostgresQuery(unsafeSQL: "VACUUM ANALYZE larder_offline.\"\(workspace)__\(view)__v1\""), logger: logger)
                }
                try await connection.close()
                let materialized = ContinuousClock.now - started - generated
                // Each size is built five ways, runs alternating, so the rows compare within one run: scanning the
                // segments with candidates matched as they stream in, the segments read whole, then matched, and the
                // tables' rows (as for tables without segments), matched as they stream in; looking each (entity, time)
                // up in the tables' lookup indexes; and the agent's default, which picks one of the two per view.
                var automatic = TrainingDatasetBuilder(reader: reader, offlineStore: (schema: "larder_offline", url: database), logger: logger)
                automatic.createsLookupIndexes = false
                var streaming = automatic, whole = automatic, rowWise = automatic, lookup = automatic
                streaming.readPlan = .scan
                whole.readPlan = .scan
                rowWise.readPlan = .scan
                whole.matchWhileReading = false
                rowWise.readsSegments = false
                lookup.readPlan = .lookup
                // LARDER_BENCH_PLANS (such as `scan,lookup`) keeps the ways of those plans only.
                let plans = ProcessInfo.processInfo.environment["LARDER_BENCH_PLANS"].map { Set($0.split(separator: ",").map(String.init)) }
                let ways = [
                    ("scan | segments | streamed", streaming), ("scan | segments | whole table", whole), ("scan | rows | streamed", rowWise),
                    ("lookup | index | whole", lookup), ("automatic (lookup when entity rows × \(automatic.lookupCost) < rows scanned) | |", automatic),
                ].filter { name, _ in plans?.contains(String(name.prefix { $0 != " " })) ?? true }
                // The lookup indexes, made once (as the agent makes them in the background when a dataset first wants one).
                let indexed = ContinuousClock.now
                let first = folder.appendingPathComponent("entities-index.csv")
                try writeEntities(rows: 10, drivers: drivers, customers: customers, to: first)
                let prepared = try await lookup.prepare(DatasetRequest(features: ["driver_hourly_stats", "customer_trip_stats"], entities: first))
                _ = try await lookup.writeCSV(prepared) { _ in }
                print("\n## training datasets: driver_hourly_stats \(drivers * 720) rows (\(drivers) drivers × 720 h), customer_trip_stats \(customers * 10) rows; sources generated in \(generated), materialized in \(materialized), lookup indexes made in \(ContinuousClock.now - indexed)")
                print("| entity rows | plan | read | match | runs | median | min | max | rows/s (median) | peak memory |")
                print("|---|---|---|---|---|---|---|---|---|---|")
                for rows in entityRows {
                    let file = folder.appendingPathComponent("entities-\(rows).csv")
                    try writeEntities(rows: rows, drivers: drivers, customers: customers, to: file)
                    var samples = Array(repeating: Samples(), count: ways.count), peaks = Array(repeating: 0, count: ways.count)
                    var bytes = Array(repeating: 0, count: ways.count)
                    for _ in 0..<runs {
                        for (way, (_, builder)) in ways.enumerated() {
                            // Memory freed by the previous run goes back to the system first, so each peak is this run's own.
                            returnFreedMemory()
                            resetPeakResident()
                            bytes[way] = 0
                            samples[way].add(try await measure {
                                let prepared = try await builder.prepare(DatasetRequest(features: ["driver_hourly_stats", "customer_trip_stats"], entities: file))
                                _ = try await builder.writeCSV(prepared) { bytes[way] += $0.readableBytes }
                            })
                            peaks[way] = max(peaks[way], peakResidentMiB())
                        }
                    }
                    for (way, (name, _)) in ways.enumerated() {
                        let median = samples[way].values.sorted()[samples[way].values.count / 2]
                        let seconds = Double(median.components.seconds) + Double(median.components.attoseconds) / 1e18
                        print(samples[way].row("\(rows) | \(name)") + String(format: " %.0f | %d MiB |", Double(rows) / seconds, peaks[way]))
                        precondition(bytes[way] > rows * 20, "the dataset has \(bytes[way]) bytes")
                    }
                    precondition(Set(bytes).count == 1, "the ways wrote \(bytes) bytes")
                }
            }
        }
    }

    /// Fills the offline tables of driver_hourly_stats and customer_trip_stats (as the scaffold repository
    /// defines them) from the source tables, with the agent's materialization: offline store only, one job
    /// per day of the 30.
    static func materializeDatasetTables(into database: PostgresURL, folder: URL, logger: Logger) async throws {
        let repository = FeatureRepository(
            config: RepositoryConfig(workspace: workspace),
            entities: [
                EntityDefinition(name: "driver", joinKeys: [Column(name: "driver_id", type: .int64)]),
                EntityDefinition(name: "customer", joinKeys: [Column(name: "customer_id", type: .string)]),
            ],
            sources: [
                SourceDefinition(
                    name: "driver_stats_table", connector: .postgres(connection: "bench_db", relation: .table("public.driver_stats_source")),
                    timestampField: "event_timestamp", createdTimestampField: "created", columns: [
                        Column(name: "driver_id", type: .int64), Column(name: "conv_rate", type: .float64), Column(name: "acc_rate", type: .float64),
                        Column(name: "avg_daily_trips", type: .int64),
                    ]),
                SourceDefinition(
                    name: "customer_trips_table", connector: .postgres(connection: "bench_db", relation: .table("public.customer_trips_source")),
                    timestampField: "event_timestamp", columns: [
                        Column(name: "customer_id", type: .string), Column(name: "fare_per_km", type: .float64), Column(name: "rating", type: .int32),
                    ]),
            ],
            featureViews: [
                FeatureViewDefinition(
                    name: "driver_hourly_stats", entities: ["driver"], source: "driver_stats_table",
                    features: [FeatureDefinition(name: "conv_rate", type: .float64), FeatureDefinition(name: "acc_rate", type: .float64),
                               FeatureDefinition(name: "avg_daily_trips", type: .int64)],
                    ttl: TimeSpan(seconds: 172_800)),
                FeatureViewDefinition(
                    name: "customer_trip_stats", entities: ["customer"], source: "customer_trips_table",
                    features: [FeatureDefinition(name: "fare_per_km", type: .float64), FeatureDefinition(name: "rating", type: .int32)],
                    ttl: TimeSpan(seconds: 2_592_000)),
            ])
        let definitions = DefinitionCanonicalizer.canonicalize(repository).map {
            JobSpec.Definition(kind: $0.key.kind.rawValue, name: $0.key.name, version: 1, contentHash: $0.contentHash, definition: $0.spec)
        }
        var configuration = AgentConfiguration(
            controlPlaneURL: "http://127.0.0.1:1", token: "unused", publicKey: SigningKeyPair.generate().publicKey,
            dataDirectory: folder.path, connections: ["bench_db": .postgres(database)],
            offlineStore: .init(connection: "bench_db", schema: "larder_offline"))
        configuration.concurrency = 1
        let store = try OnlineStore(directory: folder.appendingPathComponent("materialize-online").path)
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .warning)
        let executor = MaterializeExecutor(configuration: configuration, onlineStore: store, logger: quiet)
        let first = Date(timeIntervalSince1970: 1_735_689_600)
        for view in ["driver_hourly_stats", "customer_trip_stats"] {
            for day in 0..<30 {
                let spec = JobSpec(
                    jobId: Int64(day + 1), kind: .materialize, workspace: workspace, featureView: view, version: 1,
                    start: first.addingTimeInterval(Double(day) * 86_400), end: first.addingTimeInterval(Double(day + 1) * 86_400),
                    definitions: definitions, targets: .init(offline: true, online: false), issuedAt: Date())
                _ = try await executor.execute(spec, context: JobContext(attempt: 1, report: { _ in }))
            }
        }
    }

    /// glibc's `malloc_trim(0)` (not in Swift's Glibc module): gives freed heap pages back to the system.
    static func returnFreedMemory() {
        #if canImport(Glibc)
        typealias Trim = @convention(c) (Int) -> Int32
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") {
            _ = unsafeBitCast(symbol, to: Trim.self)(0)
        }
        #endif
    }

    /// A registry reader over the scaffold repository (driver_hourly_stats: 2-day TTL; customer_trip_stats: 30 days).
    static func scaffoldReader(folder: URL) throws -> OnlineFeatureReader {
        let loaded = RepositoryLoader.load(files: RepositoryScaffold.files.map { ($0.path, $0.contents) })
        let keys = SigningKeyPair.generate()
        let definitions = DefinitionCanonicalizer.canonicalize(loaded.repository).map {
            JobSpec.Definition(kind: $0.key.kind.rawValue, name: $0.key.name, version: 1, contentHash: $0.contentHash, definition: $0.spec)
        }
        let registry = RegistryCache(file: folder.appendingPathComponent("registry.json"), publicKey: keys.publicKey, logger: Logger(label: "bench"))
        try registry.install(
            try keys.sign(try AgentRegistrySnapshot(workspace: workspace, revision: 1, issuedAt: Date(), definitions: definitions).jsonValue()),
            workspace: workspace)
        return OnlineFeatureReader(store: try OnlineStore(directory: folder.appendingPathComponent("online").path), registry: registry)
    }

    /// Random labelled events over the data's 30 days and 2 days either side; 5% unknown drivers, 5% unknown customers.
    static func writeEntities(rows: Int, drivers: Int, customers: Int, to file: URL) throws {
        var random = SystemRandomNumberGenerator()
        var text = "driver_id,customer_id,event_timestamp,label\n"
        text.reserveCapacity(rows * 48)
        let start = 1_735_689_600 - 2 * 86_400, span = 34 * 86_400
        for _ in 0..<rows {
            let driver = Int.random(in: 0..<20, using: &random) == 0 ? 99_000_000 : 1_000 + Int.random(in: 0..<drivers, using: &random)
            let customer = Int.random(in: 0..<20, using: &random) == 0 ? "x" : "c\(Int.random(in: 0..<customers, using: &random))"
            let seconds = start + Int.random(in: 0..<span, using: &random)
            text += "\(driver),\(customer),\(RFC3339.format(Date(timeIntervalSince1970: Double(seconds)))),\(Int.random(in: 0...1, using: &random))\n"
        }
        try text.write(to: file, atomically: true, encoding: .utf8)
    }
}

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
                // The offline tables as materialization lays them out: rows in time order, a BRIN index on the event time.
                for statement in [
                    "CREATE SCHEMA larder_offline",
                    """
                    CREATE TABLE larder_offline.driver_hourly_stats__v1 AS
                    SELECT (1000 + d)::bigint AS driver_id, t AS event_timestamp, t AS created_timestamp,
                           round(random()::numeric, 6)::float8 AS conv_rate, round(random()::numeric, 6)::float8 AS acc_rate,
                           floor(random() * 40)::bigint AS avg_daily_trips
                    FROM generate_series(0, 719) AS h, generate_series(0, \(drivers - 1)) AS d,
                         LATERAL (SELECT timestamptz '2025-01-01T00:00:00Z' + h * interval '1 hour' AS t) AS times
                    ORDER BY h, d
                    """,
                    """
                    CREATE TABLE larder_offline.customer_trip_stats__v1 AS
                    SELECT 'c' || (i % \(customers)) AS customer_id, t AS event_timestamp, NULL::timestamptz AS created_timestamp,
                           round((random() * 5)::numeric, 3)::float8 AS fare_per_km, (1 + floor(random() * 5))::integer AS rating
                    FROM generate_series(0, \(customers * 10 - 1)) AS i,
                         LATERAL (SELECT timestamptz '2025-01-01T00:00:00Z' + (i::float8 / \(customers * 10)) * interval '30 days' AS t) AS times
                    """,
                    "CREATE INDEX ON larder_offline.driver_hourly_stats__v1 USING brin (event_timestamp)",
                    "CREATE INDEX ON larder_offline.customer_trip_stats__v1 USING brin (event_timestamp)",
                    "VACUUM ANALYZE larder_offline.driver_hourly_stats__v1",
                    "VACUUM ANALYZE larder_offline.customer_trip_stats__v1",
                ] {
                    try await connection.execute(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.close()
                print("\n## training datasets: driver_hourly_stats \(drivers * 720) rows (\(drivers) drivers × 720 h), customer_trip_stats \(customers * 10) rows; generated in \(ContinuousClock.now - started)")
                print("| entity rows | match | runs | median | min | max | rows/s (median) | peak memory |")
                print("|---|---|---|---|---|---|---|---|")
                // Each size is built both ways, runs alternating, so the two rows compare within one run:
                // candidates matched as they stream in (the default), and the whole table read, then matched.
                var streaming = TrainingDatasetBuilder(reader: reader, offlineStore: (schema: "larder_offline", url: database), logger: logger)
                var whole = streaming
                streaming.matchWhileReading = true
                whole.matchWhileReading = false
                for rows in entityRows {
                    let file = folder.appendingPathComponent("entities-\(rows).csv")
                    try writeEntities(rows: rows, drivers: drivers, customers: customers, to: file)
                    var samples = [Samples(), Samples()], peaks = [0, 0], bytes = [0, 0]
                    for _ in 0..<runs {
                        for (way, builder) in [streaming, whole].enumerated() {
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
                    for (way, name) in ["streamed", "whole table"].enumerated() {
                        let median = samples[way].values.sorted()[samples[way].values.count / 2]
                        let seconds = Double(median.components.seconds) + Double(median.components.attoseconds) / 1e18
                        print(samples[way].row("\(rows) | \(name)") + String(format: " %.0f | %d MiB |", Double(rows) / seconds, peaks[way]))
                        precondition(bytes[way] > rows * 20, "the dataset has \(bytes[way]) bytes")
                    }
                    precondition(bytes[0] == bytes[1], "the two ways wrote \(bytes[0]) and \(bytes[1]) bytes")
                }
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
            try keys.sign(try AgentRegistrySnapshot(workspace: "driver-stats", revision: 1, issuedAt: Date(), definitions: definitions).jsonValue()),
            workspace: "driver-stats")
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

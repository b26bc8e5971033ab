import DataPlane
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Shared
import TestSupport

/// `larder-bench redis`: the Redis online store beside the embedded one, in
/// one run, against a redis-server started on 127.0.0.1 (Debian's):
///
/// - materialization: rows written newest-wins into each backend, in jobs'
///   batches of 16,384, by one writer and by two at once (two agents);
/// - serving over HTTP: `serve-features` children reading from each backend,
///   loaded by larder-bench's generator — open loop at 5,000 requests/s and
///   closed loop at 8 and 32 connections, for 1 and 10 entities per request.
extension LarderBench {
    static func redis(entities: Int, rows: Int, seconds: Int) async throws {
        try await TestRedis.withServer { port in
            print("\n## Redis online store (redis-server on 127.0.0.1:\(port))")
            try await redisMaterialization(port: port, rows: rows, entities: entities)
            try await redisServing(port: port, entities: entities, seconds: seconds)
        }
    }

    static func redisMaterialization(port: Int, rows: Int, entities: Int) async throws {
        let features = [Column(name: "conv_rate", type: .float64), Column(name: "acc_rate", type: .float64), Column(name: "avg_daily_trips", type: .int64)]
        let schema = OnlineTableSchema(
            view: "bench_materialize", version: 1, keys: [Column(name: "driver_id", type: .int64)], features: features, ttlSeconds: 2 * 86_400)
        var random = SystemRandomNumberGenerator()
        let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
        let batchSize = 16_384
        let batches: [OnlineRows] = stride(from: 0, to: rows, by: batchSize).map { start in
            let count = min(batchSize, rows - start)
            return OnlineRows(
                keys: (0..<count).map { _ in .int(Int64.random(in: 0..<Int64(entities), using: &random)) },
                eventTimes: (0..<count).map { _ in now - Int64.random(in: 0...3_600_000_000, using: &random) },
                createdTimes: Array(repeating: now, count: count),
                features: ServingWorld.randomColumns(features, count: count, using: &random))
        }
        print("\n| materialization into the online store (\(rows) rows, batches of \(batchSize), \(entities) entities) | writers | seconds | rows/s |")
        print("|---|---|---|---|")
        func row(_ what: String, _ writers: Int, _ elapsed: Duration) {
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print("| \(what) | \(writers) | \(String(format: "%.2f", seconds)) | \(String(format: "%.0f", Double(rows) / seconds)) |")
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-redis-bench-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let table = try OnlineStore(directory: folder.path).table(for: schema)
        let clock = ContinuousClock()
        var started = clock.now
        for batch in batches {
            try table.upsert(batch)
            try table.sync()
        }
        row("embedded (memory + log, synced per batch)", 1, clock.now - started)
        for writers in [1, 2] {
            var versioned = schema
            versioned.version = 1 + writers
            let stores = try (0..<writers).map { _ in
                try RedisOnlineStore(settings: RedisSettings(endpoints: [RedisEndpoint(host: "127.0.0.1", port: port)]), logger: Logger(label: "bench"))
            }
            _ = try await stores[0].upsert(batches[0], schema: versioned, now: now)   // connects and loads the script
            started = clock.now
            let target = versioned
            try await withThrowingTaskGroup(of: Void.self) { group in
                for writer in 0..<writers {
                    let store = stores[writer], share = stride(from: writer, to: batches.count, by: writers).map { batches[$0] }
                    group.addTask { for batch in share { _ = try await store.upsert(batch, schema: target, now: now) } }
                }
                try await group.waitForAll()
            }
            row(writers == 1 ? "Redis (newest-wins script, one agent)" : "Redis (newest-wins script, two agents at once)", writers, clock.now - started)
            for store in stores { await store.close() }
        }
    }

    static func redisServing(port: Int, entities: Int, seconds: Int) async throws {
        print("\n| serving over HTTP (larder-bench's generator, \(seconds) s each, 1 s warm-up; \(entities) entities) | backend | entities per request | arrivals | connections | requests/s | p50 | p99 | p99.9 | max | errors |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for (backend, redis) in [("embedded", nil), ("Redis", Optional(port))] as [(String, Int?)] {
            // A `serve-features` child reading from the embedded store, or from the Redis at `port`.
            let (child, url, token) = try startServingChild(entities: entities, options: redis.map { ["redis=\($0)"] } ?? [])
            defer {
                child.terminate()
                child.waitUntilExit()
            }
            let serverPort = Int(url.split(separator: ":").last ?? "") ?? 0
            for batch in [1, 10] {
                let requests = featureRequests(entities: entities, batch: batch, token: token)
                func run(_ arrivals: LoadGenerator.Arrivals, connections: Int) throws -> LoadResult {
                    try LoadGenerator(
                        host: "127.0.0.1", port: serverPort, connections: connections, arrivals: arrivals, seconds: Double(seconds), requests: requests
                    ).run()
                }
                func row(_ arrivals: String, _ connections: Int, _ result: LoadResult) {
                    func ms(_ micros: Double) -> String { String(format: "%.2f ms", micros / 1_000) }
                    print("| | \(backend) | \(batch) | \(arrivals) | \(connections) | \(String(format: "%.0f", result.rate)) | \(ms(result.p50)) | \(ms(result.p99)) | \(ms(result.p999)) | \(ms(result.max)) | \(result.errors) |")
                }
                _ = try LoadGenerator(host: "127.0.0.1", port: serverPort, connections: 4, arrivals: .closedLoop, seconds: 1, requests: requests).run()
                row("evenly 5000/s", 16, try run(.constant(perSecond: 5_000), connections: 16))
                row("Poisson 5000/s", 16, try run(.poisson(perSecond: 5_000), connections: 16))
                for connections in [8, 32] {
                    row("closed loop", connections, try run(.closedLoop, connections: connections))
                }
            }
            print("| | (\(backend) server process peak memory: \(peakResidentMiB(process: "\(child.processIdentifier)")) MiB) | | | | | | | | | |")
        }
    }

    /// Copies the serving world's tables into the Redis at `port` and publishes them; the reader over it.
    static func redisReader(_ world: ServingWorld, port: Int) async throws -> OnlineFeatureReader {
        let redis = try RedisOnlineStore(settings: RedisSettings(endpoints: [RedisEndpoint(host: "127.0.0.1", port: port)]), logger: Logger(label: "bench"))
        let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
        for schema in world.store.schemas {
            guard let table = world.store.table(view: schema.view, version: schema.version) else { continue }
            try await redis.upsert(table, now: now)
            try await redis.publish(schema)
        }
        return OnlineFeatureReader(backend: .redis(redis, staging: world.store), registry: world.registry)
    }
}

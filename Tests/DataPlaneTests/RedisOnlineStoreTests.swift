@testable import DataPlane
import Foundation
import Logging
import NIOCore
import Shared
import Testing
import TestSupport

/// Where the store under test runs: one server, or a three-master Cluster.
enum RedisDeployment: String, CaseIterable, CustomTestStringConvertible {
    case standalone, cluster
    var testDescription: String { rawValue }

    /// Runs `body` with the addresses of a new deployment of this kind.
    func with<Result>(_ body: ([RedisEndpoint]) async throws -> Result) async throws -> Result {
        switch self {
        case .standalone: return try await TestRedis.withServer { try await body([RedisEndpoint(host: "127.0.0.1", port: $0)]) }
        case .cluster: return try await TestRedis.withCluster { try await body($0.map { RedisEndpoint(host: "127.0.0.1", port: $0) }) }
        }
    }
}

@Suite("Redis online store (real redis-server, standalone and Cluster)")
struct RedisOnlineStoreTests {
    static let schema = OnlineTableSchema(
        view: "driver_hourly_stats", version: 1, keys: [Column(name: "driver_id", type: .int64)],
        features: [Column(name: "conv_rate", type: .float64), Column(name: "trips", type: .int64), Column(name: "city", type: .string),
                   Column(name: "active", type: .bool), Column(name: "seen", type: .timestamp)],
        ttlSeconds: nil)

    static func store(_ endpoints: [RedisEndpoint], prefix: String = "larder") throws -> RedisOnlineStore {
        try RedisOnlineStore(settings: RedisSettings(endpoints: endpoints, keyPrefix: prefix), logger: Logger(label: "test"))
    }

    /// Random rows over `entities` drivers, times in a small range (so equal times happen), some negative, some nulls.
    static func rows(_ count: Int, entities: Int, using random: inout SeededGenerator) -> OnlineRows {
        var keys: [EntityKey] = [], events: [Int64] = [], created: [Int64] = []
        var conv: [Double?] = [], trips: [Int64?] = [], city: [String?] = [], active: [Bool?] = [], seen: [Int64?] = []
        for _ in 0..<count {
            keys.append(.int(Int64.random(in: 0..<Int64(entities), using: &random)))
            events.append(Int64.random(in: -5...20, using: &random) * 3_600_000_000)
            created.append(Int64.random(in: 0...3, using: &random))
            conv.append(Bool.random(using: &random) ? Double.random(in: -1...1, using: &random) : nil)
            trips.append(Int64.random(in: Int64.min...Int64.max, using: &random))
            city.append(["", "Zürich", "São Paulo", "a{b}c", nil].randomElement(using: &random)!)
            active.append([true, false, nil].randomElement(using: &random)!)
            seen.append(Bool.random(using: &random) ? Int64.random(in: -1_000_000...1_000_000, using: &random) : nil)
        }
        return OnlineRows(
            keys: keys, eventTimes: events, createdTimes: created,
            features: [.float64(conv), .int64(trips), .string(city), .bool(active), .timestamp(seen)])
    }

    static func slice(_ rows: OnlineRows, _ range: Range<Int>) -> OnlineRows {
        func cut(_ column: ColumnValues) -> ColumnValues {
            switch column {
            case .int64(let values): return .int64(Array(values[range]))
            case .float64(let values): return .float64(Array(values[range]))
            case .bool(let values): return .bool(Array(values[range]))
            case .string(let values): return .string(Array(values[range]))
            case .timestamp(let values): return .timestamp(Array(values[range]))
            }
        }
        return OnlineRows(
            keys: Array(rows.keys[range]), eventTimes: Array(rows.eventTimes[range]), createdTimes: Array(rows.createdTimes[range]),
            features: rows.features.map(cut))
    }

    @Test("the key slot is the one the Cluster computes (CLUSTER KEYSLOT), hash tags included")
    func slots() async throws {
        try await TestRedis.withCluster { ports in
            let redis = try await RedisConnection.connect(host: "127.0.0.1", port: ports[0])
            var random = SeededGenerator(seed: 7)
            let codec = RedisRowCodec(prefix: "larder")
            for round in 0..<200 {
                let key: [UInt8]
                if round % 2 == 0 {
                    key = (0..<Int.random(in: 0...24, using: &random)).map { _ in [UInt8(ascii: "{"), UInt8(ascii: "}"), UInt8.random(in: 0...255, using: &random)].randomElement(using: &random)! }
                } else {
                    let (built, _) = codec.key(view: "v\(round)", version: round, entity: .int(Int64.random(in: .min ... .max, using: &random)))
                    key = Array(built.readableBytesView)
                }
                var buffer = ByteBuffer()
                buffer.writeBytes(key)
                let answer = try await redis.send(["CLUSTER", "KEYSLOT", .bytes(buffer)])
                #expect(answer == .integer(Int64(RedisSlot.of(key))), "\(key)")
            }
            try await redis.close()
        }
    }

    @Test("newest wins on the server: rows written in random order by two agents at once end as the embedded store would keep them",
          arguments: RedisDeployment.allCases)
    func newestWins(deployment: RedisDeployment) async throws {
        try await deployment.with { endpoints in
            var random = SeededGenerator(seed: deployment == .standalone ? 11 : 12)
            let rows = Self.rows(6_000, entities: 700, using: &random)
            // The embedded store, fed the same rows in order, is the reference.
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("redis-ref-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: folder) }
            let reference = try OnlineStore(directory: folder.path).table(for: Self.schema)
            try reference.upsert(rows)
            // Two agents (two stores, two clients) write interleaved slices of the rows concurrently.
            let agents = try [Self.store(endpoints), Self.store(endpoints)]
            var slices: [Range<Int>] = []
            var start = 0
            while start < rows.count {
                let end = min(rows.count, start + Int.random(in: 1...900, using: &random))
                slices.append(start..<end)
                start = end
            }
            slices.shuffle(using: &random)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, range) in slices.enumerated() {
                    let agent = agents[index % 2], part = Self.slice(rows, range)
                    group.addTask { _ = try await agent.upsert(part, schema: Self.schema, now: 0) }
                }
                try await group.waitForAll()
            }
            let newest = try await Self.expectSame(agents, as: reference, rows: rows, entities: 700)
            // Written again (a retried chunk), nothing changes.
            _ = try await agents[0].upsert(rows, schema: Self.schema, now: 0)
            for entity in stride(from: 0, to: 700, by: 7) where newest[.int(Int64(entity))].map({ $0.rows == 1 }) ?? true {
                let key = EntityKey.int(Int64(entity))
                #expect(try await agents[1].lookup(key, schema: Self.schema, now: 0) == reference.lookup(key, now: 0))
            }
            for agent in agents { await agent.close() }
        }
    }

    /// Expects every entity below `entities` to read from `stores` (by turns) as from `reference`;
    /// where rows tied on (event time, created time) may have landed in either order, only the times.
    /// Returns each entity's newest order and how many rows hold it.
    @discardableResult
    static func expectSame(_ stores: [RedisOnlineStore], as reference: OnlineTable, rows: OnlineRows, entities: Int) async throws
        -> [EntityKey: (order: [Int64], rows: Int)] {
        var newest: [EntityKey: (order: [Int64], rows: Int)] = [:]
        for row in 0..<rows.count {
            let order = [rows.eventTimes[row], rows.createdTimes[row]]
            let held = newest[rows.keys[row]]
            if held == nil || held!.order.lexicographicallyPrecedes(order) { newest[rows.keys[row]] = (order, 1) } else if held!.order == order { newest[rows.keys[row]]!.rows += 1 }
        }
        for entity in 0..<entities {
            let key = EntityKey.int(Int64(entity))
            let stored = try await stores[entity % stores.count].lookup(key, schema: schema, now: 0), expected = reference.lookup(key, now: 0)
            if newest[key].map({ $0.rows > 1 }) == true, case .present(let a) = stored, case .present(let b) = expected {
                #expect(a.eventTime == b.eventTime && a.createdTime == b.createdTime, "driver \(entity)")
            } else {
                #expect(stored == expected, "driver \(entity)")
            }
        }
        return newest
    }

    @Test("a job's write buffer leaves Redis as writing every row would: newest per entity, flushed as it fills, never over a newer value")
    func writeBuffer() async throws {
        try await TestRedis.withServer { port in
            var random = SeededGenerator(seed: 29)
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("redis-buffer-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: folder) }
            let staging = try OnlineStore(directory: folder.appendingPathComponent("staging").path)
            let reference = try OnlineStore(directory: folder.appendingPathComponent("reference").path).table(for: Self.schema)
            let store = try Self.store([RedisEndpoint(host: "127.0.0.1", port: port)]), other = try Self.store([RedisEndpoint(host: "127.0.0.1", port: port)])
            // Another agent already wrote some entities, some newer than anything the job holds.
            var earlier = Self.rows(400, entities: 700, using: &random)
            for row in stride(from: 0, to: earlier.count, by: 3) { earlier.eventTimes[row] += 30 * 3_600_000_000 }
            try await other.upsert(earlier, schema: Self.schema, now: 0)
            try reference.upsert(earlier)
            // The job: many rows per entity, in random order, through a buffer flushing every 97 entities.
            let rows = Self.rows(9_000, entities: 700, using: &random)
            let buffer = try RedisWriteBuffer(redis: store, staging: staging, schema: Self.schema, job: 7, now: 0, limit: 97)
            var start = 0
            while start < rows.count {
                let end = min(rows.count, start + Int.random(in: 1...500, using: &random))
                try await buffer.add(Self.slice(rows, start..<end))
                start = end
            }
            try await buffer.flush()
            buffer.discard()
            try reference.upsert(rows)
            var all = earlier
            all.keys += rows.keys
            all.eventTimes += rows.eventTimes
            all.createdTimes += rows.createdTimes
            try await Self.expectSame([store, other], as: reference, rows: all, entities: 700)
            // Nothing of the buffer is left on disk.
            let left = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("staging").path)
                .flatMap { name -> [String] in
                    let path = folder.appendingPathComponent("staging").appendingPathComponent(name).path
                    var directory: ObjCBool = false
                    FileManager.default.fileExists(atPath: path, isDirectory: &directory)
                    return directory.boolValue ? try FileManager.default.contentsOfDirectory(atPath: path) : []
                }
            #expect(left.isEmpty, "left: \(left)")
            await store.close()
            await other.close()
        }
    }

    @Test("serving reads a version once published; until then the older one; TTLs judged at read time; keys expire after their TTL",
          arguments: RedisDeployment.allCases)
    func versionsAndTTL(deployment: RedisDeployment) async throws {
        try await deployment.with { endpoints in
            let store = try Self.store(endpoints, prefix: "larder:rides:prod")
            var schema = Self.schema
            schema.ttlSeconds = 3_600
            let hour: Int64 = 3_600_000_000
            let now = Int64(Date().timeIntervalSince1970) * 1_000_000   // real time: Redis expires keys by its own clock
            func rows(_ value: Double, event: Int64) -> OnlineRows {
                OnlineRows(
                    keys: (0..<50).map { .int($0) }, eventTimes: Array(repeating: event, count: 50), createdTimes: Array(repeating: 0, count: 50),
                    features: [.float64(Array(repeating: value, count: 50)), .int64(Array(repeating: 1, count: 50)),
                               .string(Array(repeating: "x", count: 50)), .bool(Array(repeating: true, count: 50)), .timestamp(Array(repeating: nil, count: 50))])
            }
            let request = RedisOnlineStore.ViewRead(
                view: schema.view, version: 2, keys: (0..<60).map { .int($0) }, reads: [(feature: "conv_rate", type: .float64, column: 0)])
            func read() async throws -> FeatureGrid {
                var grid = FeatureGrid(entities: 60, width: 1)
                try await store.read([request], now: now, into: &grid)
                return grid
            }
            // Written but not published: nothing served.
            #expect(try await store.upsert(rows(0.25, event: now - hour / 2), schema: schema, now: now) == 50)
            #expect(try await read().statuses.allSatisfy { $0 == .notFound })
            try await store.publish(schema)
            _ = try await store.fetchVersions()
            var grid = try await read()
            #expect(grid[0, 0].value == .double(0.25) && grid[49, 0].status == .present && grid[50, 0].status == .notFound)
            // Version 2 written, not yet published: version 1 is still served; once published, version 2.
            var second = schema
            second.version = 2
            _ = try await store.upsert(rows(0.75, event: now - 3 * hour / 2), schema: second, now: now)
            _ = try await store.fetchVersions()
            #expect(try await read()[0, 0].value == .double(0.25))
            try await store.publish(second)
            _ = try await store.fetchVersions()
            grid = try await read()
            // Older than the TTL at read time: expired, with its event time.
            #expect(grid[0, 0].status == .expired && grid[0, 0].eventTime == now - 3 * hour / 2)
            // A version published before the newest one never moves the pointer back.
            try await store.publish(schema)
            #expect(try await store.fetchVersions()[schema.view] == 2)
            // Keys carry an expiry of event time + TTL + grace, and no sooner than the grace after they were written.
            let (key, slot) = store.codec.key(view: schema.view, version: 2, entity: .int(0))
            guard case .integer(let expiry) = try await store.client.send(["PEXPIRETIME", .bytes(key)], slot: slot) else {
                Issue.record("no PEXPIRETIME answer")
                return
            }
            #expect(expiry == max((now - 3 * hour / 2) / 1_000 + (3_600 + RedisOnlineStore.expiryGrace) * 1_000, now / 1_000 + RedisOnlineStore.expiryGrace * 1_000))
            var third = schema
            third.version = 3
            #expect(try await store.upsert(rows(0.5, event: now - 30 * hour), schema: third, now: now) == 50)
            let (old, oldSlot) = store.codec.key(view: schema.view, version: 3, entity: .int(0))
            #expect(try await store.client.send(["PEXPIRETIME", .bytes(old)], slot: oldSlot) == .integer(now / 1_000 + RedisOnlineStore.expiryGrace * 1_000))
            await store.close()
        }
    }

    @Test("resharding under the store: a slot migrating (ASK) and moved (MOVED) while reads and writes go on — nothing fails, nothing is lost")
    func resharding() async throws {
        try await TestRedis.withCluster { ports in
            let endpoints = ports.map { RedisEndpoint(host: "127.0.0.1", port: $0) }
            let store = try Self.store([endpoints[0]])   // one seed: the rest is learnt from the Cluster
            var random = SeededGenerator(seed: 5)
            // Each entity once: about twenty keys per bucket, so a slot has several to migrate.
            var rows = Self.rows(20_000, entities: 20_000, using: &random)
            rows.keys = (0..<20_000).map { .int(Int64($0)) }
            _ = try await store.upsert(rows, schema: Self.schema, now: 0)
            // The slot of driver 42's bucket, its owner and another node.
            let (_, slot) = store.codec.key(view: Self.schema.view, version: 1, entity: .int(42))
            func nodeID(_ port: Int) async throws -> String { try await TestRedis.command(port, ["CLUSTER", "MYID"]).string ?? "" }
            func migrate(_ key: RESPValue, from source: Int, to destination: Int) async throws {
                guard case .bulkString(let bytes?) = key else { return }
                let answer = try await TestRedis.command(source, ["MIGRATE", "127.0.0.1", .text("\(destination)"), .bytes(bytes), "0", "5000"])
                #expect(answer == .simpleString("OK"), "\(answer)")
            }
            var owner = 0
            for (index, port) in ports.enumerated() where try await TestRedis.command(port, ["CLUSTER", "COUNTKEYSINSLOT", .text("\(slot)")]) != .integer(0) {
                owner = index
            }
            let target = (owner + 1) % 3
            let (source, destination) = (ports[owner], ports[target])
            try await TestRedis.command(destination, ["CLUSTER", "SETSLOT", .text("\(slot)"), "IMPORTING", .text(try await nodeID(source))])
            try await TestRedis.command(source, ["CLUSTER", "SETSLOT", .text("\(slot)"), "MIGRATING", .text(try await nodeID(destination))])
            // Move about half of the slot's keys: reads of those are answered with ASK.
            guard case .array(let keys?) = try await TestRedis.command(source, ["CLUSTER", "GETKEYSINSLOT", .text("\(slot)"), "1000"]) else {
                Issue.record("no keys in the slot")
                return
            }
            #expect(keys.count > 1)
            for moved in keys.prefix(keys.count / 2) { try await migrate(moved, from: source, to: destination) }
            let reference = try OnlineStore(directory: FileManager.default.temporaryDirectory.appendingPathComponent("ref-\(UUID())").path)
                .table(for: Self.schema)
            try reference.upsert(rows)
            for entity in 0..<20_000 where entity % 7 == 0 || entity == 42 {
                #expect(try await store.lookup(.int(Int64(entity)), schema: Self.schema, now: 0) == reference.lookup(.int(Int64(entity)), now: 0))
            }
            let asked = store.client.redirections.load(ordering: .relaxed)
            #expect(asked > 0, "no read of a migrated key was redirected")
            // The rest moved, the slot given to the destination everywhere: the store's map is stale, MOVED puts it right.
            for moved in keys.dropFirst(keys.count / 2) { try await migrate(moved, from: source, to: destination) }
            let destinationID = try await nodeID(destination)
            for port in ports { try await TestRedis.command(port, ["CLUSTER", "SETSLOT", .text("\(slot)"), "NODE", .text(destinationID)]) }
            var newer = Self.slice(rows, 0..<20_000)
            newer.eventTimes = newer.eventTimes.map { $0 + 100 * 3_600_000_000 }
            #expect(try await store.upsert(newer, schema: Self.schema, now: 0) == 20_000)
            try reference.upsert(newer)
            for entity in 0..<20_000 where entity % 11 == 0 || entity == 42 {
                #expect(try await store.lookup(.int(Int64(entity)), schema: Self.schema, now: 0) == reference.lookup(.int(Int64(entity)), now: 0))
            }
            #expect(store.client.redirections.load(ordering: .relaxed) > asked, "the moved slot's writes were not redirected")
            await store.close()
        }
    }

    @Test("a server that is down: calls fail with a clear error within the timeout, and work again once it is back")
    func unreachable() async throws {
        let port = try TestRedis.freePort()
        let store = try RedisOnlineStore(
            settings: RedisSettings(endpoints: [RedisEndpoint(host: "127.0.0.1", port: port)], timeout: .milliseconds(500)), logger: Logger(label: "test"))
        let started = ContinuousClock.now
        await #expect(throws: RedisError.self) { _ = try await store.lookup(.int(1), schema: Self.schema, now: 0) }
        #expect(ContinuousClock.now - started < .seconds(30), "the call must fail, not hang")
        try await TestRedis.withServer(port: port) { _ in
            // The store's next calls connect again.
            var answered = false
            for _ in 0..<50 where !answered {
                answered = (try? await store.lookup(.int(1), schema: Self.schema, now: 0)) == .notFound
                if !answered { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(answered)
        }
        await store.close()
    }
}

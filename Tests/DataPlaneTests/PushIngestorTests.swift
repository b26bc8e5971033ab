import DataPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

/// Pushes to an agent, in process: random pushes with retried idempotency
/// keys and late events, against a brute-force computation of every value.
@Suite("Push ingestion against a model")
struct PushIngestorTests {
    struct World {
        let folder: URL
        let store: OnlineStore
        let reader: OnlineFeatureReader
        let registry: RegistryCache
        let keys: SigningKeyPair

        /// The offline store pushes append to, if any.
        let offline: (schema: String, url: PostgresURL)?

        /// Without an offline store, the views keep none.
        static let onlineOnlyPushes = RepositoryFixture.pushes
            .replacingOccurrences(of: "ttl: 1h\n", with: "ttl: 1h\noffline: false\n")
            .replacingOccurrences(of: "slide: 10m\n", with: "slide: 10m\noffline: false\n")

        init(offline: (schema: String, url: PostgresURL)? = nil) throws {
            self.offline = offline
            folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-push-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let pushes = offline == nil ? Self.onlineOnlyPushes : RepositoryFixture.pushes
            let files = RepositoryScaffold.files.map { ($0.path, $0.contents) } + [("pushes.yaml", pushes)]
            let loaded = RepositoryLoader.load(files: files)
            precondition(loaded.isValid, "\(loaded.diagnostics)")
            keys = SigningKeyPair.generate()
            let definitions = DefinitionCanonicalizer.canonicalize(loaded.repository).map {
                JobSpec.Definition(kind: $0.key.kind.rawValue, name: $0.key.name, version: 1, contentHash: $0.contentHash, definition: $0.spec)
            }
            registry = RegistryCache(file: folder.appendingPathComponent("registry.json"), publicKey: keys.publicKey, logger: Logger(label: "test"))
            try registry.install(
                try keys.sign(try AgentRegistrySnapshot(workspace: "rides", revision: 1, issuedAt: Date(), definitions: definitions).jsonValue()),
                workspace: "rides")
            store = try OnlineStore(directory: folder.appendingPathComponent("online").path)
            reader = OnlineFeatureReader(store: store, registry: registry)
        }

        func ingestor() throws -> PushIngestor {
            try PushIngestor(
                directory: folder.appendingPathComponent("push").path, store: store, reader: reader, metrics: AgentMetrics(), offlineStore: offline,
                logger: Logger(label: "test"))
        }

        /// The served cells of `drivers` for `features`.
        func read(_ features: [String], drivers: [Int64], now: Date) throws -> FeatureGrid {
            let resolved = try reader.resolve(references: features)
            let batch = try EntityBatch(OnlineFeatureRequest(entities: drivers.map { ["driver_id": .int($0)] }), for: resolved, limit: 1_000)
            return reader.read(resolved, batch: batch, now: Int64(now.timeIntervalSince1970 * 1_000_000))
        }
    }

    struct Event {
        var driver: Int64
        var time: Int64   // seconds
        var speed: Double?
        var lat: Double
    }

    static func body(_ events: [Event]) -> [UInt8] {
        let rows = events.map { event in
            #"{"driver_id":\#(event.driver),"event_timestamp":"\#(RFC3339.format(Date(timeIntervalSince1970: Double(event.time))))","lat":\#(event.lat),"lon":1.5,"speed":\#(event.speed.map { "\($0)" } ?? "null")}"#
        }
        return Array(#"{"rows":[\#(rows.joined(separator: ","))]}"#.utf8)
    }

    @Test("random pushes, retried keys, late events and restarts: plain views hold each driver's newest row, windows equal a brute-force count and mean at the last boundary",
          arguments: Array(1...10) as [UInt64])
    func matchesModel(seed: UInt64) async throws {
        var random = SeededGenerator(seed: seed)
        let world = try World()
        defer { try? FileManager.default.removeItem(at: world.folder) }
        var ingestor = try world.ingestor()
        let start: Int64 = 1_800_000_000 - 1_800_000_000 % 600   // a 10-minute boundary
        var clock = start
        var accepted: [Event] = []
        var keys: [String: [Event]] = [:]
        for step in 0..<30 {
            clock += Int64.random(in: 0...400, using: &random)
            let now = Date(timeIntervalSince1970: Double(clock))
            if Int.random(in: 0..<8, using: &random) == 0 {
                ingestor = try world.ingestor()   // a restart: the journal is replayed
            }
            // A retry of an earlier key, or a new push (some events late, some ahead of the clock by a few seconds).
            if let (key, _) = keys.randomElement(using: &random), Bool.random(using: &random) {
                let receipt = try await ingestor.push(source: "driver_pings", body: Self.body(keys[key]!), key: key, now: now)
                #expect(receipt.duplicate, "step \(step)")
            } else {
                let events = (0..<Int.random(in: 1...6, using: &random)).map { _ in
                    Event(driver: Int64.random(in: 1...5, using: &random), time: clock - Int64.random(in: -5...5_000, using: &random),
                          speed: Int.random(in: 0..<5, using: &random) == 0 ? nil : Double(Int.random(in: 0...120, using: &random)),
                          lat: Double(Int.random(in: 0...90_000, using: &random)) / 1_000)
                }
                let key: String? = Bool.random(using: &random) ? "k\(step)" : nil
                let receipt = try await ingestor.push(source: "driver_pings", body: Self.body(events), key: key, now: now)
                #expect(!receipt.duplicate && receipt.rows == events.count && receipt.views == ["driver_position", "driver_speed"])
                accepted += events
                if let key { keys[key] = events }
            }
            try await ingestor.tick(now: now)

            let drivers: [Int64] = [1, 2, 3, 4, 5, 6]
            let grid = try world.read(["driver_position:lat", "driver_speed"], drivers: drivers, now: now)
            let boundary = clock - clock % 600
            for (row, driver) in drivers.enumerated() {
                let mine = accepted.filter { $0.driver == driver }
                // Plain view: the newest event wins (ties: the later push, as the created time is when it arrived).
                let newest = mine.enumerated().max { ($0.element.time, $0.offset) < ($1.element.time, $1.offset) }?.element
                let lat = grid[row, 0]
                if let newest {
                    let expired = newest.time * 1_000_000 < clock * 1_000_000 - 3_600 * 1_000_000
                    #expect(lat.status == (expired ? .expired : .present) && lat.eventTime == newest.time * 1_000_000, "seed \(seed) step \(step) driver \(driver)")
                    if !expired { #expect(lat.value == .double(newest.lat)) }
                } else {
                    #expect(lat.status == .notFound)
                }
                // Windows at the last boundary: [b - w, b).
                func window(_ seconds: Int64) -> [Double] { mine.filter { $0.time >= boundary - seconds && $0.time < boundary }.compactMap(\.speed) }
                let count10m = grid[row, 1], count1h = grid[row, 2], mean1h = grid[row, 3]
                if mine.isEmpty || (count10m.status == .notFound && window(3_600).isEmpty) {
                    continue   // never written, or nothing in any window yet
                }
                #expect(count10m.value == .int(Int64(window(600).count)), "seed \(seed) step \(step) driver \(driver)")
                #expect(count1h.value == .int(Int64(window(3_600).count)), "seed \(seed) step \(step) driver \(driver)")
                let speeds = window(3_600)
                if speeds.isEmpty {
                    #expect(mean1h.value == .null)
                } else if case .double(let mean) = mean1h.value {
                    #expect(abs(mean - speeds.reduce(0, +) / Double(speeds.count)) < 1e-9)
                } else {
                    Issue.record("seed \(seed) step \(step) driver \(driver): mean \(mean1h)")
                }
                // Written at the boundary where the values last changed (as materialization writes only changes).
                #expect(count1h.eventTime.map { $0 <= boundary * 1_000_000 && $0 % 600_000_000 == 0 } == true)
            }
        }
    }

    @Test("a bad row rejects the whole push, naming its index and field; nothing is written or journaled")
    func rejects() async throws {
        let world = try World()
        defer { try? FileManager.default.removeItem(at: world.folder) }
        let ingestor = try world.ingestor()
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        func field(_ body: String) async -> String? {
            do { _ = try await ingestor.push(source: "driver_pings", body: Array(body.utf8), key: "same", now: now) } catch let error as FeatureRequestError {
                return error.field
            } catch {
                return "\(error)"
            }
            return nil
        }
        let good = #"{"driver_id":1,"event_timestamp":"2027-01-15T08:00:00Z","lat":1,"lon":2,"speed":3}"#
        #expect(await field(#"{"rows":[\#(good),{"driver_id":1,"event_timestamp":"2027-01-15T08:00:00Z","speed":"fast"}]}"#) == "rows[1].speed")
        #expect(await field(#"{"rows":[\#(good),{"event_timestamp":"2027-01-15T08:00:00Z"}]}"#) == "rows[1].driver_id")
        #expect(await field(#"{"rows":[{"driver_id":1,"lat":1}]}"#) == "rows[0].event_timestamp")
        #expect(await field(#"{"rows":[{"driver_id":1,"event_timestamp":"yesterday"}]}"#) == "rows[0].event_timestamp")
        #expect(await field(#"{"rows":[{"driver_id":1,"event_timestamp":"2027-01-15T08:00:00Z","altitude":3}]}"#) == "rows[0].altitude")
        #expect(await field(#"{"rows":[]}"#) == "rows")
        #expect(await field(#"{"row":[]}"#) == "row")
        #expect(world.store.schemas.isEmpty)
        do {
            _ = try await ingestor.push(source: "trips", body: Array(#"{"rows":[]}"#.utf8), key: nil, now: now)
            Issue.record("a pull source took a push")
        } catch let error as ServingError {
            #expect(error == .unknownSource("trips"))
        }
        // The key of the rejected pushes was never used: the good push goes through once.
        #expect(await field(#"{"rows":[\#(good)]}"#) == nil)
        let again = try await ingestor.push(source: "driver_pings", body: Array(#"{"rows":[\#(good)]}"#.utf8), key: "same", now: now)
        #expect(again.duplicate && again.rows == 1)
        // An event time more than an hour ahead of the agent's clock is refused.
        do {
            _ = try await ingestor.push(
                source: "driver_pings", body: Array(#"{"rows":[{"driver_id":1,"event_timestamp":"2027-01-15T09:00:01Z","speed":3}]}"#.utf8), key: nil, now: now)
            Issue.record("an event an hour and a second ahead was taken")
        } catch let error as FeatureRequestError {
            #expect(error.field == "rows[0].event_timestamp")
        }
        _ = try await ingestor.push(
            source: "driver_pings", body: Array(#"{"rows":[{"driver_id":1,"event_timestamp":"2027-01-15T09:00:00Z","speed":3}]}"#.utf8), key: nil, now: now)
        // Restarted: still a duplicate.
        let restarted = try world.ingestor()
        #expect(try await restarted.push(source: "driver_pings", body: Array(#"{"rows":[\#(good)]}"#.utf8), key: "same", now: now).duplicate)
    }

    @Test("a new version of an aggregation view starts from the journal's earlier pushes, and the old version stops being written")
    func newVersionRefolds() async throws {
        let world = try World()
        defer { try? FileManager.default.removeItem(at: world.folder) }
        let ingestor = try world.ingestor()
        let start: Int64 = 1_800_000_000 - 1_800_000_000 % 600
        func push(_ driver: Int64, at time: Int64, now: Int64) async throws {
            _ = try await ingestor.push(
                source: "driver_pings", body: Self.body([Event(driver: driver, time: time, speed: 10, lat: 1)]), key: nil,
                now: Date(timeIntervalSince1970: Double(now)))
        }
        try await push(1, at: start + 10, now: start + 20)
        try await push(1, at: start + 30, now: start + 40)
        // An apply makes driver_speed v2 (the registry moves on); the next push lands in v2's windows.
        let files = RepositoryScaffold.files.map { ($0.path, $0.contents) }
            + [("pushes.yaml", World.onlineOnlyPushes)]
        let repository = RepositoryLoader.load(files: files).repository
        let keys = world.keys
        let definitions = DefinitionCanonicalizer.canonicalize(repository).map {
            JobSpec.Definition(kind: $0.key.kind.rawValue, name: $0.key.name, version: $0.key.name == "driver_speed" ? 2 : 1,
                               contentHash: $0.contentHash, definition: $0.spec)
        }
        try world.registry.install(
            try keys.sign(try AgentRegistrySnapshot(workspace: "rides", revision: 2, issuedAt: Date(), definitions: definitions).jsonValue()),
            workspace: "rides")
        _ = try await ingestor.push(
            source: "driver_pings", body: Self.body([Event(driver: 1, time: start + 700, speed: 20, lat: 1)]), key: nil,
            now: Date(timeIntervalSince1970: Double(start + 1_300)))
        let reader = world.reader
        let resolved = try reader.resolve(references: ["driver_speed:speed_count_1h"])
        let batch = try EntityBatch(OnlineFeatureRequest(entities: [["driver_id": 1]]), for: resolved, limit: 10)
        // At the boundary start + 1200: all three events are in the hour.
        #expect(reader.read(resolved, batch: batch, now: (start + 1_300) * 1_000_000)[0, 0].value == .int(3))
        #expect(world.store.table(view: "driver_speed", version: 2) != nil)
        // A restart replays the journal into v2 alone: the same value.
        let restarted = try world.ingestor()
        try await restarted.tick(now: Date(timeIntervalSince1970: Double(start + 1_300)))
        #expect(reader.read(resolved, batch: batch, now: (start + 1_300) * 1_000_000)[0, 0].value == .int(3))
    }

    @Test("pushes land in the offline store: every event in the source's log and the plain view's table; the aggregation view's rows, refreshed at random moments while late events arrive, give at every instant the brute-force window values",
          arguments: Array(1...4) as [UInt64])
    func offlineMatchesModel(seed: UInt64) async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            var random = SeededGenerator(seed: seed)
            let world = try World(offline: (schema: "features", url: url))
            defer { try? FileManager.default.removeItem(at: world.folder) }
            let ingestor = try world.ingestor()
            let start: Int64 = 1_800_000_000 - 1_800_000_000 % 600
            var clock = start
            var accepted: [Event] = []
            var keyed: [String: [Event]] = [:]
            var refreshes = 0
            for step in 0..<25 {
                clock += Int64.random(in: 0...900, using: &random)
                let now = Date(timeIntervalSince1970: Double(clock))
                if let (key, events) = keyed.randomElement(using: &random), Int.random(in: 0..<4, using: &random) == 0 {
                    #expect(try await ingestor.push(source: "driver_pings", body: Self.body(events), key: key, now: now).duplicate)
                } else {
                    // Late events (up to three hours) reach boundaries an earlier refresh wrote.
                    let events = (0..<Int.random(in: 1...8, using: &random)).map { _ in
                        Event(driver: Int64.random(in: 1...4, using: &random), time: clock - Int64.random(in: 0...10_800, using: &random),
                              speed: Int.random(in: 0..<5, using: &random) == 0 ? nil : Double(Int.random(in: 0...120, using: &random)),
                              lat: Double(Int.random(in: 0...90_000, using: &random)) / 1_000)
                    }
                    let key = "k\(step)"
                    _ = try await ingestor.push(source: "driver_pings", body: Self.body(events), key: key, now: now)
                    accepted += events
                    keyed[key] = events
                }
                if Int.random(in: 0..<3, using: &random) == 0 {
                    try await ingestor.refreshOfflineWindows()
                    refreshes += 1
                }
            }
            try await ingestor.refreshOfflineWindows()
            #expect(try await ingestor.refreshOfflineWindows() == 0, "a refresh with nothing new writes nothing")

            let logger = Logger(label: "test")
            let connection = try await url.connect(logger: logger)
            defer { Task { try? await connection.close() } }
            func count(_ table: String) async throws -> Int {
                var total = 0
                for try await (value) in try await connection.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM features.\"\(table)\""), logger: logger)
                    .decode(Int.self) { total = value }
                return total
            }
            #expect(try await count("rides__driver_pings__events") == accepted.count)
            #expect(try await count("rides__driver_position__v1") == accepted.count)

            // Each driver's rows: (boundary, count 10m, count 1h, mean 1h).
            var rows: [Int64: [(boundary: Int64, count10m: Int64?, count1h: Int64?, mean1h: Double?)]] = [:]
            let query = PostgresQuery(unsafeSQL: """
                SELECT driver_id, extract(epoch FROM event_timestamp)::bigint, speed_count_10m, speed_count_1h, speed_mean_1h
                FROM features."rides__driver_speed__v1" ORDER BY driver_id, event_timestamp
                """)
            for try await (driver, boundary, count10m, count1h, mean1h) in try await connection.query(query, logger: logger)
                .decode((Int64, Int64, Int64?, Int64?, Double?).self) {
                #expect(boundary % 600 == 0)
                rows[driver, default: []].append((boundary, count10m, count1h, mean1h))
            }
            for driver: Int64 in 1...4 {
                let mine = accepted.filter { $0.driver == driver }
                let held = rows[driver] ?? []
                #expect(Set(held.map(\.boundary)).count == held.count, "one row per boundary")
                var instant = start - 12_000
                while instant <= clock + 4_000 {
                    defer { instant += 250 }
                    let boundary = instant - instant % 600
                    func window(_ seconds: Int64) -> [Double] { mine.filter { $0.time >= boundary - seconds && $0.time < boundary }.compactMap(\.speed) }
                    let row = held.last { $0.boundary <= instant }
                    let where_ = "seed \(seed) driver \(driver) at \(instant) (\(refreshes) refreshes)"
                    #expect((row?.count10m ?? 0) == Int64(window(600).count), "\(where_)")
                    #expect((row?.count1h ?? 0) == Int64(window(3_600).count), "\(where_)")
                    let speeds = window(3_600)
                    if speeds.isEmpty {
                        #expect(row?.mean1h == nil, "\(where_)")
                    } else {
                        #expect(abs((row?.mean1h ?? .nan) - speeds.reduce(0, +) / Double(speeds.count)) < 1e-9, "\(where_)")
                    }
                }
            }
        }
    }
}

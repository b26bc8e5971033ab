import DataPlane
import Foundation
import Logging
import Shared
import Testing
import TestSupport

/// The feature server's reads, in process, against a model of the online
/// store: random rows written in random order, random requests.
@Suite("Online feature reads against a model")
struct OnlineFeatureReaderTests {
    /// A world: the example's registry (driver_hourly_stats at v3), a store, and a reader.
    struct World {
        let folder: URL
        let store: OnlineStore
        let reader: OnlineFeatureReader
        let schemas: [String: [Column]]
        let ttl: [String: Int64]

        init() throws {
            folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-reader-\(UUID().uuidString)")
            let repository = RepositoryLoader.load(files: RepositoryScaffold.files.map { ($0.path, $0.contents) }).repository
            let keys = SigningKeyPair.generate()
            let definitions = DefinitionCanonicalizer.canonicalize(repository).map {
                JobSpec.Definition(kind: $0.key.kind.rawValue, name: $0.key.name, version: $0.key.name == "driver_hourly_stats" ? 3 : 1,
                                   contentHash: $0.contentHash, definition: $0.spec)
            }
            let snapshot = AgentRegistrySnapshot(workspace: "rides", revision: 4, issuedAt: Date(), definitions: definitions)
            let registry = RegistryCache(file: folder.appendingPathComponent("registry-snapshot.json"), publicKey: keys.publicKey, logger: Logger(label: "test"))
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try registry.install(try keys.sign(try snapshot.jsonValue()), workspace: "rides")
            store = try OnlineStore(directory: folder.appendingPathComponent("online").path)
            reader = OnlineFeatureReader(store: store, registry: registry)
            schemas = RepositoryValidator.viewSchemas(of: repository)
            ttl = Dictionary(uniqueKeysWithValues: repository.featureViews.compactMap { view in view.ttl.map { (view.name, $0.seconds) } })
        }

        func table(_ view: String, version: Int) throws -> OnlineTable {
            try store.table(for: OnlineTableSchema(
                view: view, version: version, keys: [Column(name: "driver_id", type: .int64)], features: schemas[view]!, ttlSeconds: ttl[view]))
        }
    }

    /// What the model holds of one entity: the winning row's times and values.
    struct Stored {
        var event: Int64
        var created: Int64
        var values: [FeatureValue]
    }

    static func randomValue(_ type: ValueType, using random: inout SeededGenerator) -> FeatureValue {
        if Int.random(in: 0..<6, using: &random) == 0 { return .null }
        switch type {
        case .int64, .int32: return .int(Int64.random(in: -50...50, using: &random))
        case .float64, .float32: return .double(Double(Int.random(in: 0...100, using: &random)) / 100)
        default: return .null
        }
    }

    static func column(_ values: [FeatureValue], type: ValueType) -> ColumnValues {
        switch type {
        case .int64, .int32: return .int64(values.map { if case .int(let v) = $0 { return v } else { return nil } })
        default: return .float64(values.map { if case .double(let v) = $0 { return v } else { return nil } })
        }
    }

    @Test("random rows in random order, random batches of known, unknown and repeated entities: every cell is the model's value, status and event time", arguments: Array(1...12) as [UInt64])
    func matchesModel(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let world = try World()
        defer { try? FileManager.default.removeItem(at: world.folder) }
        let now: Int64 = 1_800_000_000_000_000
        let hour: Int64 = 3_600_000_000
        var model: [String: [Int64: Stored]] = [:]
        for (view, version) in [("driver_hourly_stats", 3), ("driver_trip_aggregates", 1)] {
            let table = try world.table(view, version: version)
            let features = world.schemas[view]!
            for _ in 0..<Int.random(in: 1...6, using: &random) {
                var keys: [EntityKey] = [], events: [Int64] = [], created: [Int64] = [], rows: [[FeatureValue]] = []
                for _ in 0..<Int.random(in: 1...60, using: &random) {
                    let driver = Int64.random(in: 0..<40, using: &random)
                    // Times around the TTL's edge (2 days for driver_hourly_stats), with ties.
                    let event = now - Int64.random(in: 0...96, using: &random) * hour
                    let made = event + Int64.random(in: 0...2, using: &random)
                    let values = features.map { Self.randomValue($0.type, using: &random) }
                    keys.append(.int(driver))
                    events.append(event)
                    created.append(made)
                    rows.append(values)
                    // Newest (event, created) wins; among equals, the later write.
                    if let held = model[view]?[driver], (event, made) < (held.event, held.created) { continue }
                    model[view, default: [:]][driver] = Stored(event: event, created: made, values: values)
                }
                try table.upsert(OnlineRows(
                    keys: keys, eventTimes: events, createdTimes: created,
                    features: features.indices.map { index in Self.column(rows.map { $0[index] }, type: features[index].type) }))
            }
        }

        for _ in 0..<20 {
            let drivers = (0..<Int.random(in: 1...12, using: &random)).map { _ in Int64.random(in: 0..<50, using: &random) }
            let distance = Double(Int.random(in: 1...40, using: &random)) / 4
            let resolved: ResolvedRequest
            if Bool.random(using: &random) {
                resolved = try world.reader.resolve(service: "driver_ranking")
            } else {
                let choices = ["driver_hourly_stats:conv_rate", "driver_trip_aggregates:fare_mean_7d", "trip_quote:expected_fare",
                               "trip_quote:likely_to_convert", "driver_hourly_stats", "driver_trip_aggregates:trips_count_1h"]
                resolved = try world.reader.resolve(references: choices.filter { _ in Bool.random(using: &random) } + ["trip_quote:likely_to_convert"])
            }
            var request = OnlineFeatureRequest(entities: drivers.map { ["driver_id": .int($0)] })
            if !resolved.requestFields.isEmpty { request.requestContext = ["trip_distance_km": .double(distance)] }
            let batch = try EntityBatch(request, for: resolved, limit: 100)
            let grid = world.reader.read(resolved, batch: batch, now: now)

            /// The model's cell of a stored feature: value, status, event time.
            func stored(_ view: String, _ feature: String, _ driver: Int64) -> (FeatureValue, FeatureStatus, Int64?) {
                guard let row = model[view]?[driver] else { return (.null, .notFound, nil) }
                if let ttl = world.ttl[view], row.event < now - ttl * 1_000_000 { return (.null, .expired, row.event) }
                let value = row.values[world.schemas[view]!.firstIndex { $0.name == feature }!]
                return (value, FeatureStatus(rawValue: value == .null ? "null" : "present")!, row.event)
            }
            for (entity, driver) in drivers.enumerated() {
                for (column, output) in resolved.outputs.enumerated() {
                    let cell = grid[entity, column]
                    let expected: (FeatureValue, FeatureStatus, Int64?)
                    switch output.source {
                    case .stored(let view, _, let feature):
                        expected = stored(view, feature, driver)
                    case .onDemand(_, let name):
                        let conv = stored("driver_hourly_stats", "conv_rate", driver), fare = stored("driver_trip_aggregates", "fare_mean_7d", driver)
                        let value: FeatureValue
                        let time: Int64?
                        if name == "expected_fare" {
                            if case .double(let mean) = fare.0 { value = .double(distance * mean) } else { value = .null }
                        } else {
                            if case .double(let rate) = conv.0 { value = .bool(rate > 0.5) } else { value = .null }
                        }
                        // The event time of the stored input the expression reads.
                        time = name == "expected_fare" ? fare.2 : conv.2
                        expected = (value, value == .null ? .null : .present, time)
                    }
                    #expect(cell.value == expected.0 && cell.status == expected.1 && cell.eventTime == expected.2,
                            "seed \(seed) driver \(driver) \(output.name): \(cell) ≠ \(expected)")
                }
            }
        }
    }

    @Test("a view's new version is served from the previous version's table until its own exists; a table newer than the registry's version is not served")
    func versionFallback() throws {
        let world = try World()
        defer { try? FileManager.default.removeItem(at: world.folder) }
        let now: Int64 = 1_800_000_000_000_000
        let resolved = try world.reader.resolve(references: ["driver_hourly_stats:acc_rate"])
        let request = OnlineFeatureRequest(entities: [["driver_id": 7]])
        let batch = try EntityBatch(request, for: resolved, limit: 10)
        #expect(world.reader.read(resolved, batch: batch, now: now)[0, 0].status == .notFound)
        func write(version: Int, acc: Double) throws {
            let features = world.schemas["driver_hourly_stats"]!
            try world.table("driver_hourly_stats", version: version).upsert(OnlineRows(
                keys: [.int(7)], eventTimes: [now], createdTimes: [now],
                features: features.map { $0.name == "acc_rate" ? .float64([acc]) : Self.column([.null], type: $0.type) }))
        }
        try write(version: 1, acc: 0.1)
        try write(version: 2, acc: 0.2)
        #expect(world.reader.read(resolved, batch: batch, now: now)[0, 0].value == .double(0.2))
        try write(version: 3, acc: 0.3)
        #expect(world.reader.read(resolved, batch: batch, now: now)[0, 0].value == .double(0.3))
        try write(version: 4, acc: 0.4)   // newer than the registry's: not served
        #expect(world.reader.read(resolved, batch: batch, now: now)[0, 0].value == .double(0.3))
    }

    @Test("entity rows are checked against the resolved keys and request fields, naming the field")
    func requestErrors() throws {
        let world = try World()
        defer { try? FileManager.default.removeItem(at: world.folder) }
        let resolved = try world.reader.resolve(service: "driver_ranking")
        func error(_ request: OnlineFeatureRequest, limit: Int = 10) -> FeatureRequestError? {
            do { _ = try EntityBatch(request, for: resolved, limit: limit) } catch { return error }
            return nil
        }
        let context: [String: JSONScalar] = ["trip_distance_km": 2]
        #expect(error(OnlineFeatureRequest(entities: [], requestContext: context))?.field == "entities")
        #expect(error(OnlineFeatureRequest(entities: [["driver_id": 1], ["driver": 1]], requestContext: context))?.field == "entities[1].driver_id")
        #expect(error(OnlineFeatureRequest(entities: [["driver_id": 1.5]], requestContext: context))?.field == "entities[0].driver_id")
        #expect(error(OnlineFeatureRequest(entities: [["driver_id": 1]]))?.field == "request_context.trip_distance_km")
        #expect(error(OnlineFeatureRequest(entities: [["driver_id": 1, "trip_distance_km": "far"]]))?.field == "entities[0].trip_distance_km")
        #expect(error(OnlineFeatureRequest(entities: [["driver_id": 1, "rider": 3]], requestContext: context))?.field == "entities[0].rider")
        #expect(error(OnlineFeatureRequest(entities: [["driver_id": 1]], requestContext: ["trip_distance_km": 2, "x": 1]))?.field == "request_context.x")
        #expect(error(OnlineFeatureRequest(entities: Array(repeating: ["driver_id": 1], count: 11), requestContext: context))?.kind == .tooManyEntities)
        #expect(error(OnlineFeatureRequest(entities: [["driver_id": 1, "trip_distance_km": 4]])) == nil)
        #expect(throws: ServingError.unknownService("nope")) { try world.reader.resolve(service: "nope") }
    }
}

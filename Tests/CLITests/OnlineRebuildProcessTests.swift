import DataPlane
import Foundation
import Logging
import Shared
import Testing
import TestSupport

/// `larder-agent rebuild-online`: the online store rebuilt from the offline store by the real binary.
@Suite("Rebuilding the online store from the offline store", .serialized)
struct OnlineRebuildProcessTests {
    /// Every stored row of every table: view@version → key → record.
    static func contents(_ directory: String, drivers: Int, customers: Int) throws -> [String: [String: OnlineLookup]] {
        let store = try OnlineStore(directory: directory, readOnly: true)
        var all: [String: [String: OnlineLookup]] = [:]
        for schema in store.schemas {
            guard let table = store.table(view: schema.view, version: schema.version) else { continue }
            let keys: [EntityKey] = schema.keys.first?.type == .string
                ? (0..<customers).map { .string("c\($0)") } : (0..<drivers).map { .int(Int64(1_000 + $0)) }
            var rows: [String: OnlineLookup] = [:]
            for key in keys { rows["\(key)"] = table.lookup(key, now: 0) }
            all["\(schema.view)@\(schema.version)"] = rows
        }
        return all
    }

    @Test("after the online store is lost, rebuild-online restores exactly what materialization had left, for plain, windowed and SQL views; it refuses to run beside a running agent")
    func rebuild() async throws {
        let drivers = 30
        try await MaterializationProcessTests.withWorld(drivers: drivers, hours: 48, trips: 3_000) { world in
            let agent = try world.startAgent()
            for view in ["driver_hourly_stats", "driver_trip_aggregates", "customer_trip_stats"] {
                // Later hours first, then earlier ones: the online rows must still be each entity's newest.
                for hours in [24..<48, 0..<24] {
                    let done = try await world.materialize(view, hours: hours)
                    #expect(done.job.state == .succeeded, "\(view): \(agent.log.suffix(2_000))")
                }
            }
            let config = world.jobs.folder.appendingPathComponent("agent-1.yaml").path
            let beside = try await LarderBinary.run(["rebuild-online", "--config", config], binary: "larder-agent")
            #expect(beside.status != 0 && beside.standardError.contains("stop it first"), "\(beside.standardError)")
            #expect(await agent.stop() == 0)

            let online = world.dataDirectory.appendingPathComponent("online").path
            let before = try Self.contents(online, drivers: drivers, customers: 37)
            #expect(before.keys.sorted() == ["customer_trip_stats@1", "driver_hourly_stats@1", "driver_trip_aggregates@1"])
            #expect(before.values.allSatisfy { rows in rows.values.contains { if case .present = $0 { true } else { false } } })
            try FileManager.default.removeItem(atPath: online)

            let rebuilt = try await LarderBinary.run(["rebuild-online", "--config", config], binary: "larder-agent")
            #expect(rebuilt.status == 0, "\(rebuilt.standardError)")
            #expect(rebuilt.standardOutput.contains("rebuilt driver_hourly_stats v1: \(drivers) entities"), "\(rebuilt.standardOutput)")
            let after = try Self.contents(online, drivers: drivers, customers: 37)
            #expect(after.keys.sorted() == before.keys.sorted())
            for (table, rows) in before {
                for (key, lookup) in rows where after[table]?[key] != lookup {
                    Issue.record("\(table) \(key): \(String(describing: after[table]?[key])) after the rebuild, \(lookup) before")
                }
            }
            // One view only, and a view the agent never ran.
            let one = try await LarderBinary.run(["rebuild-online", "--config", config, "--view", "driver_hourly_stats"], binary: "larder-agent")
            #expect(one.status == 0 && one.standardOutput.split(separator: "\n").count == 1, "\(one.standardOutput)")
            let unknown = try await LarderBinary.run(["rebuild-online", "--config", config, "--view", "nope"], binary: "larder-agent")
            #expect(unknown.status != 0 && unknown.standardError.contains("no materialized definition of nope"), "\(unknown.standardError)")
            // The agent starts on the rebuilt store.
            let restarted = try world.startAgent()
            let deadline = Date().addingTimeInterval(20)
            // Stopped once it runs (connected), so SIGTERM meets its shutdown handler.
            while !restarted.log.contains("connected to the control plane"), Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
            #expect(restarted.log.contains("tables=3"), "\(restarted.log)")
            #expect(await restarted.stop() == 0)
        }
    }

    @Test("with Redis: after Redis lost everything, rebuild-online rewrites each entity's newest offline row there, newest wins, and publishes the versions; the same values as materialization left")
    func rebuildRedis() async throws {
        let drivers = 30
        try await TestRedis.withServer { port in
            try await MaterializationProcessTests.withWorld(drivers: drivers, hours: 48, trips: 3_000, redis: port) { world in
                let agent = try world.startAgent()
                for view in ["driver_hourly_stats", "driver_trip_aggregates", "customer_trip_stats"] {
                    for hours in [24..<48, 0..<24] {
                        let done = try await world.materialize(view, hours: hours)
                        #expect(done.job.state == .succeeded, "\(view): \(agent.log.suffix(2_000))")
                    }
                }
                #expect(await agent.stop() == 0)
                let store = try RedisOnlineStore(
                    settings: RedisSettings(endpoints: [RedisEndpoint(host: "127.0.0.1", port: port)]), logger: Logging.Logger(label: "test"))
                /// Every entity's stored row of every served view, judged at time 0 (no TTL in the way).
                func contents() async throws -> [String: [String: OnlineLookup]] {
                    var all: [String: [String: OnlineLookup]] = [:]
                    for (view, version) in try await store.fetchVersions() {
                        guard let schema = try await store.servingSchema(view: view, upTo: version) else { continue }
                        let keys: [EntityKey] = schema.keys.first?.type == .string
                            ? (0..<37).map { .string("c\($0)") } : (0..<drivers).map { .int(Int64(1_000 + $0)) }
                        var rows: [String: OnlineLookup] = [:]
                        for key in keys { rows["\(key)"] = try await store.lookup(key, schema: schema, now: 0) }
                        all["\(view)@\(version)"] = rows
                    }
                    return all
                }
                let before = try await contents()
                #expect(before.keys.sorted() == ["customer_trip_stats@1", "driver_hourly_stats@1", "driver_trip_aggregates@1"])
                try await TestRedis.command(port, ["FLUSHALL"])
                #expect(try await store.fetchVersions().isEmpty)
                let config = world.jobs.folder.appendingPathComponent("agent-1.yaml").path
                let rebuilt = try await LarderBinary.run(["rebuild-online", "--config", config], binary: "larder-agent")
                #expect(rebuilt.status == 0, "\(rebuilt.standardError)")
                #expect(rebuilt.standardOutput.contains("rebuilt driver_hourly_stats v1: \(drivers) entities"), "\(rebuilt.standardOutput)")
                let after = try await contents()
                #expect(after.keys.sorted() == before.keys.sorted())
                for (table, rows) in before {
                    for (key, lookup) in rows where after[table]?[key] != lookup {
                        Issue.record("\(table) \(key): \(String(describing: after[table]?[key])) after the rebuild, \(lookup) before")
                    }
                }
                await store.close()
            }
        }
    }
}

import DataPlane
import Foundation
import Logging
import NIOCore
import PostgresNIO
import Shared
import Synchronization
import Testing
import TestSupport

@Suite("Two agents sharing a Redis online store, as real processes", .serialized)
struct FailoverProcessTests {
    static let drivers = 600

    /// The request for drivers 1000, 1001 and 1317 (any agent answers it).
    static let request = #"{"features":["driver_hourly_stats:conv_rate","driver_hourly_stats:acc_rate","driver_hourly_stats:avg_daily_trips"],"entities":[{"driver_id":1000},{"driver_id":1001},{"driver_id":1317}]}"#

    /// What the offline store says an agent must serve: each driver's newest row (past the view's TTL of an hour
    /// by the wall clock, so `expired` with its event time; a present value must be the row's).
    static func expectNewest(_ served: ServedFeatures, hour: Int) {
        let time = RFC3339.format(MaterializationWorld.day0.addingTimeInterval(Double(hour) * 3_600))
        for (row, driver) in [0, 1, 317].enumerated() {
            let (conv, acc, trips) = MaterializationWorld.values(driver: driver, hour: hour)
            for (feature, value) in [("conv_rate", conv.map(JSONCell.number) ?? .null), ("acc_rate", .number(acc)), ("avg_daily_trips", .number(Double(trips)))] {
                let cell = served.cell(row, "driver_hourly_stats:\(feature)")
                #expect(cell?.eventTimestamp == time, "driver \(driver) \(feature): \(String(describing: cell))")
                #expect(cell?.status == "expired" || (cell?.status == "present" && cell?.value == value), "driver \(driver) \(feature): \(String(describing: cell))")
            }
        }
    }

    @Test("a backfill split between two agents of one environment is served whole by both; kill -9 one mid-backfill: a client retrying once on the other sees no failed read, the other re-runs the dead agent's jobs after its lease, the offline table holds one copy of each row, and the online values are the offline store's newest")
    func failover() async throws {
        try await TestRedis.withServer { redis in
            try await MaterializationProcessTests.withWorld(
                drivers: Self.drivers, hours: 96, trips: 10, environment: ["LARDER_LEASE_SECONDS": "3"], redis: redis
            ) { world in
                var world = world
                try await world.addAgent("agent-2")
                let admin = world.jobs.admin, workspace = JobsWorld.workspace
                _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "model", kind: .serviceAccount))
                _ = try await admin.grant(.consumer, to: "model", workspace: workspace)
                let token = try await admin.createToken(for: "model", audience: .dataPlane).token
                var agents = [try world.startAgent(), try world.startAgent(name: "agent-2")]
                let callers = [
                    try await FeatureServerCaller.waitForAddress(dataDirectory: world.jobs.folder.appendingPathComponent("agent-1")),
                    try await FeatureServerCaller.waitForAddress(dataDirectory: world.jobs.folder.appendingPathComponent("agent-2")),
                ]

                // 1. Eight chunks claimed by either agent: both serve every entity's newest value.
                let first = try await world.materialize("driver_hourly_stats", hours: 0..<48, chunk: "6h")
                #expect(first.job.state == .succeeded, "\(agents[0].log.suffix(2_000))")
                var ranBy = Set<String>()
                for chunk in try await world.jobs.chunks(of: first.job.id) {
                    for attempt in try await admin.job(chunk.id, workspace: workspace).attempts where attempt.outcome == "succeeded" { ranBy.insert(attempt.agent) }
                }
                #expect(ranBy.count == 2, "both agents should have run chunks: \(ranBy)")
                for caller in callers {
                    var served: ServedFeatures?
                    var last = ""
                    let deadline = Date().addingTimeInterval(20)
                    while served == nil, Date() < deadline {
                        do {
                            served = try await caller.features(Self.request, token: token)
                            if served?.results.first?.statuses.first == "not_found" {
                                last = "\(served!.results.first?.statuses ?? [])"
                                served = nil
                            }
                        } catch {
                            last = "\(error)"
                        }
                        if served == nil { try await Task.sleep(for: .milliseconds(200)) }
                    }
                    Self.expectNewest(try #require(served, "\(caller.baseURL) never served: \(last)"), hour: 47)
                }
                try await MaterializationProcessTests.expectNewestHour(inRedis: redis, drivers: Self.drivers, hour: 47)

                // 2. A client reads continuously, through either agent, retrying once on the other.
                let reads = Mutex((ok: 0, failed: 0, retried: 0, last: ""))
                let stop = Atomic(false)
                let reading = Task {
                    var turn = 0
                    while !stop.load(ordering: .relaxed) {
                        turn += 1
                        let first = callers[turn % 2], other = callers[(turn + 1) % 2]
                        do {
                            // A model server's client: a short deadline (3 s: a loaded test machine answers slowly), then
                            // once more on the other agent.
                            _ = try await first.features(Self.request, token: token, timeout: .seconds(3))
                            reads.withLock { $0.ok += 1 }
                        } catch {
                            do {
                                _ = try await other.features(Self.request, token: token, timeout: .seconds(3))
                                reads.withLock { $0.ok += 1; $0.retried += 1 }
                            } catch let retry {
                                reads.withLock { $0.failed += 1; $0.last = "\(first.baseURL): \(error); then \(other.baseURL): \(retry)" }
                            }
                        }
                        try? await Task.sleep(for: .milliseconds(5))
                    }
                }
                // 3. The next two days, in chunks; agent-1 is killed while it holds one.
                let started = try await admin.materialize(
                    MaterializeRequest(
                        featureView: "driver_hourly_stats", start: MaterializationWorld.day0.addingTimeInterval(48 * 3_600),
                        end: MaterializationWorld.day0.addingTimeInterval(96 * 3_600), chunk: "6h"),
                    workspace: workspace)
                var held: JobResource?
                let deadline = Date().addingTimeInterval(60)
                while held == nil, Date() < deadline {
                    held = try await world.jobs.chunks(of: started.backfill.id).first { $0.agent == "agent-1" && ($0.state == .leased || $0.state == .running) }
                    if held == nil { try await Task.sleep(for: .milliseconds(20)) }
                }
                let victim = try #require(held, "agent-1 never held a chunk")
                kill(agents[0].process.processIdentifier, SIGKILL)
                await agents[0].process.waitForExit()
                let finished = try await world.jobs.waitUntilFinished(started.backfill.id, timeout: 180)
                #expect(finished.job.state == .succeeded, "\(agents[1].log.suffix(3_000))")
                // Reads go on through the survivor alone, until there have been enough (a loaded machine reads slowly).
                let enough = Date().addingTimeInterval(60)
                repeat { try await Task.sleep(for: .milliseconds(200)) } while reads.withLock({ $0.ok < 10 }) && Date() < enough
                stop.store(true, ordering: .relaxed)
                _ = await reading.result
                let counted = reads.withLock { $0 }
                #expect(counted.failed == 0 && counted.ok >= 10, "\(counted)")
                #expect(counted.retried > 0, "the client never had to go to the other agent: \(counted)")
                // The dead agent's chunk: its lease expired, and agent-2 ran it.
                let attempts = try await admin.job(victim.id, workspace: workspace).attempts
                #expect(attempts.first?.agent == "agent-1" && attempts.first?.outcome == "lease-expired", "\(attempts.map { "\($0.agent) \($0.outcome)" })")
                #expect(attempts.last?.agent == "agent-2" && attempts.last?.outcome == "succeeded")
                // Offline: one copy of each row; online (through the survivor): the newest hour.
                #expect(try await world.count("SELECT count(*)::int FROM larder_offline.rides__driver_hourly_stats__v1") == Self.drivers * 96)
                #expect(try await world.count(
                    "SELECT count(*)::int FROM (SELECT 1 FROM larder_offline.rides__driver_hourly_stats__v1 GROUP BY driver_id, event_timestamp HAVING count(*) > 1) d") == 0)
                Self.expectNewest(try await callers[1].features(Self.request, token: token), hour: 95)
                try await MaterializationProcessTests.expectNewestHour(inRedis: redis, drivers: Self.drivers, hour: 95)
                #expect(await agents[1].stop() == 0)
                agents.removeAll()
            }
        }
    }

    @Test("an environment whose store is embedded takes one agent: a second real agent is refused at hello, says why in its log, claims nothing, and serves")
    func embeddedRefusesSecondAgent() async throws {
        try await MaterializationProcessTests.withWorld(drivers: 5, hours: 24, trips: 10) { world in
            var world = world
            try await world.addAgent("agent-2")
            let first = try world.startAgent()
            // The first says hello before the second starts.
            let deadline = Date().addingTimeInterval(30)
            while !first.log.contains("connected to the control plane"), Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
            let second = try world.startAgent(name: "agent-2")
            while !second.log.contains("refused this agent in its environment"), Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
            #expect(second.log.contains("refused this agent in its environment") && second.log.contains("agent-1"), "\(second.log.suffix(2_000))")
            let job = try await world.materialize("driver_hourly_stats", hours: 0..<24)
            #expect(job.job.state == .succeeded)
            for chunk in try await world.jobs.chunks(of: job.job.id) {
                #expect(try await world.jobs.admin.job(chunk.id, workspace: JobsWorld.workspace).attempts.allSatisfy { $0.agent == "agent-1" })
            }
            _ = try await FeatureServerCaller.waitForAddress(dataDirectory: world.jobs.folder.appendingPathComponent("agent-2"))
            #expect(await second.stop() == 0)
            #expect(await first.stop() == 0)
        }
    }
}

import ControlPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import Synchronization
import Testing
import TestSupport

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    private let current: Mutex<Date>
    init(_ start: Date) { current = Mutex(start) }
    var now: Date { current.withLock { $0 } }
    func advance(by seconds: TimeInterval) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }
}

/// The example applied to a fresh control plane (scheduler off), with
/// schedulers the test drives tick by tick on a manual clock.
struct SchedulerFixture: Sendable {
    static let workspace = "rides"
    let server: RunningControlPlane
    let client: PostgresClient
    let store: PostgresJobStore
    let keys: SigningKeys
    let clock: ManualClock

    static func with<Result: Sendable>(start: Date, _ body: (SchedulerFixture) async throws -> Result) async throws -> Result {
        try await TestControlPlane.withControlPlane { server in
            _ = try await server.client.createWorkspace(workspace)
            _ = try await server.client.createEnvironment(CreateEnvironmentRequest(name: "prod"), workspace: workspace)
            try await RepositoryFixture.example(workspace: workspace).apply(to: workspace, with: server.client)
            return try await TestDatabase.withClient(server.database) { client in
                let keys = SigningKeys(client: client, logger: Logger(label: "test"))
                let store = PostgresJobStore(client: client, logger: Logger(label: "test"), keys: keys, settings: JobSettings())
                return try await body(SchedulerFixture(server: server, client: client, store: store, keys: keys, clock: ManualClock(start)))
            }
        }
    }

    func scheduler(_ replica: String, interval: Duration = .seconds(10)) -> JobScheduler {
        let clock = self.clock
        return JobScheduler(
            client: client, store: store, settings: JobSettings(schedulerInterval: interval), logger: Logger(label: "test"), replica: replica,
            now: { clock.now })
    }

    /// Every materialization of `view` (chunks included), oldest interval first.
    func materializations(of view: String) async throws -> [JobResource] {
        var all: [JobResource] = []
        var cursor: String?
        repeat {
            let page = try await server.client.jobs(workspace: Self.workspace, view: view, kind: .materialize, cursor: cursor, limit: 1_000)
            all += page.items
            cursor = page.nextCursor
        } while cursor != nil
        return all.sorted { ($0.start ?? .distantPast) < ($1.start ?? .distantPast) }
    }
}

@Suite("Scheduler")
struct SchedulerTests {
    static let day2 = RFC3339.parse("2025-01-03T00:00:00Z")!

    @Test("a new version is backfilled from its feature start time; 6 hours of downtime queue exactly the 6 missing hourly jobs")
    func catchUp() async throws {
        try await SchedulerFixture.with(start: Self.day2) { fixture in
            let scheduler = fixture.scheduler("replica-a")
            #expect(try await scheduler.holdLease())
            #expect(try await scheduler.tick() > 0)
            let backfilled = try await fixture.materializations(of: "driver_hourly_stats")
            // Two days of hourly intervals in chunks of a day, under one backfill.
            #expect(backfilled.map { RFC3339.format($0.start!) } == ["2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z"])
            #expect(backfilled.allSatisfy { $0.end!.timeIntervalSince($0.start!) == 86_400 && $0.trigger == "new version 1" && $0.parentId != nil })
            #expect(try await scheduler.holdLease())   // renewed before each tick, as the run loop does
            #expect(try await scheduler.tick() == 0, "a second tick at the same time queues nothing")

            fixture.clock.advance(by: 6 * 3_600 + 125)   // the control plane was down for six hours (and a bit)
            #expect(try await scheduler.holdLease())   // renewed before each tick, as the run loop does
            #expect(try await scheduler.tick() > 0)
            let hourly = try await fixture.materializations(of: "driver_hourly_stats").filter { $0.trigger == "schedule" }
            #expect(hourly.count == 6)
            #expect(hourly.map { $0.start! } == (0..<6).map { Self.day2.addingTimeInterval(Double($0) * 3_600) })
            #expect(hourly.allSatisfy { $0.end!.timeIntervalSince($0.start!) == 3_600 && $0.parentId == nil && $0.state == .queued })
            // The nightly cron view: one interval, ending at 02:00.
            let nightly = try await fixture.materializations(of: "customer_trip_stats").filter { $0.trigger == "schedule" }
            #expect(nightly.map { RFC3339.format($0.end!) } == ["2025-01-03T02:00:00Z"])
            #expect(try await scheduler.holdLease())   // renewed before each tick, as the run loop does
            #expect(try await scheduler.tick() == 0)

            // Each job carries a spec signed for it.
            let key = try await fixture.keys.current().publicKey
            let rows = try await fixture.client.query(
                "SELECT id, spec_payload, spec_signature, spec_key FROM jobs WHERE kind = 'materialize'", logger: Logger(label: "test"))
            var verified = 0
            for try await (id, payload, signature, fingerprint) in rows.decode((Int64, String, String, String).self) {
                let spec = try JobSpec(verified: try SignedDocument(payload: payload, signature: signature, keyFingerprint: fingerprint).verified(with: key))
                #expect(spec.jobId == id)
                verified += 1
            }
            #expect(verified > 6)
        }
    }

    @Test("only the lease holder schedules; a replica that lost the lease stops, and another takes over when it expires")
    func leaderLease() async throws {
        try await SchedulerFixture.with(start: Self.day2) { fixture in
            // A lease lasts three ticks: 9 s here (shorter ones are at the mercy of a loaded machine's stalls).
            let a = fixture.scheduler("replica-a", interval: .seconds(3))
            let b = fixture.scheduler("replica-b", interval: .seconds(3))
            #expect(try await a.holdLease())
            #expect(try await !b.holdLease())
            #expect(try await b.tick() == 0, "a replica without the lease queues nothing")
            #expect(try await a.holdLease())
            #expect(try await a.tick() > 0)
            // a stops renewing (it died): its lease runs out, b takes over, and a cannot schedule any more.
            try await Task.sleep(for: .milliseconds(9_200))
            #expect(try await b.holdLease())
            #expect(try await !a.holdLease())
            fixture.clock.advance(by: 3_600)
            #expect(try await a.tick() == 0)
            #expect(try await b.holdLease())
            #expect(try await b.tick() > 0)
        }
    }

    @Test("after any sequence of ticks and outages, each view's materializations tile time from its start: no gap, no overlap",
          arguments: [1, 2, 3] as [UInt64])
    func tilingProperty(seed: UInt64) async throws {
        var random = SeededGenerator(seed: seed)
        let start = Self.day2.addingTimeInterval(Double(Int.random(in: 0..<86_400, using: &random)))
        let steps = (0..<12).map { _ in Double(Int.random(in: 0..<(14 * 3_600), using: &random)) }
        try await SchedulerFixture.with(start: start) { fixture in
            let scheduler = fixture.scheduler("replica-a")
            #expect(try await scheduler.holdLease())
            for step in steps {
                fixture.clock.advance(by: step)
                // The run loop renews the lease before each tick; a slow run must not let it lapse.
                #expect(try await scheduler.holdLease())
                try await scheduler.tick()
                let now = fixture.clock.now
                for (view, schedule) in [("driver_hourly_stats", BatchSchedule.interval(TimeSpan(seconds: 3_600))),
                                         ("customer_trip_stats", BatchSchedule.cron(try CronSchedule(parsing: "0 2 * * *")))] {
                    let jobs = try await fixture.materializations(of: view)
                    let origin = RFC3339.parse("2025-01-01T00:00:00Z")!
                    #expect(jobs.first?.start == origin, "\(view) does not start at its feature start time")
                    for (previous, next) in zip(jobs, jobs.dropFirst()) {
                        #expect(previous.end == next.start, "\(view): gap or overlap between \(previous.end!) and \(next.start!)")
                    }
                    // Up to the last boundary that has passed, and no further.
                    let last = try #require(jobs.last?.end)
                    #expect(last <= now)
                    let expected = DueIntervals.due(schedule: schedule, watermark: last, featureStartTime: nil, now: now)
                    #expect(expected.isEmpty, "\(view): \(expected.count) due intervals were not queued")
                }
            }
        }
    }

    @Test("a new version of a view is backfilled from its start; the old version is no longer scheduled and its queued jobs are cancelled")
    func newVersionBackfill() async throws {
        try await SchedulerFixture.with(start: Self.day2) { fixture in
            let scheduler = fixture.scheduler("replica-a")
            #expect(try await scheduler.holdLease())
            try await scheduler.tick()
            let changed = RepositoryFixture.example(workspace: SchedulerFixture.workspace).replacing("ttl: 2d", with: "ttl: 3d", in: "features.yaml")
            try await changed.apply(to: SchedulerFixture.workspace, with: fixture.server.client)
            fixture.clock.advance(by: 3_600)
            #expect(try await scheduler.holdLease())   // renewed before each tick, as the run loop does
            try await scheduler.tick()
            let jobs = try await fixture.materializations(of: "driver_hourly_stats")
            let second = jobs.filter { $0.version == 2 }
            #expect(second.first?.start == RFC3339.parse("2025-01-01T00:00:00Z"))
            #expect(second.last?.end == Self.day2.addingTimeInterval(3_600))
            #expect(second.allSatisfy { $0.trigger == "new version 2" })
            #expect(jobs.filter { $0.version == 1 && $0.start! >= Self.day2 }.isEmpty, "the retired version was still scheduled")
            // What was still queued for version 1 was cancelled as superseded.
            let first = jobs.filter { $0.version == 1 }
            #expect(!first.isEmpty && first.allSatisfy { $0.state == .cancelled })
            let events = try await fixture.server.client.job(try #require(first.first).id, workspace: SchedulerFixture.workspace).events
            #expect(events.last?.event == "cancelled" && events.last?.detail == "superseded by version 2")
        }
    }

    /// The example with `lateness` and `recompute` on driver_hourly_stats (operational: the same version).
    static func withLateData(start: Date, _ body: (SchedulerFixture) async throws -> Void) async throws {
        try await SchedulerFixture.with(start: start) { fixture in
            _ = try await RepositoryFixture.example(workspace: SchedulerFixture.workspace)
                .replacing("ttl: 2d\nschedule: 1h", with: "ttl: 2d\nschedule: 1h\nlateness: 2h\nrecompute: 3h", in: "features.yaml")
                .apply(to: SchedulerFixture.workspace, with: fixture.server.client)
            try await body(fixture)
        }
    }

    @Test("lateness: 2h queues each hour two hours after it ends; recompute: 3h re-runs the three hours before each run, one pending at a time; the freshness SLO allows for the lateness")
    func lateData() async throws {
        try await Self.withLateData(start: Self.day2) { fixture in
            let scheduler = fixture.scheduler("replica-a")
            func tick() async throws -> Int {
                #expect(try await scheduler.holdLease())
                return try await scheduler.tick()
            }
            func jobs(_ trigger: String) async throws -> [String] {
                try await fixture.materializations(of: "driver_hourly_stats").filter { $0.trigger == trigger }
                    .map { "\(RFC3339.format($0.start!))/\($0.end!.timeIntervalSince($0.start!) / 3_600)h" }.sorted()
            }
            func at(_ hours: Double) -> String { RFC3339.format(Self.day2.addingTimeInterval(hours * 3_600)) }
            #expect(try await tick() > 0)
            // The backfill stops two hours short of now.
            let backfill = try await fixture.materializations(of: "driver_hourly_stats")
            #expect(backfill.last?.end == Self.day2.addingTimeInterval(-2 * 3_600))
            // Agents run what is queued (re-runs never overlap work still pending: it would write beside them).
            func runEverything() async throws {
                try await fixture.client.query(
                    "UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE state = 'queued'", logger: Logger(label: "test"))
            }
            try await runEverything()

            fixture.clock.advance(by: 3_600 + 125)
            // One hour, and the three before it again (other views are queued too: not counted here).
            #expect(try await tick() > 0)
            #expect(try await jobs("schedule") == ["\(at(-2))/1.0h"])
            #expect(try await jobs(JobScheduler.recomputeTrigger) == [at(-5), at(-4), at(-3)].map { "\($0)/1.0h" })

            // An hour on, nothing has run: the hours to re-run are all still pending (two re-runs and the
            // last scheduled hour), so none is queued again.
            fixture.clock.advance(by: 3_600)
            #expect(try await tick() > 0)
            #expect(try await jobs("schedule") == [at(-2), at(-1)].map { "\($0)/1.0h" })
            #expect(try await jobs(JobScheduler.recomputeTrigger) == [at(-5), at(-4), at(-3)].map { "\($0)/1.0h" })

            // Once they have run, the same hours run again.
            try await runEverything()
            fixture.clock.advance(by: 3_600)
            #expect(try await tick() > 0)
            #expect(try await jobs(JobScheduler.recomputeTrigger) == [at(-5), at(-4), at(-3), at(-3), at(-2), at(-1)].map { "\($0)/1.0h" })

            // Queued two hours late on purpose: the default SLO (twice the hour) grows by the lateness.
            let freshness = try await fixture.server.client.freshness(workspace: SchedulerFixture.workspace)
            let hourly = freshness.first(where: { $0.view == "driver_hourly_stats" })?.expectedSeconds
            let aggregates = freshness.first(where: { $0.view == "driver_trip_aggregates" })?.expectedSeconds
            #expect(hourly == Int64(4 * 3_600))
            #expect(aggregates == Int64(2 * 3_600))
        }
    }

    @Test("with lateness and recompute, over random ticks and outages: scheduled intervals tile time up to now minus the lateness; re-runs are whole hours already scheduled, never two pending for one hour",
          arguments: [4, 5, 6] as [UInt64])
    func lateDataProperty(seed: UInt64) async throws {
        var random = SeededGenerator(seed: seed)
        let start = Self.day2.addingTimeInterval(Double(Int.random(in: 0..<86_400, using: &random)))
        let steps = (0..<10).map { _ in Double(Int.random(in: 0..<(6 * 3_600), using: &random)) }
        try await Self.withLateData(start: start) { fixture in
            let scheduler = fixture.scheduler("replica-a")
            var reran = 0
            for step in steps {
                fixture.clock.advance(by: step)
                #expect(try await scheduler.holdLease())
                try await scheduler.tick()
                // Agents sometimes catch up with the queue between ticks, sometimes not.
                if Bool.random(using: &random) {
                    try await fixture.client.query(
                        "UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE state = 'queued'", logger: Logger(label: "test"))
                }
                let horizon = fixture.clock.now.addingTimeInterval(-2 * 3_600)
                let all = try await fixture.materializations(of: "driver_hourly_stats")
                let scheduled = all.filter { $0.trigger != JobScheduler.recomputeTrigger }
                for (previous, next) in zip(scheduled, scheduled.dropFirst()) {
                    #expect(previous.end == next.start, "gap or overlap between \(previous.end!) and \(next.start!)")
                }
                let last = try #require(scheduled.last?.end)
                #expect(last <= horizon)
                #expect(DueIntervals.due(schedule: .interval(TimeSpan(seconds: 3_600)), watermark: last, featureStartTime: nil, now: horizon).isEmpty)
                let again = all.filter { $0.trigger == JobScheduler.recomputeTrigger }
                reran = again.count
                for job in again {
                    #expect(job.end!.timeIntervalSince(job.start!) <= 3_600 && job.end! <= last)
                    #expect(Int(job.end!.timeIntervalSince1970) % 3_600 == 0, "a re-run ends on an hour")
                }
                let pending = again.filter { $0.state == .queued }.map { $0.start! }
                #expect(Set(pending).count == pending.count, "two pending re-runs of one hour")
                // A pending re-run overlaps no other pending job (both would write the same rows).
                for job in again where job.state == .queued {
                    let others = all.filter { $0.id != job.id && $0.state == .queued && $0.start! < job.end! && job.start! < $0.end! }
                    #expect(others.isEmpty, "re-run \(job.start!) overlaps pending \(others.map(\.id))")
                }
            }
            #expect(reran > 0, "no interval was re-run: the property was not exercised")
        }
    }
}

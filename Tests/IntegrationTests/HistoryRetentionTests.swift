import ControlPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

/// The control plane's history pruned past its retention: ended jobs, plans and resolved
/// alerts go; pending work, open alerts, the freshness watermark and built datasets stay.
@Suite("History retention")
struct HistoryRetentionTests {
    struct Job: Hashable {
        var id: Int64
        var kind: String
        var state: String
        var version: Int64?
        var environment: String?
        var end: Date?
        var parent: Int64?
        var old: Bool
        var finished: Date?
        var trigger: String
        var checked: Bool
    }

    @Test("over random states and ages of real scheduled jobs, plans and alerts: exactly what ended before the retention goes, except each version's newest success per environment and built datasets; freshness is unchanged",
          arguments: [1, 2, 3] as [UInt64])
    func prunesExactlyTheOldHistory(seed: UInt64) async throws {
        // PostgresNIO hides a server error's details from its description: show them.
        do { try await Self.prune(seed: seed) } catch let error as PSQLError {
            Issue.record("\(String(reflecting: error))")
        }
    }

    static func prune(seed: UInt64) async throws {
        try await SchedulerFixture.with(start: SchedulerTests.day2) { fixture in
            var random = SeededGenerator(seed: seed)
            let logger = Logger(label: "test")
            let scheduler = fixture.scheduler("replica-a")
            #expect(try await scheduler.holdLease())
            try await scheduler.tick()
            fixture.clock.advance(by: 6 * 3_600)
            #expect(try await scheduler.holdLease())
            try await scheduler.tick()
            let client = fixture.client

            // Random outcomes and ages for every job; backfills ended (old or not).
            var ids: [(Int64, String)] = []
            for try await row in try await client.query("SELECT id, kind FROM jobs ORDER BY id", logger: logger).decode((Int64, String).self) {
                ids.append(row)
            }
            #expect(ids.count > 10)
            for (id, kind) in ids {
                let days = Bool.random(using: &random) ? 100 : 1
                if kind == "backfill" {
                    // A backfill's state is its chunks': only its age is its own.
                    try await client.query("UPDATE jobs SET created_at = now() - make_interval(days => \(days)::int) WHERE id = \(id)", logger: logger)
                    continue
                }
                let state = ["queued", "succeeded", "succeeded", "failed", "cancelled"].randomElement(using: &random)!
                let checked = Bool.random(using: &random)
                // A dataset job: an ended materialization chunk relabelled, to have some of each kind.
                let asDataset = kind == "materialize" && Int.random(in: 0..<6, using: &random) == 0
                try await client.query(
                    """
                    UPDATE jobs SET state = \(state), kind = CASE WHEN \(asDataset) THEN 'dataset' ELSE kind END,
                        dataset = CASE WHEN \(asDataset) THEN '{}'::jsonb ELSE dataset END,
                        metrics = CASE WHEN \(checked) THEN '{"expectations": []}'::jsonb ELSE metrics END,
                        finished_at = CASE WHEN \(state) = 'queued' THEN NULL ELSE now() - make_interval(days => \(days)::int) END
                    WHERE id = \(id)
                    """, logger: logger)
            }
            // Plans of both ages; alerts resolved long ago, lately, and open since long ago.
            try await client.query("UPDATE plans SET created_at = now() - interval '100 days', applied_at = NULL WHERE ctid IN (SELECT ctid FROM plans LIMIT 1)", logger: logger)
            let workspace = try #require(try await client.query("SELECT id FROM workspaces", logger: logger).decode(Int64.self).first { _ in true })
            try await client.query(
                """
                INSERT INTO alerts (workspace_id, kind, subject, detail, opened_at, resolved_at) VALUES
                    (\(workspace), 'stale', 'a', 'x', now() - interval '120 days', now() - interval '100 days'),
                    (\(workspace), 'stale', 'b', 'x', now() - interval '120 days', now() - interval '1 day'),
                    (\(workspace), 'stale', 'c', 'x', now() - interval '120 days', NULL)
                """, logger: logger)

            var jobs: [Job] = []
            for try await (id, kind, state, version, environment, end, parent, old, finished, trigger, checked) in try await client.query(
                """
                SELECT id, kind, state, version_id, environment, interval_end, parent_id,
                       CASE WHEN kind = 'backfill' THEN created_at < now() - interval '90 days'
                            ELSE coalesce(finished_at < now() - interval '90 days', false) END,
                       finished_at, trigger, coalesce(metrics ? 'expectations', false)
                FROM jobs
                """, logger: logger).decode((Int64, String, String, Int64?, String?, Date?, Int64?, Bool, Date?, String, Bool).self) {
                jobs.append(Job(
                    id: id, kind: kind, state: state, version: version, environment: environment, end: end, parent: parent, old: old,
                    finished: finished, trigger: trigger, checked: checked))
            }
            // The oracle: what must stay.
            let ended: Set<String> = ["succeeded", "failed", "cancelled"]
            var newest: [String: Job] = [:]
            for job in jobs where job.kind == "materialize" && job.state == "succeeded" {
                let key = "\(job.version ?? 0)/\(job.environment ?? "")"
                if let other = newest[key], (other.end!, other.id) > (job.end!, job.id) { continue }
                newest[key] = job
            }
            // And per version, the newest finished scheduled run, and the newest with expectation results (alerts read them).
            var lastRun: [Int64: Job] = [:], lastChecked: [Int64: Job] = [:]
            for job in jobs where job.kind == "materialize" && ["succeeded", "failed"].contains(job.state) && job.trigger != JobScheduler.recomputeTrigger {
                let version = job.version ?? 0
                func newer(_ a: Job, _ b: Job?) -> Bool { b.map { (a.finished!, a.id) > ($0.finished!, $0.id) } ?? true }
                if newer(job, lastRun[version]) { lastRun[version] = job }
                if job.checked, newer(job, lastChecked[version]) { lastChecked[version] = job }
            }
            let keepers = Set(newest.values).union(lastRun.values).union(lastChecked.values)
            let keptChildren = Set(jobs.filter { job in
                job.kind != "backfill" && (!ended.contains(job.state) || !job.old || (job.kind == "dataset" && job.state == "succeeded")
                    || keepers.contains(job))
            })
            let keptParents = Set(jobs.filter { job in
                job.kind == "backfill" && (!job.old || keptChildren.contains { $0.parent == job.id })
            })
            let freshnessBefore = try await fixture.server.client.freshness(workspace: SchedulerFixture.workspace)
            let plansBefore = try await client.query("SELECT count(*)::int FROM plans", logger: logger).decode(Int.self).first { _ in true } ?? 0

            let pruned = try await HistoryRetention.prune(now: Date(), retention: 90 * 86_400, client: client, logger: logger)

            var left: Set<Int64> = []
            for try await id in try await client.query("SELECT id FROM jobs", logger: logger).decode(Int64.self) { left.insert(id) }
            #expect(left == Set((keptChildren.union(keptParents)).map(\.id)), "seed \(seed)")
            #expect(pruned.jobs == jobs.count - left.count)
            #expect(pruned.jobs > 0)
            // Attempts and events went with their jobs.
            let orphans = try await client.query(
                "SELECT count(*)::int FROM job_events e WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = e.job_id)", logger: logger)
            #expect(try await orphans.decode(Int.self).first { _ in true } == 0)
            #expect(pruned.plans == 1)
            #expect(try await client.query("SELECT count(*)::int FROM plans", logger: logger).decode(Int.self).first { _ in true } == plansBefore - 1)
            var subjects: [String] = []
            for try await subject in try await client.query("SELECT subject FROM alerts ORDER BY subject", logger: logger).decode(String.self) {
                subjects.append(subject)
            }
            #expect(pruned.alerts == 1 && subjects == ["b", "c"])
            // The watermarks freshness reads are the same.
            let freshnessAfter = try await fixture.server.client.freshness(workspace: SchedulerFixture.workspace)
            #expect(freshnessAfter.map(\.watermark) == freshnessBefore.map(\.watermark))
            // A second pass finds nothing more.
            #expect(try await HistoryRetention.prune(now: Date(), retention: 90 * 86_400, client: client, logger: logger) == HistoryRetention.Pruned())
        }
    }
}

import ControlPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

/// Agent-offline and job-failed alerts, and their recoveries, against a real control plane.
@Suite("Alerts: quiet agents and failed jobs")
struct AlertTests {
    @Test("an agent silent for three heartbeats opens one agent-offline alert, resolved when it heartbeats again; a materialization that failed for good opens a job-failed alert, resolved when the view's next one succeeds")
    func agentsAndJobs() async throws {
        try await JobsFixture.with(agents: 2, settings: JobsFixture.patientSettings) { fixture in
            try await TestDatabase.withClient(fixture.server.database) { database in
                let monitor = AlertMonitor(client: database, logger: Logger(label: "test"), heartbeat: .seconds(10))
                for (index, agent) in fixture.agents.enumerated() {
                    _ = try await agent.heartbeat(AgentHeartbeat(instanceId: "instance-\(index + 1)", runningJobs: []))
                }
                #expect(try await monitor.evaluate(now: Date()).opened.isEmpty, "both agents heartbeat just now")
                let silent = try await monitor.evaluate(now: Date().addingTimeInterval(100))
                #expect(silent.opened.map(\.kind) == ["agent-offline", "agent-offline"])
                #expect(silent.opened.map(\.subject).sorted() == ["agent-1", "agent-2"])
                #expect(try await monitor.evaluate(now: Date().addingTimeInterval(101)).opened.isEmpty, "one open alert per agent")

                // agent-1 heartbeats again; agent-2 stays silent.
                // Judged at a moment 30 s (three intervals) after agent-1's heartbeat, less 0.6 s: agent-1
                // heartbeat within the window, agent-2's last one (1.2 s or more before) outside it.
                try await Task.sleep(for: .milliseconds(1_200))
                let before = Date()
                _ = try await fixture.agents[0].heartbeat(AgentHeartbeat(instanceId: "instance-1", runningJobs: []))
                let back = try await monitor.evaluate(now: before.addingTimeInterval(29.4))
                #expect(back.resolved.map(\.subject) == ["agent-1"] && back.resolved.first?.resolvedDetail == "recovered: agent-1 heartbeats again")
                #expect(back.opened.isEmpty)

                // A materialization that fails for good, then succeeds on retry.
                _ = try await fixture.materialize(hours: 1)
                let claimed = try #require(try await fixture.claim(0))
                _ = try await fixture.agents[0].complete(job: claimed.id, JobsFixture.failure(claimed, retryable: false))
                let failed = try await monitor.evaluate(now: Date())
                let alert = try #require(failed.opened.first { $0.kind == "job-failed" })
                #expect(alert.subject == "materialization of driver_hourly_stats" && alert.detail.contains("source unavailable"))
                _ = try await fixture.server.client.retryJob(claimed.id, workspace: JobsFixture.workspace)
                let again = try #require(try await fixture.claim(0))
                _ = try await fixture.agents[0].complete(job: again.id, JobsFixture.success(again))
                let succeeded = try await monitor.evaluate(now: Date())
                #expect(succeeded.resolved.map(\.subject).contains("materialization of driver_hourly_stats"))
                let open = try await fixture.server.client.alerts(workspace: JobsFixture.workspace)
                #expect(!open.contains { $0.kind == "job-failed" }, "\(open)")
            }
        }
    }

    @Test("materialization stops: the scheduler's own loop opens a stale alert at the first tick past the SLO, not before")
    func staleThroughSchedulerLoop() async throws {
        let start = RFC3339.parse("2025-01-03T00:05:00Z")!
        try await SchedulerFixture.with(start: start) { fixture in
            let client = fixture.server.client
            _ = try await client.createTestAgent(name: "agent-1", environment: "prod", workspace: SchedulerFixture.workspace)
            let agent = ControlPlaneClient(baseURL: fixture.server.baseURL, token: try await client.createToken(for: "agent-1").token)
            _ = try await agent.hello(AgentHello(instanceId: "i", version: "test", hostname: "test", capabilities: [.materialize]))
            let scheduler = fixture.scheduler("replica-a", interval: .milliseconds(100))
            // The new version's backfill runs to completion first: the loop would rightly call the view
            // stale between its two daily chunks.
            /// Runs queued jobs until the view is materialized to the last hour boundary before the clock;
            /// `ticking`, before the loop runs, ticks by hand (a backfill's chunks may take several ticks to queue).
            func catchUp(ticking: Bool = false) async throws {
                let target = Date(timeIntervalSince1970: (fixture.clock.now.timeIntervalSince1970 / 3_600).rounded(.down) * 3_600)
                let deadline = Date().addingTimeInterval(60)
                while Date() < deadline {
                    if ticking {
                        #expect(try await scheduler.holdLease())
                        _ = try await scheduler.tick()
                    }
                    while let claimed = try await agent.claim(ClaimRequest(instanceId: "i", kinds: [.materialize], waitSeconds: 0)) {
                        _ = try await agent.complete(job: claimed.id, JobsFixture.success(claimed))
                    }
                    let views = try await client.freshness(workspace: SchedulerFixture.workspace)
                    if views.first(where: { $0.view == "driver_hourly_stats" })?.watermark == target { return }
                    try await Task.sleep(for: .milliseconds(50))
                }
                let rows = try await fixture.client.query(
                    "SELECT id || ' ' || kind || ' ' || state || ' ' || coalesce(interval_start::text, '') || ' nb ' || not_before::text || ' now ' || now()::text FROM jobs ORDER BY id",
                    logger: Logger(label: "test"))
                var jobs: [String] = []
                for try await row in rows.decode(String.self) { jobs.append(row) }
                Issue.record("driver_hourly_stats was not materialized to \(RFC3339.format(target)): \(jobs)")
            }
            try await catchUp(ticking: true)
            let loop = Task { try await scheduler.run() }
            defer { loop.cancel() }
            /// Waits until the loop has renewed its lease twice since the call: a whole iteration (tick and
            /// alert evaluation) ran at the clock's current time, however loaded the machine is.
            func settle(working: Bool) async throws {
                func expiry() async throws -> Date? {
                    let rows = try await fixture.client.query(
                        "SELECT expires_at FROM leader_leases WHERE name = 'scheduler'", logger: Logger(label: "test"))
                    for try await value in rows.decode(Date.self) { return value }
                    return nil
                }
                var last = try await expiry(), renewals = 0
                let deadline = Date().addingTimeInterval(60)
                while renewals < 2, Date() < deadline {
                    try await Task.sleep(for: .milliseconds(50))
                    let current = try await expiry()
                    if let current, current != last { renewals += 1; last = current }
                }
                #expect(renewals == 2, "the scheduler loop did not run")
                if working { try await catchUp() }
            }
            func staleAlert() async throws -> AlertResource? {
                try await client.alerts(workspace: SchedulerFixture.workspace).first { $0.kind == "stale" && $0.subject == "driver_hourly_stats@prod" }
            }
            // Hourly runs while the agent works: never stale (the SLO is twice the schedule, 2h).
            for _ in 0..<3 {
                fixture.clock.advance(by: 3_600)
                try await settle(working: true)
                if let alert = try await staleAlert() {
                    let jobs = try await fixture.materializations(of: "driver_hourly_stats")
                        .map { "\($0.id) \($0.state) \(RFC3339.format($0.start!))–\(RFC3339.format($0.end!)) \($0.trigger ?? "")" }
                    Issue.record("stale while materializing at \(RFC3339.format(fixture.clock.now)): \(alert.detail); jobs: \(jobs)")
                }
            }
            let reading = try #require(try await client.freshness(workspace: SchedulerFixture.workspace).first { $0.view == "driver_hourly_stats" })
            let watermark = try #require(reading.watermark)
            #expect(watermark == RFC3339.parse("2025-01-03T03:00:00Z"))
            #expect(reading.expectedSeconds == 7_200)

            // The agent stops; time moves in 10-minute steps. The alert opens at the first tick more than 2h past the watermark.
            var opened: AlertResource?
            for _ in 0..<20 where opened == nil {
                fixture.clock.advance(by: 600)
                try await settle(working: false)
                opened = try await staleAlert()
                let behind = fixture.clock.now.timeIntervalSince(watermark)
                if behind <= 7_200 { #expect(opened == nil, "stale only \(behind) s behind") }
            }
            let alert = try #require(opened)
            let behind = alert.openedAt.timeIntervalSince(watermark)
            #expect(behind > 7_200 && behind <= 7_800, "opened \(behind) s past the watermark")
            #expect(alert.detail.contains("its SLO is 2h"), "\(alert.detail)")
        }
    }

    @Test("the scheduler's own loop raises agent-offline when a real agent client stops heartbeating, and resolves it when it comes back")
    func schedulerLoopRaisesAndResolves() async throws {
        let settings = JobSettings(
            leaseDuration: .seconds(5), heartbeatInterval: .seconds(1), maxClaimWait: .seconds(2), schedulerInterval: .milliseconds(200),
            schedulerEnabled: true)
        try await TestControlPlane.withControlPlane(jobs: settings) { server in
            let client = server.client
            _ = try await client.createWorkspace("rides")
            _ = try await client.createTestAgent(name: "agent-1", environment: "prod", workspace: "rides")
            let agent = ControlPlaneClient(baseURL: server.baseURL, token: try await client.createToken(for: "agent-1").token)
            _ = try await agent.hello(AgentHello(instanceId: "i1", version: "test", hostname: "test", capabilities: [.materialize]))
            func open() async throws -> [AlertResource] { try await client.alerts(workspace: "rides").filter { $0.kind == "agent-offline" } }
            // Silent: within a few seconds past three heartbeat intervals, the alert is open.
            var deadline = Date().addingTimeInterval(20)
            while try await open().isEmpty, Date() < deadline { try await Task.sleep(for: .milliseconds(200)) }
            #expect(try await open().map(\.subject) == ["agent-1"])
            // Back: it resolves.
            _ = try await agent.heartbeat(AgentHeartbeat(instanceId: "i1", runningJobs: []))
            deadline = Date().addingTimeInterval(20)
            while try await !open().isEmpty, Date() < deadline {
                _ = try await agent.heartbeat(AgentHeartbeat(instanceId: "i1", runningJobs: []))
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(try await open().isEmpty)
            let all = try await client.alerts(workspace: "rides", all: true).filter { $0.kind == "agent-offline" }
            #expect(all.count == 1 && all.first?.resolvedDetail == "recovered: agent-1 heartbeats again")
        }
    }
}

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

    @Test("the scheduler's own loop raises agent-offline when a real agent client stops heartbeating, and resolves it when it comes back")
    func schedulerLoopRaisesAndResolves() async throws {
        let settings = JobSettings(
            leaseDuration: .seconds(5), heartbeatInterval: .seconds(1), maxClaimWait: .seconds(2), schedulerInterval: .milliseconds(200),
            schedulerEnabled: true)
        try await TestControlPlane.withControlPlane(jobs: settings) { server in
            let client = server.client
            _ = try await client.createWorkspace("rides")
            _ = try await client.createAgent(name: "agent-1", environment: "prod", workspace: "rides")
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

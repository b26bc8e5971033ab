import ControlPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

@Suite("Environments")
struct EnvironmentTests {
    static let workspace = "rides"

    static func problem(_ body: () async throws -> Void) async -> ProblemDetails? {
        do {
            try await body()
            return nil
        } catch {
            return error as? ProblemDetails
        }
    }

    @Test("create, list, describe and delete; bad names, duplicates and unknown environments are refused with what to do, and nothing is half made")
    func lifecycle() async throws {
        try await TestControlPlane.withControlPlane { server in
            let admin = server.client
            _ = try await admin.createWorkspace(Self.workspace)
            let prod = try await admin.createEnvironment(
                CreateEnvironmentRequest(name: "prod", onlineStore: .redis, description: "production, eu-west"), workspace: Self.workspace)
            #expect(prod.onlineStore == .redis && prod.description == "production, eu-west" && prod.agents.isEmpty && !prod.createdBy.isEmpty)
            _ = try await admin.createEnvironment(CreateEnvironmentRequest(name: "staging"), workspace: Self.workspace)
            #expect(try await admin.environments(workspace: Self.workspace).map(\.name) == ["prod", "staging"])
            #expect(try await admin.environment("staging", workspace: Self.workspace).onlineStore == .embedded)

            let duplicate = await Self.problem { _ = try await admin.createEnvironment(CreateEnvironmentRequest(name: "prod"), workspace: Self.workspace) }
            #expect(duplicate?.status == 409 && duplicate?.type == "urn:larder:problem:environment-exists" && duplicate?.field == "name")
            let invalid = await Self.problem { _ = try await admin.createEnvironment(CreateEnvironmentRequest(name: "Prod EU"), workspace: Self.workspace) }
            #expect(invalid?.status == 400 && invalid?.field == "name")

            // An agent, an enrollment token, a materialization or a dataset for an environment that does not exist: 404, nothing made.
            let agent = await Self.problem { _ = try await admin.createAgent(name: "stray", environment: "qa", workspace: Self.workspace) }
            #expect(agent?.status == 404 && agent?.type == "urn:larder:problem:environment-not-found" && agent?.field == "environment")
            #expect(agent?.detail.contains("larder environments create qa") == true)
            let token = await Self.problem {
                _ = try await admin.createEnrollmentToken(CreateEnrollmentTokenRequest(environment: "qa"), workspace: Self.workspace)
            }
            #expect(token?.type == "urn:larder:problem:environment-not-found")
            try await RepositoryFixture.example(workspace: Self.workspace).unscheduled().apply(to: Self.workspace, with: admin)
            let start = RFC3339.parse("2025-01-01T00:00:00Z")!
            let materialize = await Self.problem {
                _ = try await admin.materialize(
                    MaterializeRequest(featureView: "driver_hourly_stats", start: start, end: start.addingTimeInterval(7_200), chunk: "1h", environment: "qa"),
                    workspace: Self.workspace)
            }
            #expect(materialize?.type == "urn:larder:problem:environment-not-found")
            // 60,000 one-minute chunks are allowed for one environment, not for each of two: the bound counts them all.
            let tooMany = await Self.problem {
                _ = try await admin.materialize(
                    MaterializeRequest(featureView: "driver_hourly_stats", start: start, end: start.addingTimeInterval(60_000 * 60), chunk: "1m"),
                    workspace: Self.workspace)
            }
            #expect(tooMany?.status == 400 && tooMany?.field == "chunk" && tooMany?.detail.contains("2 environments") == true, "\(String(describing: tooMany))")
            #expect(try await admin.jobs(workspace: Self.workspace).items.isEmpty)
            #expect(try await admin.principals().contains { $0.name == "stray" } == false)

            // An environment with agents cannot go; once its agent is removed it can, with its queued jobs.
            _ = try await admin.createAgent(name: "agent-1", environment: "staging", workspace: Self.workspace)
            _ = try await admin.materialize(
                MaterializeRequest(featureView: "driver_hourly_stats", start: start, end: start.addingTimeInterval(7_200), chunk: "1h", environment: "staging"),
                workspace: Self.workspace)
            let inUse = await Self.problem { try await admin.deleteEnvironment("staging", workspace: Self.workspace) }
            #expect(inUse?.status == 409 && inUse?.type == "urn:larder:problem:environment-in-use" && inUse?.detail.contains("agent-1") == true)
            try await admin.removeAgent("agent-1", workspace: Self.workspace)
            try await admin.deleteEnvironment("staging", workspace: Self.workspace)
            #expect(try await admin.environments(workspace: Self.workspace).map(\.name) == ["prod"])
            #expect(try await admin.jobs(workspace: Self.workspace).items.isEmpty)
            let gone = await Self.problem { _ = try await admin.environment("staging", workspace: Self.workspace) }
            #expect(gone?.status == 404)
            // A workspace has at most 64 environments (each scheduled interval is queued in every one).
            for index in 1..<PostgresEnvironmentStore.maximumPerWorkspace {
                _ = try await admin.createEnvironment(CreateEnvironmentRequest(name: "region-\(index)"), workspace: Self.workspace)
            }
            let beyond = await Self.problem { _ = try await admin.createEnvironment(CreateEnvironmentRequest(name: "one-more"), workspace: Self.workspace) }
            #expect(beyond?.status == 400 && beyond?.field == "name" && beyond?.detail.contains("64 environments") == true, "\(String(describing: beyond))")
            #expect(try await admin.environments(workspace: Self.workspace).count == PostgresEnvironmentStore.maximumPerWorkspace)
        }
    }

    @Test("an embedded store takes one agent: a second is refused at hello saying why and how to switch, until the first is removed; an agent whose store is not its environment's kind is refused")
    func embeddedSingleWriter() async throws {
        try await TestControlPlane.withControlPlane { server in
            let admin = server.client
            _ = try await admin.createWorkspace(Self.workspace)
            var agents: [ControlPlaneClient] = []
            for name in ["agent-1", "agent-2"] {
                try await admin.createTestAgent(name: name, environment: "prod", workspace: Self.workspace)
                agents.append(ControlPlaneClient(baseURL: server.baseURL, token: try await admin.createToken(for: name).token))
            }
            func hello(_ index: Int, _ store: OnlineStoreKind = .embedded) async -> ProblemDetails? {
                await Self.problem {
                    _ = try await agents[index].hello(AgentHello(
                        instanceId: "i\(index)-\(UUID())", version: "test", hostname: "h", capabilities: [.materialize], onlineStore: store))
                }
            }
            #expect(await hello(0) == nil)
            #expect(await hello(0) == nil, "the writer restarting (a new instance) is the same agent")
            let second = await hello(1)
            #expect(second?.status == 409 && second?.type == "urn:larder:problem:embedded-store-taken" && second?.field == "environment")
            #expect(second?.detail.contains("agent-1") == true && second?.detail.contains("redis") == true && second?.detail.contains("larder agents remove") == true)
            #expect(try await admin.environment("prod", workspace: Self.workspace).writer == "agent-1")
            // Claims stay the first agent's: the refused one never said hello.
            let mismatch = await hello(0, .redis)
            #expect(mismatch?.status == 409 && mismatch?.type == "urn:larder:problem:online-store-mismatch" && mismatch?.field == "online_store")
            try await admin.removeAgent("agent-1", workspace: Self.workspace)
            #expect(await hello(1) == nil)
            #expect(try await admin.environment("prod", workspace: Self.workspace).writer == "agent-2")
        }
    }

    @Test("every materialization is queued once per environment, over random schedules of ticks and claims: each environment's agents run exactly its own intervals, every interval once per environment; freshness is per environment",
          arguments: [1, 2, 3] as [UInt64])
    func queuedPerEnvironment(seed: UInt64) async throws {
        let settings = JobSettings(
            leaseDuration: .seconds(60), heartbeatInterval: .seconds(1), maxClaimWait: .seconds(1), retryBaseDelay: .milliseconds(20),
            retryMaxDelay: .milliseconds(100), maxAttempts: 4, schedulerEnabled: false)
        try await TestControlPlane.withControlPlane(jobs: settings) { server in
            let admin = server.client
            var random = SeededGenerator(seed: seed)
            _ = try await admin.createWorkspace(Self.workspace)
            let environments = ["eu", "us"] + (seed % 2 == 0 ? ["staging"] : [])
            var agents: [(client: ControlPlaneClient, environment: String, instance: String)] = []
            for environment in environments {
                // Shared stores, so several agents per environment may claim.
                for index in 1...Int.random(in: 1...2, using: &random) {
                    let name = "\(environment)-\(index)"
                    try await admin.createTestAgent(name: name, environment: environment, workspace: Self.workspace, onlineStore: .redis)
                    let client = ControlPlaneClient(baseURL: server.baseURL, token: try await admin.createToken(for: name).token)
                    _ = try await client.hello(AgentHello(instanceId: name, version: "test", hostname: "h", capabilities: [.materialize], onlineStore: .redis))
                    agents.append((client, environment, name))
                }
            }
            try await RepositoryFixture.example(workspace: Self.workspace).unscheduled().apply(to: Self.workspace, with: admin)
            let start = RFC3339.parse("2025-01-01T00:00:00Z")!
            let hours = Int.random(in: 3...8, using: &random)
            let response = try await admin.materialize(
                MaterializeRequest(featureView: "driver_hourly_stats", start: start, end: start.addingTimeInterval(Double(hours) * 3_600), chunk: "1h"),
                workspace: Self.workspace)
            #expect(response.backfills.map { $0.environment ?? "-" } == environments.sorted())
            #expect(response.chunksQueued == hours * environments.count && response.chunksSkipped == 0)
            // Asking again queues nothing new in any environment.
            let again = try await admin.materialize(
                MaterializeRequest(featureView: "driver_hourly_stats", start: start, end: start.addingTimeInterval(Double(hours) * 3_600), chunk: "1h"),
                workspace: Self.workspace)
            #expect(again.chunksQueued == 0 && again.chunksSkipped == hours * environments.count)

            // Agents claim in a random order until nothing is left; each claim is its own environment's.
            var ran: [String: [Date]] = [:]
            var idle = Set<Int>()
            while idle.count < agents.count {
                let index = Int.random(in: 0..<agents.count, using: &random)
                let agent = agents[index]
                guard let claimed = try await agent.client.claim(ClaimRequest(instanceId: agent.instance, kinds: [.materialize], waitSeconds: 0)) else {
                    idle.insert(index)
                    continue
                }
                let job = try await admin.job(claimed.id, workspace: Self.workspace).job
                #expect(job.environment == agent.environment, "job \(job.id) of \(job.environment ?? "-") claimed by an agent of \(agent.environment)")
                ran[agent.environment, default: []].append(job.start!)
                // Only the first environment completes its work: freshness differs between them.
                if agent.environment == environments[0] {
                    _ = try await agent.client.complete(job: claimed.id, JobsFixture.success(claimed))
                }
            }
            let every = (0..<hours).map { start.addingTimeInterval(Double($0) * 3_600) }
            for environment in environments {
                #expect(ran[environment]?.sorted() == every, "\(environment): \(ran[environment]?.map(RFC3339.format) ?? [])")
            }
            let readings = try await admin.freshness(workspace: Self.workspace).filter { $0.view == "driver_hourly_stats" }
            #expect(readings.map { $0.environment ?? "-" } == environments.sorted())
            let end = start.addingTimeInterval(Double(hours) * 3_600)
            for reading in readings {
                #expect((reading.watermark == end) == (reading.environment == environments[0]), "\(reading)")
            }
            let filtered = try await admin.jobs(workspace: Self.workspace, kind: .materialize, environment: environments[0], limit: 1_000).items
            #expect(filtered.count == hours && filtered.allSatisfy { $0.environment == environments[0] })
        }
    }

    @Test("the scheduler queues each due interval for every environment; a new environment catches up from the view's start on its own")
    func schedulerPerEnvironment() async throws {
        let day2 = RFC3339.parse("2025-01-03T00:00:00Z")!
        try await SchedulerFixture.with(start: day2) { fixture in
            let scheduler = fixture.scheduler("replica-a")
            #expect(try await scheduler.holdLease())
            #expect(try await scheduler.tick() > 0)
            let first = try await fixture.materializations(of: "driver_hourly_stats")
            #expect(!first.isEmpty && first.allSatisfy { $0.environment == "prod" })
            _ = try await fixture.server.client.createEnvironment(CreateEnvironmentRequest(name: "staging"), workspace: SchedulerFixture.workspace)
            fixture.clock.advance(by: 2 * 3_600 + 60)
            #expect(try await scheduler.holdLease())
            #expect(try await scheduler.tick() > 0)
            let all = try await fixture.materializations(of: "driver_hourly_stats")
            let prod = all.filter { $0.environment == "prod" }.map { "\($0.start!)-\($0.end!)" }
            let staging = all.filter { $0.environment == "staging" }
            // Staging's own backfill covers from the start, in chunks; its hourly runs follow.
            #expect(staging.first?.start == first.first?.start, "\(staging.map { RFC3339.format($0.start!) })")
            #expect(staging.last?.end == all.filter { $0.environment == "prod" }.compactMap(\.end).max())
            #expect(Set(prod).count == prod.count, "an interval queued twice for one environment")
        }
    }

    @Test("an install from before environments gets one environment per environment its agents, tokens and jobs named")
    func migration() async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            try await TestDatabase.withClient(url) { client in
                let logger = Logger(label: "test")
                try await MigrationRunner(migrations: ControlPlaneMigrations.all.filter { $0.version < 17 }).run(on: client, logger: logger)
                try await client.query("INSERT INTO workspaces (name, created_by) VALUES ('rides', 'test'), ('payments', 'test')", logger: logger)
                try await client.query(
                    """
                    INSERT INTO principals (name, kind, workspace_id, environment, created_by)
                    SELECT 'agent-' || e, 'agent', w.id, e, 'test' FROM workspaces w, unnest(ARRAY['prod', 'staging']) AS e WHERE w.name = 'rides'
                    """, logger: logger)
                try await client.query(
                    """
                    INSERT INTO enrollment_tokens (public_id, secret_hash, workspace_id, environment, created_by, expires_at)
                    SELECT 'tok', '\\x00'::bytea, id, 'eu', 'test', now() + interval '1 hour' FROM workspaces WHERE name = 'payments'
                    """, logger: logger)
                try await MigrationRunner().run(on: client, logger: logger)
                var found: [String] = []
                for try await (workspace, environment, kind) in try await client.query(
                    """
                    SELECT w.name, e.name, e.online_store FROM environments e JOIN workspaces w ON w.id = e.workspace_id ORDER BY 1, 2
                    """, logger: logger).decode((String, String, String).self) {
                    found.append("\(workspace)/\(environment)/\(kind)")
                }
                #expect(found == ["payments/eu/embedded", "rides/prod/embedded", "rides/staging/embedded"])
            }
        }
    }
}

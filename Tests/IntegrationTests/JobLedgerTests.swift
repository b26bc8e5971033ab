import ControlPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

/// A control plane with the example applied to `rides`, agents saying hello
/// over HTTP, and a direct handle on the jobs store (for lease expiry).
struct JobsFixture: Sendable {
    static let workspace = "rides"
    let server: RunningControlPlane
    let agents: [ControlPlaneClient]
    let store: PostgresJobStore
    let keys: SigningKeys

    static let settings = JobSettings(
        leaseDuration: .seconds(1), heartbeatInterval: .seconds(1), maxClaimWait: .seconds(2), retryBaseDelay: .milliseconds(20),
        retryMaxDelay: .milliseconds(100), maxAttempts: 4, schedulerEnabled: false)

    /// Leases long enough that a loaded test machine never loses one by accident.
    static let patientSettings = JobSettings(
        leaseDuration: .seconds(60), heartbeatInterval: .seconds(1), maxClaimWait: .seconds(30), retryBaseDelay: .milliseconds(20),
        retryMaxDelay: .milliseconds(100), maxAttempts: 4, schedulerEnabled: false, claimRecheckInterval: .seconds(30))

    static func with<Result: Sendable>(
        agents count: Int, settings: JobSettings = settings, _ body: (JobsFixture) async throws -> Result
    ) async throws -> Result {
        try await TestControlPlane.withControlPlane(jobs: settings) { server in
            _ = try await server.client.createWorkspace(workspace)
            try await RepositoryFixture.example(workspace: workspace).unscheduled().apply(to: workspace, with: server.client)
            var agents: [ControlPlaneClient] = []
            for index in 1...max(count, 1) {
                // Several agents share an environment: its online store is Redis.
                _ = try await server.client.createTestAgent(name: "agent-\(index)", environment: "prod", workspace: workspace, onlineStore: .redis)
                let token = try await server.client.createToken(for: "agent-\(index)").token
                let agent = ControlPlaneClient(baseURL: server.baseURL, token: token)
                _ = try await agent.hello(AgentHello(
                    instanceId: "instance-\(index)", version: "test", hostname: "test", capabilities: [.materialize], onlineStore: .redis))
                agents.append(agent)
            }
            return try await TestDatabase.withClient(server.database) { client in
                let keys = SigningKeys(client: client, logger: Logger(label: "test"))
                let store = PostgresJobStore(client: client, logger: Logger(label: "test"), keys: keys, settings: settings)
                return try await body(JobsFixture(server: server, agents: agents, store: store, keys: keys))
            }
        }
    }

    func materialize(hours: Int, offsetHours: Int = 0) async throws -> MaterializeResponse {
        let start = RFC3339.parse("2025-01-01T00:00:00Z")!.addingTimeInterval(Double(offsetHours) * 3_600)
        return try await server.client.materialize(
            MaterializeRequest(featureView: "driver_hourly_stats", start: start, end: start.addingTimeInterval(Double(hours) * 3_600), chunk: "1h"),
            workspace: Self.workspace)
    }

    func claim(_ agent: Int, wait: Int = 0) async throws -> ClaimedJob? {
        try await agents[agent].claim(ClaimRequest(instanceId: "instance-\(agent + 1)", kinds: [.materialize], waitSeconds: wait))
    }

    func detail(_ job: Int64) async throws -> JobDetailResource { try await server.client.job(job, workspace: Self.workspace) }

    static func success(_ claimed: ClaimedJob) -> JobCompletion {
        JobCompletion(
            leaseToken: claimed.leaseToken, outcome: .succeeded, startedAt: Date(), finishedAt: Date(),
            metrics: JobMetrics(rowsRead: 10, rowsWritten: 5, features: [FeatureSummary(feature: "conv_rate", count: 5, nullCount: 0, min: 0.1, max: 0.9, mean: 0.5)]))
    }

    static func failure(_ claimed: ClaimedJob, retryable: Bool) -> JobCompletion {
        JobCompletion(
            leaseToken: claimed.leaseToken, outcome: .failed, startedAt: Date(), finishedAt: Date(),
            failure: JobFailure(message: "source unavailable", retryable: retryable))
    }
}

/// What the simulated agents saw, for checking against the ledger afterwards.
actor Observations {
    var claims: [(job: Int64, attempt: Int, token: UUID)] = []
    var acceptedSuccesses: [Int64: Int] = [:]
    var zombies: [(job: Int64, attempt: Int, token: UUID, agent: Int)] = []
    var staleRejections = 0
    var staleAccepted = 0

    func claimed(_ job: ClaimedJob) { claims.append((job.id, job.attempt, job.leaseToken)) }
    func succeeded(_ job: Int64) { acceptedSuccesses[job, default: 0] += 1 }
    func abandoned(_ job: ClaimedJob, by agent: Int) { zombies.append((job.id, job.attempt, job.leaseToken, agent)) }
    func takeZombie() -> (job: Int64, attempt: Int, token: UUID, agent: Int)? { zombies.isEmpty ? nil : zombies.removeFirst() }
    func putBack(_ zombie: (job: Int64, attempt: Int, token: UUID, agent: Int)) { zombies.append(zombie) }
    func stale(rejected: Bool) { if rejected { staleRejections += 1 } else { staleAccepted += 1 } }
}

@Suite("Jobs ledger and the agent protocol")
struct JobLedgerTests {
    @Test("over random agent behaviour, a job is leased to one agent at a time, succeeds at most once, and stale completions are refused",
          arguments: [11, 23, 37] as [UInt64])
    func randomAgents(seed: UInt64) async throws {
        try await JobsFixture.with(agents: 4) { fixture in
            let started = try await fixture.materialize(hours: 24)
            #expect(started.chunksQueued == 24)
            let observations = Observations()
            let deadline = Date().addingTimeInterval(90)
            try await withThrowingTaskGroup(of: Void.self) { group in
                // The sweeper: returns expired leases to the queue, as the scheduler does.
                group.addTask {
                    while Date() < deadline {
                        try await fixture.store.expireLeases()
                        if try await fixture.server.client.job(started.backfill.id, workspace: JobsFixture.workspace).job.state.isTerminal { return }
                        try await Task.sleep(for: .milliseconds(100))
                    }
                }
                for agent in 0..<4 {
                    group.addTask {
                        var random = SeededGenerator(seed: seed &* 1_000 &+ UInt64(agent))
                        while Date() < deadline {
                            // Now and then, a zombie whose lease was taken away tries to complete.
                            if Int.random(in: 0..<100, using: &random) < 30, let zombie = await observations.takeZombie() {
                                let attempts = try await fixture.detail(zombie.job).attempts
                                if attempts.first(where: { $0.attempt == zombie.attempt })?.outcome == "lease-expired" {
                                    let stale = JobCompletion(
                                        leaseToken: zombie.token, outcome: .succeeded, startedAt: Date(), finishedAt: Date(),
                                        metrics: JobMetrics(rowsRead: 0, rowsWritten: 0))
                                    do {
                                        _ = try await fixture.agents[zombie.agent].complete(job: zombie.job, stale)
                                        await observations.stale(rejected: false)
                                    } catch let problem as ProblemDetails where problem.code == "lease-lost" {
                                        await observations.stale(rejected: true)
                                    }
                                } else {
                                    await observations.putBack(zombie)
                                }
                            }
                            guard let claimed = try await fixture.claim(agent, wait: 1) else {
                                if try await fixture.detail(started.backfill.id).job.state.isTerminal { return }
                                continue
                            }
                            await observations.claimed(claimed)
                            let client = fixture.agents[agent]
                            // On a slow machine a lease may run out before the report: that is
                            // the protocol working (the report is refused), not a failure.
                            func report(_ body: () async throws -> Void) async throws -> Bool {
                                do {
                                    try await body()
                                    return true
                                } catch let problem as ProblemDetails where problem.code == "lease-lost" {
                                    return false
                                }
                            }
                            switch Int.random(in: 0..<100, using: &random) {
                            case 0..<50:
                                if try await report({ _ = try await client.complete(job: claimed.id, JobsFixture.success(claimed)) }) {
                                    await observations.succeeded(claimed.id)
                                }
                            case 50..<65:
                                _ = try await report { _ = try await client.complete(job: claimed.id, JobsFixture.failure(claimed, retryable: true)) }
                            case 65..<70:
                                _ = try await report { _ = try await client.complete(job: claimed.id, JobsFixture.failure(claimed, retryable: false)) }
                            case 70..<85:
                                await observations.abandoned(claimed, by: agent)
                            default:
                                let done = try await report {
                                    _ = try await client.reportProgress(job: claimed.id, token: claimed.leaseToken, progress: JobProgress(phase: "reading"))
                                    _ = try await client.extendLease(job: claimed.id, token: claimed.leaseToken)
                                    _ = try await client.complete(job: claimed.id, JobsFixture.success(claimed))
                                }
                                if done { await observations.succeeded(claimed.id) }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }

            // Every agent that abandoned a job now wakes up and tries to complete it: all are refused.
            while let zombie = await observations.takeZombie() {
                let attempts = try await fixture.detail(zombie.job).attempts
                #expect(attempts.first { $0.attempt == zombie.attempt }?.outcome == "lease-expired")
                do {
                    _ = try await fixture.agents[zombie.agent].complete(job: zombie.job, JobCompletion(
                        leaseToken: zombie.token, outcome: .succeeded, startedAt: Date(), finishedAt: Date(),
                        metrics: JobMetrics(rowsRead: 0, rowsWritten: 0)))
                    await observations.stale(rejected: false)
                } catch let problem as ProblemDetails where problem.code == "lease-lost" {
                    await observations.stale(rejected: true)
                }
            }
            let backfill = try await fixture.detail(started.backfill.id).job
            #expect(backfill.state.isTerminal, "the backfill did not finish: \(String(describing: backfill.chunks))")
            let chunks = try await fixture.server.client.jobs(workspace: JobsFixture.workspace, parent: started.backfill.id).items
            #expect(chunks.count == 24)
            let claims = await observations.claims
            let successes = await observations.acceptedSuccesses
            #expect(Set(claims.map { "\($0.job)/\($0.attempt)" }).count == claims.count, "an attempt was handed out twice")
            #expect(Set(claims.map(\.token)).count == claims.count, "a lease token was reused")
            for chunk in chunks {
                let detail = try await fixture.detail(chunk.id)
                let attempts = detail.attempts
                #expect(attempts.map(\.attempt) == Array(1..<(attempts.count + 1)), "attempts of \(chunk.id) are not numbered 1…n")
                #expect(attempts.count == claims.filter { $0.job == chunk.id }.count)
                #expect(attempts.count <= chunk.maxAttempts)
                // One holder at a time: each attempt begins after the previous one ended.
                for (previous, next) in zip(attempts, attempts.dropFirst()) {
                    let ended = try #require(previous.endedAt, "attempt \(previous.attempt) of \(chunk.id) never ended")
                    #expect(next.claimedAt >= ended)
                }
                let succeeded = attempts.filter { $0.outcome == "succeeded" }.count
                #expect(succeeded <= 1)
                #expect((chunk.state == .succeeded) == (succeeded == 1))
                #expect((successes[chunk.id] ?? 0) == succeeded)
                if chunk.state == .succeeded { #expect(chunk.metrics?.rowsWritten == 5 && chunk.metrics?.features.first?.mean == 0.5) }
                if chunk.state == .failed {
                    let last = try #require(attempts.last)
                    #expect(last.failure?.retryable == false || attempts.count == chunk.maxAttempts, "\(chunk.id) failed early: \(attempts)")
                    if last.failure?.retryable != false { #expect(detail.events.contains { $0.event == "failed-permanently" }) }
                }
                #expect(chunk.state != .cancelled)
            }
            let expected: JobState = chunks.allSatisfy { $0.state == .succeeded } ? .succeeded : .failed
            #expect(backfill.state == expected)
            #expect(await observations.staleAccepted == 0)
            #expect(await observations.staleRejections > 0, "no zombie tried to complete: the seed exercised no fencing")
        }
    }

    @Test("cancel reaches a running agent through its lease and heartbeat; retry queues again; re-materializing skips what is done")
    func cancelAndRetry() async throws {
        try await JobsFixture.with(agents: 1, settings: JobsFixture.patientSettings) { fixture in
            let started = try await fixture.materialize(hours: 2)
            let agent = fixture.agents[0]
            let first = try #require(try await fixture.claim(0))
            _ = try await agent.reportProgress(job: first.id, token: first.leaseToken, progress: JobProgress(phase: "reading", fraction: 0.5))
            #expect(try await fixture.detail(first.id).job.state == .running)
            #expect(try await fixture.detail(started.backfill.id).job.state == .running)

            let cancelling = try await fixture.server.client.cancelJob(first.id, workspace: JobsFixture.workspace)
            #expect(cancelling.state == .running && cancelling.cancelRequested)
            #expect(try await agent.extendLease(job: first.id, token: first.leaseToken).cancelRequested)
            #expect(try await agent.heartbeat(AgentHeartbeat(instanceId: "instance-1", runningJobs: [first.id])).abort == [first.id])
            let cancelled = try await agent.complete(
                job: first.id, JobCompletion(leaseToken: first.leaseToken, outcome: .cancelled, startedAt: Date(), finishedAt: Date()))
            #expect(cancelled.state == .cancelled)

            let second = try await fixture.server.client.jobs(workspace: JobsFixture.workspace, state: .queued, view: "driver_hourly_stats").items
            #expect(second.count == 1)
            let queued = try #require(second.first)
            #expect(try await fixture.server.client.cancelJob(queued.id, workspace: JobsFixture.workspace).state == .cancelled)
            #expect(try await fixture.claim(0) == nil)
            #expect(try await fixture.detail(started.backfill.id).job.state == .cancelled)
            await #expect { _ = try await fixture.server.client.cancelJob(queued.id, workspace: JobsFixture.workspace) } throws: {
                ($0 as? ProblemDetails)?.code == "invalid-job-state"
            }

            // Retrying the backfill queues both cancelled chunks again.
            let retried = try await fixture.server.client.retryJob(started.backfill.id, workspace: JobsFixture.workspace)
            #expect(retried.state == .running && retried.chunks?["queued"] == 2)
            var seen: [Int64: Int] = [:]
            while let claimed = try await fixture.claim(0) {
                seen[claimed.id] = claimed.attempt
                await #expect { _ = try await fixture.server.client.retryJob(claimed.id, workspace: JobsFixture.workspace) } throws: {
                    ($0 as? ProblemDetails)?.code == "invalid-job-state"
                }
                _ = try await agent.complete(job: claimed.id, JobsFixture.success(claimed))
            }
            #expect(seen == [first.id: 2, queued.id: 1])
            #expect(try await fixture.detail(started.backfill.id).job.state == .succeeded)
            let events = try await fixture.detail(first.id).events.map(\.event)
            #expect(events == ["queued", "claimed", "cancel-requested", "cancelled", "retried", "claimed", "succeeded"])

            let again = try await fixture.materialize(hours: 3)
            #expect(again.chunksQueued == 1 && again.chunksSkipped == 2)
            // A succeeded job can be run again on request.
            #expect(try await fixture.server.client.retryJob(first.id, workspace: JobsFixture.workspace).state == .queued)
        }
    }

    @Test("a retryable failure waits out its backoff; the last attempt's failure is permanent and raises an event")
    func backoffAndExhaustion() async throws {
        try await JobsFixture.with(agents: 1) { fixture in
            _ = try await fixture.materialize(hours: 1)
            var attempts = 0
            while let claimed = try await fixture.claim(0, wait: 2) {
                attempts += 1
                #expect(claimed.attempt == attempts)
                let job = try await fixture.agents[0].complete(job: claimed.id, JobsFixture.failure(claimed, retryable: true))
                if attempts < JobsFixture.settings.maxAttempts {
                    #expect(job.state == .queued)
                    #expect(try #require(job.notBefore) > job.updatedAt, "no backoff")
                } else {
                    #expect(job.state == .failed && job.failure?.message == "source unavailable")
                }
            }
            #expect(attempts == JobsFixture.settings.maxAttempts)
            let failed = try #require(try await fixture.server.client.jobs(workspace: JobsFixture.workspace, state: .failed).items.first)
            let events = try await fixture.detail(failed.id).events.map(\.event)
            #expect(events.filter { $0 == "retry-scheduled" }.count == JobsFixture.settings.maxAttempts - 1)
            #expect(events.last == "failed-permanently")
        }
    }

    @Test("the agent protocol refuses undeclared fields, so no row values can be sent")
    func strictAgentBodies() async throws {
        try await JobsFixture.with(agents: 1, settings: JobsFixture.patientSettings) { fixture in
            _ = try await fixture.materialize(hours: 1)
            let claimed = try #require(try await fixture.claim(0))
            let token = fixture.agents[0].token!
            let completion = """
                {"lease_token":"\(claimed.leaseToken)","outcome":"succeeded","started_at":"2025-01-01T00:00:00Z",
                 "finished_at":"2025-01-01T00:00:01Z",
                 "metrics":{"rows_read":1,"rows_written":1,"features":[],"rows":[{"driver_id":1001,"conv_rate":0.5}]}}
                """
            let refused = try await RawResponse.send(
                .POST, "\(fixture.server.baseURL)/v1/agent/jobs/\(claimed.id)/complete", body: completion,
                headers: ["Authorization": "Bearer \(token)", "Content-Type": "application/json"])
            #expect(refused.status == 400 && refused.problem?.field == "metrics.rows")
            let hello = #"{"instance_id":"x","version":"1","hostname":"h","capabilities":[],"sample":{"driver_id":1}}"#
            let refusedHello = try await RawResponse.send(
                .POST, "\(fixture.server.baseURL)/v1/agent/hello", body: hello,
                headers: ["Authorization": "Bearer \(token)", "Content-Type": "application/json"])
            #expect(refusedHello.status == 400 && refusedHello.problem?.field == "sample")
            // The same completion without the extra field is accepted.
            _ = try await fixture.agents[0].complete(job: claimed.id, JobsFixture.success(claimed))
            // And a user, even an admin, cannot speak the agent protocol.
            await #expect { _ = try await fixture.server.client.claim(ClaimRequest(instanceId: "x", kinds: [.materialize], waitSeconds: 0)) } throws: {
                ($0 as? ProblemDetails)?.status == 403
            }
        }
    }

    @Test("a long-poll claim wakes when work is queued (by NOTIFY, not by looking again), well before its wait ends")
    func longPollWakes() async throws {
        // Waiting claims look again only every 30 s here: a prompt claim can only come from the wake-up.
        try await JobsFixture.with(agents: 1, settings: JobsFixture.patientSettings) { fixture in
            async let claim = fixture.claim(0, wait: 25)
            try await Task.sleep(for: .milliseconds(500))
            _ = try await fixture.materialize(hours: 1)
            let queued = ContinuousClock.now
            let claimed = try await claim
            #expect(claimed != nil)
            #expect(ContinuousClock.now - queued < .seconds(10), "the claim was not woken when the job was queued")
            // Specs verify with the control plane's key, name their job, and carry the definitions.
            let job = try #require(claimed)
            let spec = try JobSpec(verified: try job.spec.verified(with: try await fixture.keys.current().publicKey))
            #expect(spec.jobId == job.id && spec.workspace == JobsFixture.workspace && spec.featureView == "driver_hourly_stats")
            #expect(Set(spec.definitions.map(\.name)) == ["driver_hourly_stats", "driver_stats_files", "driver"])
            #expect(spec.targets == JobSpec.Targets(offline: true, online: true))
        }
    }
}

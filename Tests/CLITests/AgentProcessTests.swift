import ControlPlane
import Foundation
import PostgresNIO
import Logging
import Shared
import Testing
import TestSupport

/// A `larder-test-agent` process: the real agent runner with an executor that
/// simulates work and logs each execution to its own file.
final class AgentProcess {
    let process = Process()
    let executionLog: URL
    let logFile: URL
    let name: String

    /// `token` nil: the agent reads its token from its configuration's token file; `arguments` replace the default ones.
    init(name: String, config: URL, token: String?, jobMilliseconds: Int, binary: String = "larder-test-agent", arguments: [String]? = nil) throws {
        self.name = name
        let folder = config.deletingLastPathComponent()
        executionLog = folder.appendingPathComponent("\(name).executions")
        logFile = folder.appendingPathComponent("\(name).log")
        FileManager.default.createFile(atPath: logFile.path, contents: nil)
        process.executableURL = LarderBinary.directory.appendingPathComponent(binary)
        process.arguments = arguments ?? (binary == "larder-agent" ? ["run", "--config", config.path] : [])
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LARDER_") }
        environment["LARDER_AGENT_CONFIG"] = config.path
        if let token { environment["LARDER_AGENT_TOKEN"] = token }
        environment["LARDER_TEST_EXECUTION_LOG"] = executionLog.path
        environment["LARDER_TEST_JOB_MILLISECONDS"] = "\(jobMilliseconds)"
        process.environment = environment
        process.standardError = try FileHandle(forWritingTo: logFile)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
    }

    /// The executions logged so far: (event, job, attempt).
    var executions: [(event: String, job: Int64, attempt: Int)] {
        let text = (try? String(contentsOf: executionLog, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ")
            guard parts.count == 4, let job = Int64(parts[1]), let attempt = Int(parts[2]) else { return nil }
            return (String(parts[0]), job, attempt)
        }
    }

    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    func signal(_ signal: Int32) {
        kill(process.processIdentifier, signal)
    }

    /// SIGTERM, then the exit status. An agent still running 30 s later fails the test and is killed.
    func stop() async -> Int32 {
        await process.terminateAndWait(name: name) { log }
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
}

/// A control plane process, a workspace with the example applied (without
/// schedules unless asked), agents with tokens, and their configuration files.
struct JobsWorld {
    static let workspace = "rides"
    let database: PostgresURL
    let server: ControlPlaneProcess
    let admin: ControlPlaneClient
    let folder: URL
    let publicKey: String
    var agentTokens: [String: String] = [:]
    /// The `online_store:` block of the agents' settings; nil: embedded.
    var onlineStore: String?

    static let serverEnvironment = [
        "LARDER_LEASE_SECONDS": "5", "LARDER_SCHEDULER_INTERVAL_SECONDS": "0.25", "LARDER_RETRY_BASE_SECONDS": "0.2",
        "LARDER_HEARTBEAT_SECONDS": "1", "LARDER_MAX_CLAIM_WAIT_SECONDS": "5",
    ]

    /// With more than one agent the environment's online store is Redis (an embedded store takes one agent):
    /// `redis` is its address (by default a closed port: the test agent only runs jobs, it never opens the store).
    static func make(database: PostgresURL, agents: Int, environment: [String: String] = [:], redis: String? = nil) async throws -> JobsWorld {
        let adminToken = APIToken.generate().text
        let server = try await ControlPlaneProcess(
            databaseURL: database.urlString, bootstrapToken: adminToken, environment: serverEnvironment.merging(environment) { $1 })
        let admin = ControlPlaneClient(baseURL: server.baseURL, token: adminToken)
        _ = try await admin.createWorkspace(workspace)
        try await RepositoryFixture.example(workspace: workspace).unscheduled().apply(to: workspace, with: admin)
        let key = try await larderControl(["key", "--database-url", database.urlString])
        let line = try #require(key.split(separator: "\n").first { $0.hasPrefix("public key:") })
        let folder = try LarderBinary.temporaryDirectory()
        var world = JobsWorld(
            database: database, server: server, admin: admin, folder: folder,
            publicKey: String(line.dropFirst("public key:".count)).trimmingCharacters(in: .whitespaces))
        let shared = agents > 1 || redis != nil
        if shared { world.onlineStore = "online_store:\n  redis:\n    addresses: [\(redis ?? "127.0.0.1:1")]\n" }
        for index in 1...agents {
            let name = "agent-\(index)"
            _ = try await admin.createTestAgent(name: name, environment: "prod", workspace: workspace, onlineStore: shared ? .redis : .embedded)
            world.agentTokens[name] = try await admin.createToken(for: name).token
        }
        return world
    }

    /// `larder-control <arguments>`'s standard output (run and waited for on a thread of its own).
    static func larderControl(_ arguments: [String]) async throws -> String {
        try await onThreadOfItsOwn {
            let process = Process()
            process.executableURL = LarderBinary.directory.appendingPathComponent("larder-control")
            process.arguments = arguments
            process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LARDER_") }
            let output = Pipe()
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }
    }

    /// Writes the configuration of agent `name` pinning `key` (the control plane's by default).
    func config(for name: String, concurrency: Int, key: String? = nil) throws -> URL {
        let url = folder.appendingPathComponent("\(name).yaml")
        try """
            control_plane: \(server.baseURL)
            public_key: \(key ?? publicKey)
            data_directory: \(folder.appendingPathComponent(name).path)
            concurrency: \(concurrency)
            serving:
              listen: 127.0.0.1:0

            \(onlineStore ?? "")
            """.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    func startAgent(_ name: String, concurrency: Int, jobMilliseconds: Int) throws -> AgentProcess {
        try AgentProcess(
            name: name, config: try config(for: name, concurrency: concurrency), token: agentTokens[name]!, jobMilliseconds: jobMilliseconds)
    }

    /// Materializes `hours` hourly chunks of driver_hourly_stats from 2025-01-01.
    func materialize(hours: Int, offsetHours: Int = 0) async throws -> MaterializeResponse {
        let start = RFC3339.parse("2025-01-01T00:00:00Z")!.addingTimeInterval(Double(offsetHours) * 3_600)
        return try await admin.materialize(
            MaterializeRequest(featureView: "driver_hourly_stats", start: start, end: start.addingTimeInterval(Double(hours) * 3_600), chunk: "1h"),
            workspace: Self.workspace)
    }

    /// Waits until job `id` is in a terminal state; returns it.
    func waitUntilFinished(_ id: Int64, timeout: TimeInterval) async throws -> JobDetailResource {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let detail = try await admin.job(id, workspace: Self.workspace)
            if detail.job.state.isTerminal || Date() > deadline { return detail }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Every chunk of a backfill.
    func chunks(of backfill: Int64) async throws -> [JobResource] {
        try await admin.jobs(workspace: Self.workspace, parent: backfill, limit: 1_000).items
    }

    /// Runs `body` against the registry database.
    func withDatabase<Result: Sendable>(_ body: (PostgresClient) async throws -> Result) async throws -> Result {
        try await TestDatabase.withClient(database, body)
    }
}

@Suite("Agents and the control plane as real processes", .serialized)
struct AgentProcessTests {
    @Test("3 agents × 300 jobs: every job succeeds exactly once, on its first attempt")
    func threeAgentsThreeHundredJobs() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            let world = try await JobsWorld.make(database: database, agents: 3)
            try await withCleanup({ _ = await world.server.stop() }) {   // before the database is dropped
                let agents = try (1...3).map { try world.startAgent("agent-\($0)", concurrency: 2, jobMilliseconds: 5) }
                let started = try await world.materialize(hours: 300)
                #expect(started.chunksQueued == 300)
                let finished = try await world.waitUntilFinished(started.backfill.id, timeout: 180)
                #expect(finished.job.state == .succeeded, "\(finished.job)")
                let chunks = try await world.chunks(of: started.backfill.id)
                #expect(chunks.count == 300)
                #expect(
                    chunks.allSatisfy { $0.state == .succeeded && $0.attempts == 1 && $0.metrics?.rowsWritten == 1 },
                    "\(chunks.filter { $0.state != .succeeded }.prefix(3).map { "\($0.id) \($0.state) \(String(describing: $0.failure))" })\n\(world.server.log.split(separator: "\n").filter { $0.contains("error") }.prefix(5).joined(separator: "\n"))")
                let done = agents.flatMap { $0.executions.filter { $0.event == "done" } }
                #expect(done.count == 300)
                #expect(Set(done.map(\.job)) == Set(chunks.map(\.id)))
                for agent in agents {
                    #expect(!agent.executions.isEmpty, "\(agent.name) ran nothing")
                    #expect(await agent.stop() == 0, "\(agent.name) did not stop cleanly:\n\(agent.log.suffix(2_000))")
                }
                let listed = try await world.admin.agents(workspace: JobsWorld.workspace)
                #expect(listed.map(\.name) == ["agent-1", "agent-2", "agent-3"])
                #expect(listed.allSatisfy { $0.capabilities == [.materialize] && $0.status == "online" && $0.activeJobs == 0 })
            }
        }
    }

    @Test("an agent killed with SIGKILL mid-job: another re-runs the job after the lease expires; the dead agent's late completion is refused")
    func killedAgent() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            let world = try await JobsWorld.make(database: database, agents: 2, environment: ["LARDER_LEASE_SECONDS": "2"])
            try await withCleanup({ _ = await world.server.stop() }) {   // before the database is dropped
                // A long job, so the kill lands mid-job even when a loaded machine delays this test's polling by seconds.
                let doomed = try world.startAgent("agent-1", concurrency: 1, jobMilliseconds: 20_000)
                let started = try await world.materialize(hours: 1)
                let job = try #require(try await world.chunks(of: started.backfill.id).first)
                // Wait until the doomed agent is running the job, then kill it.
                let deadline = Date().addingTimeInterval(30)
                while !doomed.executions.contains(where: { $0.event == "start" && $0.job == job.id }), Date() < deadline {
                    try await Task.sleep(for: .milliseconds(50))
                }
                doomed.signal(SIGKILL)
                _ = await doomed.stop()
                let survivor = try world.startAgent("agent-2", concurrency: 1, jobMilliseconds: 50)
                let detail = try await world.waitUntilFinished(job.id, timeout: 60)
                #expect(detail.job.state == .succeeded)
                #expect(detail.attempts.map(\.agent) == ["agent-1", "agent-2"])
                #expect(detail.attempts.map(\.outcome) == ["lease-expired", "succeeded"])
                #expect(detail.events.contains { $0.event == "lease-expired" })
                #expect(survivor.executions.filter { $0.event == "done" }.map(\.job) == [job.id])

                // The dead agent's completion, arriving late with its old lease token, is refused.
                let staleToken: UUID = try await world.withDatabase { client in
                    let rows = try await client.query(
                        "SELECT lease_token FROM job_attempts WHERE job_id = \(job.id) AND attempt = 1", logger: Logger(label: "test"))
                    for try await token in rows.decode(UUID.self) { return token }
                    throw LarderBinary.Failure(description: "no first attempt")
                }
                let zombie = ControlPlaneClient(baseURL: world.server.baseURL, token: world.agentTokens["agent-1"]!)
                await #expect {
                    _ = try await zombie.complete(job: job.id, JobCompletion(
                        leaseToken: staleToken, outcome: .failed, startedAt: Date(), finishedAt: Date(),
                        failure: JobFailure(message: "late", retryable: true)))
                } throws: { ($0 as? ProblemDetails)?.code == "lease-lost" }
                let after = try await world.admin.job(job.id, workspace: JobsWorld.workspace)
                #expect(after.job.state == .succeeded && after.attempts.count == 2)
                #expect(await survivor.stop() == 0)
            }
        }
    }

    @Test("the control plane killed and restarted mid-flight: no job is lost or run twice")
    func controlPlaneRestart() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            var world = try await JobsWorld.make(database: database, agents: 2, environment: ["LARDER_LEASE_SECONDS": "6"])
            try await withCleanup({ _ = await world.server.stop() }) {   // before the database is dropped
                let agents = try (1...2).map { try world.startAgent("agent-\($0)", concurrency: 2, jobMilliseconds: 100) }
                let started = try await world.materialize(hours: 80)
                let deadline = Date().addingTimeInterval(60)
                while agents.flatMap({ $0.executions }).filter({ $0.event == "done" }).count < 15, Date() < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                let address = world.server.listenAddress
                await world.server.kill(SIGKILL)
                try await Task.sleep(for: .seconds(2))
                let restarted = try await ControlPlaneProcess(
                    databaseURL: database.urlString, bootstrapToken: nil, listen: address,
                    environment: JobsWorld.serverEnvironment.merging(["LARDER_LEASE_SECONDS": "6"]) { $1 })
                world = JobsWorld(
                    database: database, server: restarted, admin: ControlPlaneClient(baseURL: restarted.baseURL, token: world.admin.token),
                    folder: world.folder, publicKey: world.publicKey, agentTokens: world.agentTokens)
                let finished = try await world.waitUntilFinished(started.backfill.id, timeout: 120)
                #expect(finished.job.state == .succeeded, "\(finished.job)")
                let chunks = try await world.chunks(of: started.backfill.id)
                #expect(chunks.count == 80 && chunks.allSatisfy { $0.state == .succeeded })
                let done = agents.flatMap { $0.executions.filter { $0.event == "done" } }
                var runs: [Int64: Int] = [:]
                for execution in done { runs[execution.job, default: 0] += 1 }
                #expect(Set(runs.keys) == Set(chunks.map(\.id)))
                #expect(runs.values.allSatisfy { $0 == 1 }, "jobs run more than once: \(runs.filter { $0.value > 1 })")
                for agent in agents { #expect(await agent.stop() == 0) }
            }
        }
    }

    @Test("a spec tampered with in the database is refused by the agent and never run")
    func tamperedSpec() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            let world = try await JobsWorld.make(database: database, agents: 1)
            try await withCleanup({ _ = await world.server.stop() }) {   // before the database is dropped
                let started = try await world.materialize(hours: 1)
                let job = try #require(try await world.chunks(of: started.backfill.id).first)
                try await world.withDatabase { client in
                    try await client.query(
                        """
                        UPDATE jobs SET spec_payload = regexp_replace(spec_payload, '"end":"[^"]*"', '"end":"2030-01-01T00:00:00.000Z"')
                        WHERE id = \(job.id)
                        """, logger: Logger(label: "test"))
                }
                let agent = try world.startAgent("agent-1", concurrency: 1, jobMilliseconds: 5)
                let detail = try await world.waitUntilFinished(job.id, timeout: 30)
                #expect(detail.job.state == .failed)
                #expect(detail.job.failure?.retryable == false)
                #expect(detail.job.failure?.message.contains("refused the job spec") == true, "\(String(describing: detail.job.failure))")
                #expect(agent.executions.isEmpty)
                #expect(agent.log.contains("refused a job spec"))
                #expect(await agent.stop() == 0)
            }
        }
    }

    @Test("a running job cancelled by an operator: the agent aborts it mid-work and reports it cancelled")
    func cancelReachesAgent() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            let world = try await JobsWorld.make(database: database, agents: 1)
            try await withCleanup({ _ = await world.server.stop() }) {   // before the database is dropped
                let agent = try world.startAgent("agent-1", concurrency: 1, jobMilliseconds: 20_000)
                let started = try await world.materialize(hours: 1)
                let job = try #require(try await world.chunks(of: started.backfill.id).first)
                let deadline = Date().addingTimeInterval(30)
                while !agent.executions.contains(where: { $0.event == "start" && $0.job == job.id }), Date() < deadline {
                    try await Task.sleep(for: .milliseconds(50))
                }
                let asked = Date()
                _ = try await world.admin.cancelJob(job.id, workspace: JobsWorld.workspace)
                let detail = try await world.waitUntilFinished(job.id, timeout: 15)
                #expect(detail.job.state == .cancelled)
                #expect(Date().timeIntervalSince(asked) < 10, "the agent took too long to abort")
                #expect(detail.attempts.map(\.outcome) == ["cancelled"])
                #expect(!agent.executions.contains { $0.event == "done" }, "the work ran to its end")
                #expect(agent.log.contains("job cancelled"))
                #expect(await agent.stop() == 0)
            }
        }
    }

    @Test("an agent pinning another key refuses to start, and says which keys differ")
    func wrongPinnedKey() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            let world = try await JobsWorld.make(database: database, agents: 1)
            try await withCleanup({ _ = await world.server.stop() }) {   // before the database is dropped
                let other = SigningKeyPair.generate().publicKey
                let config = try world.config(for: "agent-1", concurrency: 1, key: other.description)
                let agent = try AgentProcess(name: "agent-1", config: config, token: world.agentTokens["agent-1"]!, jobMilliseconds: 5, binary: "larder-agent")
                await agent.process.waitForExit()
                #expect(agent.process.terminationStatus != 0)
                // The error line may be cut by a log line another thread writes meanwhile: read it without them.
                let withoutLogLines = agent.log.replacingOccurrences(
                    of: #"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^\n]*\n"#, with: "", options: .regularExpression)
                #expect(withoutLogLines.contains(other.fingerprint), "\(agent.log)")
            }
        }
    }
}

@Suite("larder jobs, agents and materialize against real processes")
struct JobCommandTests {
    @Test("an operator's session: materialize, list, cancel, describe, retry; agents ls; clear errors")
    func operatorSession() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            let world = try await JobsWorld.make(database: database, agents: 1)
            try await withCleanup({ _ = await world.server.stop() }) {   // before the database is dropped
                let environment = ["LARDER_URL": world.server.baseURL, "LARDER_TOKEN": world.admin.token!, "LARDER_WORKSPACE": JobsWorld.workspace]
                func larder(_ arguments: String..., token: String? = nil) async throws -> LarderBinary.Result {
                    var merged = environment
                    if let token { merged["LARDER_TOKEN"] = token }
                    return try await LarderBinary.run(arguments, in: world.folder, environment: merged)
                }
                let queued = try await larder(
                    "materialize", "driver_hourly_stats", "--start", "2025-01-01T00:00:00Z", "--end", "2025-01-01T03:00:00Z", "--chunk", "1h")
                #expect(queued.status == 0, "\(queued.standardError)")
                #expect(queued.standardOutput.contains("queued backfill 1 (prod) of driver_hourly_stats: 3 chunk(s)"))
                let listed = try await larder("jobs", "ls", "--state", "queued")
                #expect(listed.status == 0)
                // A header, the backfill (queued until a chunk is claimed) and its 3 chunks.
                #expect(listed.standardOutput.split(separator: "\n").count == 5, "\(listed.standardOutput)")
                #expect(listed.standardOutput.contains("3 queued"))
                #expect(listed.standardOutput.contains("[2025-01-01T02:00:00Z, 2025-01-01T03:00:00Z)"))
                #expect(try await larder("jobs", "cancel", "4").standardOutput.contains("cancelled job 4"))

                let agent = try world.startAgent("agent-1", concurrency: 1, jobMilliseconds: 20)
                let backfill = try await world.waitUntilFinished(1, timeout: 30)
                #expect(backfill.job.state == .cancelled, "one chunk was cancelled: \(backfill.job)")
                let described = try await larder("jobs", "describe", "2")
                #expect(described.status == 0)
                #expect(described.standardOutput.contains("job 2: materialize, succeeded"))
                #expect(described.standardOutput.contains("metrics:      1 rows read, 1 written"))
                #expect(described.standardOutput.contains("agent-1") && described.standardOutput.contains("claimed"))

                #expect(try await larder("jobs", "retry", "4").standardOutput.contains("job 4 is queued again"))
                #expect(try await world.waitUntilFinished(4, timeout: 30).job.state == .succeeded)
                #expect(try await world.waitUntilFinished(1, timeout: 30).job.state == .succeeded)
                let unknown = try await larder("agents", "create", "agent-eu-2", "--environment", "prod-eu")
                #expect(unknown.status != 0 && unknown.standardError.contains("larder environments create prod-eu"), "\(unknown.standardError)")
                let createdEnvironment = try await larder("environments", "create", "prod-eu", "--online-store", "redis", "--description", "production, eu-west")
                #expect(createdEnvironment.status == 0 && createdEnvironment.standardOutput.contains("created environment prod-eu of rides (online store: redis)"))
                let registered = try await larder("agents", "create", "agent-eu-2", "--environment", "prod-eu")
                #expect(registered.status == 0, "\(registered.standardError)")
                #expect(registered.standardOutput.contains("registered agent agent-eu-2 of rides (prod-eu)"))
                #expect(registered.standardOutput.range(of: #"lrd_[a-z0-9]{12}_"#, options: .regularExpression) != nil)
                let agents = try await larder("agents", "ls")
                #expect(agents.standardOutput.contains("agent-eu-2") && agents.standardOutput.contains("never"))
                #expect(agents.standardOutput.contains("agent-1") && agents.standardOutput.contains("online"), "\(agents.standardOutput)")
                #expect(agents.standardOutput.contains("materialize"))
                let environments = try await larder("environments", "ls")
                #expect(environments.standardOutput.contains("prod-eu") && environments.standardOutput.contains("redis"), "\(environments.standardOutput)")
                let prod = try await larder("environments", "describe", "prod")
                #expect(prod.standardOutput.contains("online store: embedded (one agent: agent-1)"), "\(prod.standardOutput)")
                #expect(try await larder("jobs", "ls", "--environment", "prod").standardOutput.contains("ENVIRONMENT"))

                let missing = try await larder("jobs", "describe", "999999")
                #expect(missing.status == 1 && missing.standardError.contains("no job 999999"))
                let unknownView = try await larder("materialize", "nope", "--start", "2025-01-01T00:00:00Z", "--end", "2025-01-02T00:00:00Z")
                #expect(unknownView.status == 1 && unknownView.standardError.contains("no current feature view named 'nope'"))
                let badTime = try await larder("materialize", "driver_hourly_stats", "--start", "yesterday", "--end", "2025-01-02T00:00:00Z")
                #expect(badTime.status != 0 && badTime.standardError.contains("--start 'yesterday'"))
                _ = try await world.admin.createPrincipal(CreatePrincipalRequest(name: "dashboards", kind: .serviceAccount))
                try await world.admin.grant(.viewer, to: "dashboards", workspace: JobsWorld.workspace)
                let viewerToken = try await world.admin.createToken(for: "dashboards").token
                #expect(try await larder("jobs", "ls", token: viewerToken).status == 0)
                let denied = try await larder("jobs", "cancel", "2", token: viewerToken)
                #expect(denied.status == 1 && denied.standardError.contains("forbidden"), "\(denied.standardError)")
                #expect(await agent.stop() == 0)
            }
        }
    }

    @Test("the real agent fetches its workspace's access and registry snapshots, keeps them on disk, and installs a revocation or an apply within seconds")
    func accessSnapshotFollowsRevocations() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            let world = try await JobsWorld.make(database: database, agents: 1)
            try await withCleanup({ _ = await world.server.stop() }) {
                _ = try await world.admin.createPrincipal(CreatePrincipalRequest(name: "carol", kind: .user))
                _ = try await world.admin.grant(.consumer, to: "carol", workspace: JobsWorld.workspace)
                let token = try await world.admin.createToken(for: "carol", audience: .dataPlane).resource.publicId
                let agent = try AgentProcess(
                    name: "agent-1", config: try world.config(for: "agent-1", concurrency: 1), token: world.agentTokens["agent-1"]!,
                    jobMilliseconds: 0, binary: "larder-agent")
                let file = world.folder.appendingPathComponent("agent-1/access-snapshot.json")
                let key = try SigningPublicKey(parsing: world.publicKey)
                func held() -> AccessSnapshot? {
                    guard let data = try? Data(contentsOf: file), let document = try? APICoding.makeDecoder().decode(SignedDocument.self, from: data)
                    else { return nil }
                    return try? AccessSnapshot(verified: document.verified(with: key))
                }
                func waitFor(_ condition: (AccessSnapshot) -> Bool, seconds: Double) async -> AccessSnapshot? {
                    let deadline = Date().addingTimeInterval(seconds)
                    while Date() < deadline {
                        if let snapshot = held(), condition(snapshot) { return snapshot }
                        try? await Task.sleep(for: .milliseconds(100))
                    }
                    return nil
                }
                let first = await waitFor({ $0.entries.contains { $0.tokenPublicId == token } }, seconds: 30)
                #expect(first?.workspace == JobsWorld.workspace, "\(agent.log.suffix(2_000))")
                // Heartbeats come every second here: a revocation reaches the agent's disk within a few.
                let revoked = Date()
                _ = try await world.admin.revokeToken(token, of: "carol")
                let second = await waitFor({ !$0.entries.contains { $0.tokenPublicId == token } }, seconds: 10)
                #expect(second != nil && second!.version > first!.version, "\(agent.log.suffix(2_000))")
                #expect(Date().timeIntervalSince(revoked) < 5)
                #expect(agent.log.contains("installed the access snapshot"))

                // The registry snapshot likewise: every object of the example, then a new revision after an apply.
                let registryFile = world.folder.appendingPathComponent("agent-1/registry-snapshot.json")
                func registry() -> AgentRegistrySnapshot? {
                    guard let data = try? Data(contentsOf: registryFile),
                          let document = try? APICoding.makeDecoder().decode(SignedDocument.self, from: data)
                    else { return nil }
                    return try? AgentRegistrySnapshot(verified: document.verified(with: key))
                }
                let deadline = Date().addingTimeInterval(10)
                while registry() == nil, Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
                let before = try #require(registry(), "\(agent.log.suffix(2_000))")
                #expect(before.definitions.contains { $0.kind == "FeatureService" })
                try await RepositoryFixture.example(workspace: JobsWorld.workspace).unscheduled()
                    .replacing("ttl: 2d", with: "ttl: 3d", in: "features.yaml").apply(to: JobsWorld.workspace, with: world.admin)
                let applied = Date()
                while (registry()?.revision ?? 0) <= before.revision, Date().timeIntervalSince(applied) < 10 {
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect((registry()?.revision ?? 0) > before.revision, "\(agent.log.suffix(2_000))")
                #expect(Date().timeIntervalSince(applied) < 5)
                #expect(await agent.stop() == 0)
            }
        }
    }
}

import AsyncHTTPClient
import ControlPlane
import Foundation
import Shared
import TestSupport

/// The agent protocol under load: claims per second with 10 concurrent
/// agents, and how long a job waits between being queued and being claimed
/// by an agent that is long-polling.
extension LarderBench {
    static let agentCount = 10

    static func jobs(jobsPerRun: Int) async throws {
        print("\n## agent protocol: \(agentCount) agents over HTTP, \(jobsPerRun) jobs per run")
        let settings = JobSettings(leaseDuration: .seconds(60), maxClaimWait: .seconds(30), schedulerEnabled: false)
        try await TestControlPlane.withControlPlane(jobs: settings) { server in
            let workspace = "bench"
            _ = try await server.client.createWorkspace(workspace)
            try await RepositoryFixture.example(workspace: workspace).unscheduled().apply(to: workspace, with: server.client)
            // One connection per agent, as separate agent processes would have.
            var configuration = HTTPClient.Configuration()
            configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = agentCount * 2 + 4
            let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            defer { Task { try? await http.shutdown() } }
            var built: [ControlPlaneClient] = []
            for index in 0..<agentCount {
                _ = try await server.client.createAgent(name: "agent-\(index)", environment: "bench", workspace: workspace)
                let agent = ControlPlaneClient(
                    baseURL: server.baseURL, token: try await server.client.createToken(for: "agent-\(index)").token, httpClient: http)
                _ = try await agent.hello(AgentHello(instanceId: "bench-\(index)", version: "bench", hostname: "bench", capabilities: [.materialize]))
                built.append(agent)
            }
            let agents = built
            var hour = 0
            func queue(_ count: Int) async throws {
                let start = RFC3339.parse("2025-01-01T00:00:00Z")!.addingTimeInterval(Double(hour) * 3_600)
                hour += count
                _ = try await server.client.materialize(
                    MaterializeRequest(featureView: "driver_hourly_stats", start: start, end: start.addingTimeInterval(Double(count) * 3_600), chunk: "1h"),
                    workspace: workspace)
            }
            let claim: @Sendable (Int, Int) async throws -> ClaimedJob? = { index, wait in
                try await agents[index].claim(ClaimRequest(instanceId: "bench-\(index)", kinds: [.materialize], waitSeconds: wait))
            }
            let metrics = JobMetrics(rowsRead: 1_000, rowsWritten: 1_000, features: [FeatureSummary(feature: "conv_rate", count: 1_000, nullCount: 0)])

            // 1. Claims alone, all agents at once, until the queue is empty.
            try await queue(jobsPerRun)
            let claimOnly = try await measure {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<agentCount {
                        group.addTask { while try await claim(index, 0) != nil {} }
                    }
                    try await group.waitForAll()
                }
            }
            // 2. The whole cycle an agent runs per job: claim, start, complete.
            try await queue(jobsPerRun)
            let cycle = try await measure {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<agentCount {
                        group.addTask {
                            while let job = try await claim(index, 0) {
                                _ = try await agents[index].reportProgress(job: job.id, token: job.leaseToken, progress: JobProgress(phase: "started"))
                                _ = try await agents[index].complete(job: job.id, JobCompletion(
                                    leaseToken: job.leaseToken, outcome: .succeeded, startedAt: Date(), finishedAt: Date(), metrics: metrics))
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            print("| what | jobs | time | per second |\n|---|---|---|---|")
            for (name, duration) in [("claim (10 agents, queue full)", claimOnly), ("claim + start + complete (10 agents)", cycle)] {
                print("| \(name) | \(jobsPerRun) | \(Samples.format(duration)) | \(String(format: "%.0f", Double(jobsPerRun) / duration.seconds)) |")
            }

            // 3. Enqueue-to-claim: the agents wait in long polls; one job is queued at a time.
            let samples = 200
            let received = AsyncStream.makeStream(of: ContinuousClock.Instant.self)
            let latencies = try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<agentCount {
                    group.addTask {
                        while !Task.isCancelled {
                            guard let job = try await claim(index, 20) else { continue }
                            received.continuation.yield(.now)
                            _ = try await agents[index].complete(job: job.id, JobCompletion(
                                leaseToken: job.leaseToken, outcome: .succeeded, startedAt: Date(), finishedAt: Date(), metrics: metrics))
                        }
                    }
                }
                try await Task.sleep(for: .milliseconds(500))   // every agent is waiting
                var iterator = received.stream.makeAsyncIterator()
                var latencies: [Duration] = []
                for _ in 0..<samples {
                    let sent = ContinuousClock.now
                    try await queue(1)
                    guard let claimedAt = await iterator.next() else { break }
                    latencies.append(claimedAt - sent)
                    try await Task.sleep(for: .milliseconds(20))   // let the agent go back to waiting
                }
                group.cancelAll()
                return latencies.sorted()
            }
            func percentile(_ p: Double) -> String { Samples.format(latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]) }
            print("\n| enqueue → claimed by a long-polling agent | samples | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|")
            print("| from sending the enqueue request to the agent holding the job | \(latencies.count) | \(percentile(0.5)) | \(percentile(0.9)) | \(percentile(0.99)) | \(Samples.format(latencies.last!)) |")
        }
    }
}

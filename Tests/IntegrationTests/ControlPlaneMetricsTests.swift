import AsyncHTTPClient
import ControlPlane
import Foundation
import NIOCore
import Shared
import Testing
import TestSupport

/// The control plane's `/metrics`, scraped over HTTP from a real server.
@Suite("Control-plane metrics")
struct ControlPlaneMetricsTests {
    /// The samples of an exposition: `name{labels}` → value.
    static func samples(_ text: String) -> [String: Double] {
        var samples: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            samples[String(line[..<space])] = value
        }
        return samples
    }

    /// The value of `name` whose labels include `labels` (summed over the rest).
    static func value(_ samples: [String: Double], _ name: String, _ labels: [String: String] = [:]) -> Double? {
        let matching = samples.filter { key, _ in
            (key == name || key.hasPrefix(name + "{")) && labels.allSatisfy { key.contains("\($0.key)=\"\($0.value)\"") }
        }
        return matching.isEmpty ? nil : matching.values.reduce(0, +)
    }

    static func scrape(_ server: RunningControlPlane, token: String?) async throws -> (status: Int, text: String) {
        var request = HTTPClientRequest(url: server.baseURL + "/metrics")
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 16 << 20)
        return (Int(response.status.code), String(decoding: body.readableBytesView, as: UTF8.self))
    }

    @Test("API latency and counts by route and status, jobs by kind and state, queue depth and age, agents online, the scheduler lease; only for a signed-in principal")
    func exportsTheLedger() async throws {
        // Agents count as online for three 20 s heartbeat intervals: however loaded the machine, still online when scraped.
        let settings = JobSettings(
            leaseDuration: .seconds(60), heartbeatInterval: .seconds(20), maxClaimWait: .seconds(30), retryBaseDelay: .milliseconds(20),
            retryMaxDelay: .milliseconds(100), maxAttempts: 4, schedulerEnabled: false, claimRecheckInterval: .seconds(30))
        try await JobsFixture.with(agents: 2, settings: settings) { fixture in
            let workspace = JobsFixture.workspace
            _ = try await fixture.materialize(hours: 3)
            let claimed = try #require(try await fixture.claim(0))
            _ = try await fixture.agents[0].complete(job: claimed.id, JobsFixture.success(claimed))
            do { _ = try await fixture.server.client.jobs(workspace: "nowhere") } catch {}

            #expect(try await Self.scrape(fixture.server, token: nil).status == 401)
            // Both agents heartbeat now: online for three heartbeat intervals, however loaded the machine.
            for (index, agent) in fixture.agents.enumerated() {
                _ = try await agent.heartbeat(AgentHeartbeat(instanceId: "instance-\(index + 1)", runningJobs: []))
            }
            let (status, text) = try await Self.scrape(fixture.server, token: fixture.server.adminToken)
            #expect(status == 200)
            let samples = Self.samples(text)
            // Requests by their registered route, never the caller's path.
            #expect(Self.value(samples, "larder_api_requests_total", ["method": "POST", "route": "/v1/workspaces/{workspace}/materializations", "code": "201"]) == 1)
            #expect(Self.value(samples, "larder_api_requests_total", ["route": "/v1/workspaces/{workspace}/jobs", "code": "404"]) == 1)
            #expect(Self.value(samples, "larder_api_requests_total", ["route": "/metrics", "code": "401"]) == 1)
            #expect(!text.contains("nowhere"))
            #expect((Self.value(samples, "larder_api_request_duration_seconds_count", ["route": "/v1/agent/hello"]) ?? 0) == 2)
            // The ledger: 3 chunks, one done; 2 claimable; 2 agents said hello.
            #expect(Self.value(samples, "larder_jobs", ["workspace": workspace, "kind": "materialize", "state": "succeeded"]) == 1)
            #expect(Self.value(samples, "larder_jobs", ["workspace": workspace, "kind": "materialize", "state": "queued"]) == 2)
            #expect(Self.value(samples, "larder_job_queue_depth", ["workspace": workspace]) == 2)
            #expect((Self.value(samples, "larder_job_oldest_queued_seconds", ["workspace": workspace]) ?? -1) >= 0)
            #expect(Self.value(samples, "larder_agents_online", ["workspace": workspace]) == 2)
            // The test control plane runs no scheduler.
            #expect(Self.value(samples, "larder_scheduler_leader") == 0)

            // Claimed and finished, the queue empties: the gauges follow.
            for agent in 0..<2 {
                let job = try #require(try await fixture.claim(agent))
                _ = try await fixture.agents[agent].complete(job: job.id, JobsFixture.success(job))
            }
            let after = Self.samples(try await Self.scrape(fixture.server, token: fixture.server.adminToken).text)
            #expect(Self.value(after, "larder_jobs", ["workspace": workspace, "state": "succeeded"]) == 3)
            #expect(Self.value(after, "larder_jobs", ["workspace": workspace, "state": "queued"]) == 0)
            #expect(Self.value(after, "larder_job_queue_depth", ["workspace": workspace]) == 0)
        }
    }

    @Test("a replica running the scheduler reports holding its lease")
    func reportsTheSchedulerLease() async throws {
        let settings = JobSettings(leaseDuration: .seconds(5), heartbeatInterval: .seconds(1), schedulerEnabled: true)
        try await TestControlPlane.withControlPlane(jobs: settings) { server in
            var leader: Double?
            let deadline = Date().addingTimeInterval(20)
            while leader != 1, Date() < deadline {
                leader = Self.value(Self.samples(try await Self.scrape(server, token: server.adminToken).text), "larder_scheduler_leader")
                if leader != 1 { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(leader == 1)
        }
    }
}

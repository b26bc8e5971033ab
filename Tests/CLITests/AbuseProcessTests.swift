import AsyncHTTPClient
import ControlPlane
import Foundation
import Shared
import Testing
import TestSupport

@Suite("Abuse against a running control plane (real processes)", .serialized)
struct AbuseProcessTests {
    @Test("a stranger's flood of bad tokens from the agent's own address: the agent goes on claiming and finishing jobs, the admin and the probes are answered")
    func strangerDoesNotLockOutAgents() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            let world = try await JobsWorld.make(database: database, agents: 1)
            try await withCleanup({ _ = await world.server.stop() }) {   // before the database is dropped
                let agent = try world.startAgent("agent-1", concurrency: 1, jobMilliseconds: 5)
                let first = try await world.materialize(hours: 1)
                #expect(try await world.waitUntilFinished(first.backfill.id, timeout: 30).job.state == .succeeded)
                // 200 made-up tokens from 127.0.0.1, the address the agent and the admin use too.
                var statuses: [Int: Int] = [:]
                for index in 0..<200 {
                    let token = "lrd_" + String(format: "%012d", index) + "_" + String(repeating: "x", count: 43)
                    let answer = try await RawHTTP.get("\(world.server.baseURL)/v1/whoami", token: token)
                    statuses[answer, default: 0] += 1
                }
                #expect(statuses[429, default: 0] >= 150, "\(statuses)")
                #expect(try await RawHTTP.get("\(world.server.baseURL)/readyz", token: nil) == 200)
                // The agent claims and finishes what comes next; the admin is answered.
                let second = try await world.materialize(hours: 3, offsetHours: 1)
                let finished = try await world.waitUntilFinished(second.backfill.id, timeout: 30)
                #expect(finished.job.state == .succeeded, "\(agent.log.suffix(1_500))")
                #expect(!agent.log.contains("HTTP 429"), "\(agent.log.suffix(1_500))")
                _ = try await world.admin.whoami()
                #expect(await agent.stop() == 0)
            }
        }
    }
}

/// One GET with an optional bearer token; the status.
enum RawHTTP {
    static func get(_ url: String, token: String?) async throws -> Int {
        var request = HTTPClientRequest(url: url)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        _ = try await response.body.collect(upTo: 1 << 20)
        return Int(response.status.code)
    }
}

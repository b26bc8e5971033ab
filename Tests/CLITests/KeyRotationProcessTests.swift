import ControlPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

@Suite("Signing key rotation with real processes", .serialized)
struct KeyRotationProcessTests {
    /// `larder-control key <arguments>` against the world's database (run and waited for on a thread of its own):
    /// exit status, stdout and stderr.
    static func key(_ world: JobsWorld, _ arguments: String...) async throws -> (status: Int32, output: String, error: String) {
        let database = world.database.urlString
        return try await onThreadOfItsOwn {
            let process = Process()
            process.executableURL = LarderBinary.directory.appendingPathComponent("larder-control")
            process.arguments = ["key"] + arguments + ["--database-url", database, "--log-level", "error"]
            process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LARDER_") }
            let output = Pipe(), error = Pipe()
            process.standardOutput = output
            process.standardError = error
            try process.run()
            let out = output.fileHandleForReading.readDataToEndOfFile(), err = error.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
        }
    }

    /// The public key on the line starting with `label` in a `key` command's output.
    static func publicKey(_ label: String, in output: String) throws -> String {
        let line = try #require(output.split(separator: "\n").first { $0.hasPrefix(label) }, "\(output)")
        return try #require(line.split(separator: " ").last.map(String.init))
    }

    /// Waits until agent `name` has reported holding key set `generation`.
    static func waitForGeneration(_ world: JobsWorld, _ name: String, _ generation: Int64, seconds: Double = 30) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let held = try await world.withDatabase { client in
                var value: Int64?
                for try await row in try await client.query(
                    """
                    SELECT s.key_generation FROM agent_sessions s JOIN principals p ON p.id = s.principal_id WHERE p.name = \(name)
                    """, logger: Logger(label: "test")).decode(Int64?.self) { value = row }
                return value
            }
            if held == generation { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        Issue.record("\(name) did not report key set \(generation) within \(seconds) s")
    }

    /// The fingerprint of the key that signed job `id`'s stored spec.
    static func specKey(_ world: JobsWorld, _ id: Int64) async throws -> String {
        try await world.withDatabase { client in
            var value = ""
            for try await key in try await client.query(
                "SELECT spec_key FROM jobs WHERE id = \(id)", logger: Logger(label: "test")).decode(String.self) { value = key }
            return value
        }
    }

    /// Queues one hourly chunk (hour `offset`) and returns its job id.
    static func queue(_ world: JobsWorld, hour offset: Int) async throws -> Int64 {
        let started = try await world.materialize(hours: 1, offsetHours: offset)
        return try #require(try await world.chunks(of: started.backfill.id).first).id
    }

    static func expectSucceeded(_ world: JobsWorld, _ job: Int64, by agent: AgentProcess) async throws {
        let detail = try await world.waitUntilFinished(job, timeout: 60)
        #expect(detail.job.state == .succeeded, "job \(job): \(detail.job.state) \(String(describing: detail.job.failure))\n\(agent.log.suffix(1_500))")
        #expect(agent.executions.contains { $0.event == "done" && $0.job == job }, "\(agent.name) did not run job \(job)")
    }

    @Test("rotate, activate, retire with running agents: each follows every step; one away during rotate and activate catches up; specs queued under the old key still run; one away through retire is refused until the new key is pinned")
    func rotation() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            let world = try await JobsWorld.make(database: database, agents: 3)
            try await withCleanup({ _ = await world.server.stop() }) {   // before the database is dropped
                let oldKey = world.publicKey
                var first: AgentProcess? = try world.startAgent("agent-1", concurrency: 1, jobMilliseconds: 5)
                try await Self.expectSucceeded(world, try await Self.queue(world, hour: 0), by: first!)
                try await Self.waitForGeneration(world, "agent-1", 1)

                // 1. rotate: announced; the old key still signs. A second rotate is refused.
                let rotated = try await Self.key(world, "rotate")
                #expect(rotated.status == 0, "\(rotated.error)")
                let newKey = try Self.publicKey("next:", in: rotated.output)
                let again = try await Self.key(world, "rotate")
                #expect(again.status != 0 && again.error.contains("already waiting"), "\(again)")
                try await Self.waitForGeneration(world, "agent-1", 2)
                try await Self.expectSucceeded(world, try await Self.queue(world, hour: 1), by: first!)

                // 2. With agent-1 stopped, a job is queued (its spec signed by the old key); then activate.
                #expect(await first!.stop() == 0)
                first = nil
                let queuedUnderOldKey = try await Self.queue(world, hour: 2)
                // Another, held back (not before an hour from now) so that it is still queued at retire.
                let stillOld = try await Self.queue(world, hour: 4)
                try await world.withDatabase { client in
                    try await client.query("UPDATE jobs SET not_before = now() + interval '1 hour' WHERE id = \(stillOld)", logger: Logger(label: "test"))
                }
                let oldFingerprint = try SigningPublicKey(parsing: oldKey).fingerprint
                #expect(try await Self.specKey(world, stillOld) == oldFingerprint)
                let activated = try await Self.key(world, "activate")
                #expect(activated.status == 0, "\(activated.error)")
                #expect(try Self.publicKey("active:", in: activated.output) == newKey)
                #expect(try Self.publicKey("previous:", in: activated.output) == oldKey)
                // agent-1 last reported generation 2: retire waits for it unless forced.
                let early = try await Self.key(world, "retire")
                #expect(early.status != 0 && early.error.contains("agent-1"), "\(early)")

                // 3. agent-2 was away for rotate and activate: pinning the old key, it follows (the old key vouches for the
                // new one) and runs the spec queued under the old key and one signed by the new key.
                let second = try world.startAgent("agent-2", concurrency: 1, jobMilliseconds: 5)
                try await Self.expectSucceeded(world, queuedUnderOldKey, by: second)
                try await Self.expectSucceeded(world, try await Self.queue(world, hour: 3), by: second)
                try await Self.waitForGeneration(world, "agent-2", 3)
                #expect(await second.stop() == 0)

                // 4. Retire (agent-1 is still behind: forced). The spec still queued under the old key is signed again.
                let retired = try await Self.key(world, "retire", "--force")
                #expect(retired.status == 0, "\(retired.error)")
                let listed = try await Self.key(world, "list")
                #expect(listed.output.contains("retired") && listed.output.contains("generation 4"), "\(listed.output)")
                #expect(retired.output.contains("signed 1 queued job spec(s) again"), "\(retired.output)")
                #expect(try await Self.specKey(world, stillOld) == (try SigningPublicKey(parsing: newKey)).fingerprint, "the queued spec was not signed again")
                try await world.withDatabase { client in
                    try await client.query("UPDATE jobs SET not_before = now() WHERE id = \(stillOld)", logger: Logger(label: "test"))
                }

                // agent-2 comes back (it trusts both keys): it follows the retirement and runs the re-signed spec.
                let secondAgain = try world.startAgent("agent-2", concurrency: 1, jobMilliseconds: 5)
                try await Self.expectSucceeded(world, stillOld, by: secondAgain)
                try await Self.waitForGeneration(world, "agent-2", 4)
                let kept = try String(contentsOf: world.folder.appendingPathComponent("agent-2/signing-keys.json"), encoding: .utf8)
                let held = try JSONDecoder().decode([String: JSONValue].self, from: Data(kept.utf8))
                #expect(held["keys"] == .array([.string(newKey)]), "\(kept)")
                #expect(secondAgain.log.contains("accepted the control plane's signing keys"))
                #expect(await secondAgain.stop() == 0)

                // 5. agent-3 was away through all three steps: it pins the retired key only and is refused, with what to do.
                let away = try AgentProcess(
                    name: "agent-3", config: try world.config(for: "agent-3", concurrency: 1), token: world.agentTokens["agent-3"]!,
                    jobMilliseconds: 5, binary: "larder-agent")
                await away.process.waitForExit()
                #expect(away.process.terminationStatus != 0)
                #expect(away.log.contains("public_key"), "\(away.log.suffix(1_500))")
                // Pinned anew by hand, it runs.
                let repinned = try AgentProcess(
                    name: "agent-3", config: try world.config(for: "agent-3", concurrency: 1, key: newKey), token: world.agentTokens["agent-3"]!,
                    jobMilliseconds: 5)
                try await Self.expectSucceeded(world, try await Self.queue(world, hour: 5), by: repinned)
                #expect(await repinned.stop() == 0)
            }
        }
    }
}

import Foundation
import Shared
import Testing
import TestSupport

/// The customer's first five minutes, with the real binaries: an owner makes
/// an enrollment token, the agent's host enrolls with it, runs, rotates its
/// credentials without a restart, and is removed.
@Suite("Agent enrollment with real processes", .serialized)
struct EnrollmentProcessTests {
    static func mode(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]) as? Int) ?? -1
    }

    @Test("enroll-token → larder-agent enroll (0600 files, pinned key, fingerprint checked) → run --data-dir → rotate-credentials while running → agents remove")
    func firstFiveMinutes() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            let world = try await JobsWorld.make(database: database, agents: 1)
            defer { _ = world.server.stop() }
            let cli = ["LARDER_URL": world.server.baseURL, "LARDER_TOKEN": world.admin.token!, "LARDER_WORKSPACE": JobsWorld.workspace]
            func enrollToken(_ extra: [String] = []) throws -> (token: String, fingerprint: String) {
                let made = try LarderBinary.run(["agents", "enroll-token", "--environment", "prod", "--ttl", "10m"] + extra, environment: cli)
                #expect(made.status == 0, "\(made.standardError)")
                let lines = made.standardOutput.split(separator: "\n").map(String.init)
                let token = try #require(lines.first { $0.hasPrefix("lre_") })
                let fingerprint = try #require(lines.first { $0.hasPrefix("control plane key fingerprint") }?.split(separator: " ").last.map(String.init))
                return (token, fingerprint)
            }
            let (token, fingerprint) = try enrollToken(["--agent", "edge-1"])
            #expect(world.publicKey.hasPrefix("ed25519:"))

            // A wrong expected fingerprint: refused, nothing written.
            let (other, _) = try enrollToken()
            let refusedDirectory = world.folder.appendingPathComponent("refused").path
            let mismatch = try LarderBinary.run(
                ["enroll", "--url", world.server.baseURL, "--token", other, "--data-dir", refusedDirectory, "--expect-fingerprint", "0000"],
                binary: "larder-agent")
            #expect(mismatch.status != 0 && mismatch.standardError.contains("nothing was written"), "\(mismatch.standardError)")
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: refusedDirectory)) ?? []).isEmpty)
            // Plain HTTP to another host is refused before anything is sent.
            let insecure = try LarderBinary.run(
                ["enroll", "--url", "http://larder.example.com:7070", "--token", token, "--data-dir", refusedDirectory], binary: "larder-agent")
            #expect(insecure.status != 0 && insecure.standardError.contains("refusing plain HTTP"), "\(insecure.standardError)")

            // Enroll.
            let directory = world.folder.appendingPathComponent("edge-1").path
            let enrolled = try LarderBinary.run(
                ["enroll", "--url", world.server.baseURL, "--token", token, "--data-dir", directory, "--expect-fingerprint", fingerprint],
                binary: "larder-agent")
            #expect(enrolled.status == 0, "\(enrolled.standardError)")
            #expect(enrolled.standardOutput.contains("enrolled as agent edge-1 of workspace \(JobsWorld.workspace) (environment prod)"))
            #expect(enrolled.standardOutput.contains("control plane key fingerprint: \(fingerprint)"))
            let tokenFile = directory + "/agent.token", configFile = directory + "/agent.yaml"
            let agentToken = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(agentToken.hasPrefix("lrd_"))
            #expect(!enrolled.standardOutput.contains(agentToken) && !enrolled.standardError.contains(agentToken), "the token is never printed")
            #expect(Self.mode(tokenFile) == 0o600 && Self.mode(configFile) == 0o600 && Self.mode(directory) == 0o700)
            let config = try String(contentsOfFile: configFile, encoding: .utf8)
            #expect(config.contains("public_key: \(world.publicKey)") && config.contains("token_file: \(tokenFile)"))
            // The same token again: refused.
            let reused = try LarderBinary.run(
                ["enroll", "--url", world.server.baseURL, "--token", token, "--data-dir", world.folder.appendingPathComponent("again").path],
                binary: "larder-agent")
            #expect(reused.status != 0 && reused.standardError.contains("already used"), "\(reused.standardError)")

            // Run from the data directory (serving on a free port), and see it connect.
            try (config + "serving:\n  listen: 127.0.0.1:0\n").write(toFile: configFile, atomically: false, encoding: .utf8)
            let agent = try AgentProcess(
                name: "edge-1", config: URL(fileURLWithPath: configFile), token: nil, jobMilliseconds: 0, binary: "larder-agent",
                arguments: ["run", "--data-dir", directory])
            defer { _ = agent.stop() }
            func lastSeen() async throws -> Date? {
                try await world.admin.agents(workspace: JobsWorld.workspace).first { $0.name == "edge-1" }?.lastSeenAt
            }
            func waitForHeartbeat(after moment: Date) async throws -> Bool {
                let deadline = Date().addingTimeInterval(20)
                while Date() < deadline {
                    if let seen = try await lastSeen(), seen > moment { return true }
                    try await Task.sleep(for: .milliseconds(200))
                }
                return false
            }
            #expect(try await waitForHeartbeat(after: .distantPast), "\(agent.log)")

            // Rotate with a short grace (requests in flight with the old token still pass): once it is over the
            // old token is refused, and the running agent goes on with the new one, never refused.
            let rotated = try LarderBinary.run(["rotate-credentials", "--data-dir", directory, "--grace-seconds", "3"], binary: "larder-agent")
            #expect(rotated.status == 0, "\(rotated.standardError)")
            let newToken = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(newToken != agentToken && Self.mode(tokenFile) == 0o600)
            try await Task.sleep(for: .milliseconds(3_500))
            let old = ControlPlaneClient(baseURL: world.server.baseURL, token: agentToken)
            await #expect(throws: ProblemDetails.self) { _ = try await old.hello(AgentHello(instanceId: "x", version: "t", hostname: "h", capabilities: [])) }
            let afterGrace = Date()
            #expect(try await waitForHeartbeat(after: afterGrace.addingTimeInterval(1)), "\(agent.log)")
            #expect(!agent.log.contains("refused"), "\(agent.log)")

            // Removed: refused at once; the agent says so and stops claiming.
            let removed = try LarderBinary.run(["agents", "remove", "edge-1"], environment: cli)
            #expect(removed.status == 0, "\(removed.standardError)")
            let current = ControlPlaneClient(baseURL: world.server.baseURL, token: newToken)
            await #expect(throws: ProblemDetails.self) { _ = try await current.hello(AgentHello(instanceId: "x", version: "t", hostname: "h", capabilities: [])) }
            let deadline = Date().addingTimeInterval(20)
            while !agent.log.contains("refused this agent's token"), Date() < deadline { try await Task.sleep(for: .milliseconds(200)) }
            #expect(agent.log.contains("refused this agent's token"), "\(agent.log)")
        }
    }
}

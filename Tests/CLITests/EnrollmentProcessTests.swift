import AsyncHTTPClient
import Foundation
import NIOSSL
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
            try await withCleanup({ _ = await world.server.stop() }) {
                let cli = ["LARDER_URL": world.server.baseURL, "LARDER_TOKEN": world.admin.token!, "LARDER_WORKSPACE": JobsWorld.workspace]
                func enrollToken(_ extra: [String] = []) async throws -> (token: String, fingerprint: String) {
                    let made = try await LarderBinary.run(["agents", "enroll-token", "--environment", "prod", "--ttl", "10m"] + extra, environment: cli)
                    #expect(made.status == 0, "\(made.standardError)")
                    let lines = made.standardOutput.split(separator: "\n").map(String.init)
                    let token = try #require(lines.first { $0.hasPrefix("lre_") })
                    let fingerprint = try #require(lines.first { $0.hasPrefix("control plane key fingerprint") }?.split(separator: " ").last.map(String.init))
                    return (token, fingerprint)
                }
                let (token, fingerprint) = try await enrollToken(["--agent", "edge-1"])
                #expect(world.publicKey.hasPrefix("ed25519:"))

                // A wrong expected fingerprint: refused, nothing written.
                let (other, _) = try await enrollToken()
                let refusedDirectory = world.folder.appendingPathComponent("refused").path
                let mismatch = try await LarderBinary.run(
                    ["enroll", "--url", world.server.baseURL, "--token", other, "--data-dir", refusedDirectory, "--expect-fingerprint", "0000"],
                    binary: "larder-agent")
                #expect(mismatch.status != 0 && mismatch.standardError.contains("nothing was written"), "\(mismatch.standardError)")
                #expect(((try? FileManager.default.contentsOfDirectory(atPath: refusedDirectory)) ?? []).isEmpty)
                // Plain HTTP to another host is refused before anything is sent.
                let insecure = try await LarderBinary.run(
                    ["enroll", "--url", "http://larder.example.com:7070", "--token", token, "--data-dir", refusedDirectory], binary: "larder-agent")
                #expect(insecure.status != 0 && insecure.standardError.contains("refusing plain HTTP"), "\(insecure.standardError)")

                // Settings that could not work are refused before the one-time token is spent, naming the file and line.
                let (spare, _) = try await enrollToken(["--agent", "edge-2"])
                let settingsFile = world.folder.appendingPathComponent("agent-settings.yaml").path
                let spareDirectory = world.folder.appendingPathComponent("edge-2").path
                for (bad, expected) in [
                    ("serving:\n  listen: 127.0.0.1:0\ncontrol_plane: https://elsewhere.example.com\n", "\(settingsFile):3: control_plane: enroll writes this setting"),
                    ("concurrency: 2\nconections: {}\n", "\(settingsFile):2: unknown setting 'conections'"),
                    ("serving:\n  listen: 127.0.0.1:0\n  tls_certificate: /nonexistent/cert.pem\n", "\(settingsFile):3: serving.tls_certificate: cannot read"),
                    ("{concurrency: 2}\n", "expected settings as a block mapping"),
                ] {
                    try bad.write(toFile: settingsFile, atomically: true, encoding: .utf8)
                    let refused = try await LarderBinary.run(
                        ["enroll", "--url", world.server.baseURL, "--token", spare, "--data-dir", spareDirectory, "--settings", settingsFile],
                        binary: "larder-agent")
                    #expect(refused.status != 0 && refused.standardError.contains(expected), "\(bad): \(refused.standardError)")
                    #expect(!FileManager.default.fileExists(atPath: spareDirectory + "/agent.token"))
                }
                let spent = try await LarderBinary.run(
                    ["enroll", "--url", world.server.baseURL, "--token", spare, "--data-dir", spareDirectory], binary: "larder-agent")
                #expect(spent.status == 0, "the refused settings left the token unspent: \(spent.standardError)")

                // Enroll with the token in a file (a mounted secret) and settings that serve HTTPS.
                let certificates = try await ThrowawayCertificates()
                defer { try? FileManager.default.removeItem(at: certificates.folder) }
                let settings = """
                    # this agent's own settings
                    concurrency: 1
                    serving:
                      listen: 127.0.0.1:0
                      tls_certificate: \(certificates.serverCertificate)
                      tls_key: \(certificates.serverKey)

                    """
                try settings.write(toFile: settingsFile, atomically: true, encoding: .utf8)
                let enrollmentTokenFile = world.folder.appendingPathComponent("enrollment-token").path
                try (token + "\n").write(toFile: enrollmentTokenFile, atomically: true, encoding: .utf8)
                let directory = world.folder.appendingPathComponent("edge-1").path
                let enrolled = try await LarderBinary.run(
                    ["enroll", "--url", world.server.baseURL, "--token-file", enrollmentTokenFile, "--data-dir", directory,
                     "--expect-fingerprint", fingerprint, "--settings", settingsFile, "--skip-if-enrolled"],
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
                #expect(config.hasPrefix(settings), "the settings come first, verbatim, so errors name their own lines")
                // The same token again: refused.
                let reused = try await LarderBinary.run(
                    ["enroll", "--url", world.server.baseURL, "--token", token, "--data-dir", world.folder.appendingPathComponent("again").path],
                    binary: "larder-agent")
                #expect(reused.status != 0 && reused.standardError.contains("already used"), "\(reused.standardError)")

                // Enrolling again with --skip-if-enrolled (every container start does): the credentials and the pinned
                // key stay, the spent token is not sent again, the settings are rewritten from the file.
                try settings.replacingOccurrences(of: "concurrency: 1", with: "concurrency: 3").write(toFile: settingsFile, atomically: true, encoding: .utf8)
                let again = try await LarderBinary.run(
                    ["enroll", "--url", world.server.baseURL, "--token-file", enrollmentTokenFile, "--data-dir", directory,
                     "--settings", settingsFile, "--skip-if-enrolled"],
                    binary: "larder-agent")
                #expect(again.status == 0 && again.standardOutput.contains("already enrolled (agent edge-1 of workspace"), "\(again.standardError)")
                let rewritten = try String(contentsOfFile: configFile, encoding: .utf8)
                #expect(rewritten.contains("concurrency: 3") && !rewritten.contains("concurrency: 1") && rewritten.contains("public_key: \(world.publicKey)"))
                #expect(try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) == agentToken)
                #expect(Self.mode(configFile) == 0o600)
                let withoutFlag = try await LarderBinary.run(
                    ["enroll", "--url", world.server.baseURL, "--token-file", enrollmentTokenFile, "--data-dir", directory], binary: "larder-agent")
                #expect(withoutFlag.status != 0 && withoutFlag.standardError.contains("already holds an enrolled agent"))

                // Run from the data directory, and see it connect.
                let agent = try AgentProcess(
                    name: "edge-1", config: URL(fileURLWithPath: configFile), token: nil, jobMilliseconds: 0, binary: "larder-agent",
                    arguments: ["run", "--data-dir", directory])
                try await withCleanup({ _ = await agent.stop() }) {
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

                    // Its feature server answers HTTPS to a client trusting the CA, and nothing else.
                    let addressFile = directory + "/serving-address"
                    let addressDeadline = Date().addingTimeInterval(20)
                    while !FileManager.default.fileExists(atPath: addressFile), Date() < addressDeadline { try await Task.sleep(for: .milliseconds(100)) }
                    let address = try String(contentsOfFile: addressFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                    #expect(address.hasPrefix("https://127.0.0.1:"), "\(address)")
                    var trust = TLSConfiguration.makeClientConfiguration()
                    trust.trustRoots = .file(certificates.caCertificate)
                    let trusting = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: trust))
                    let untrusting = HTTPClient(eventLoopGroupProvider: .singleton)
                    do {
                        let healthy = try await trusting.execute(HTTPClientRequest(url: address + "/healthz"), timeout: .seconds(10))
                        #expect(healthy.status == .ok)
                        await #expect(throws: (any Error).self) { _ = try await untrusting.execute(HTTPClientRequest(url: address + "/healthz"), timeout: .seconds(5)) }
                        let plain = address.replacingOccurrences(of: "https://", with: "http://")
                        let answered = try? await untrusting.execute(HTTPClientRequest(url: plain + "/healthz"), timeout: .seconds(5))
                        #expect(answered?.status != .ok, "plain HTTP is not served beside HTTPS")
                    }
                    try await trusting.shutdown()
                    try await untrusting.shutdown()

                    // Rotate with a short grace (requests in flight with the old token still pass): once it is over the
                    // old token is refused, and the running agent goes on with the new one, never refused.
                    let rotated = try await LarderBinary.run(["rotate-credentials", "--data-dir", directory, "--grace-seconds", "3"], binary: "larder-agent")
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
                    let removed = try await LarderBinary.run(["agents", "remove", "edge-1"], environment: cli)
                    #expect(removed.status == 0, "\(removed.standardError)")
                    let current = ControlPlaneClient(baseURL: world.server.baseURL, token: newToken)
                    await #expect(throws: ProblemDetails.self) { _ = try await current.hello(AgentHello(instanceId: "x", version: "t", hostname: "h", capabilities: [])) }
                    let deadline = Date().addingTimeInterval(20)
                    while !agent.log.contains("refused this agent's token"), Date() < deadline { try await Task.sleep(for: .milliseconds(200)) }
                    #expect(agent.log.contains("refused this agent's token"), "\(agent.log)")
                }
            }
        }
    }
}

import ControlPlane
import Shared
import Foundation
import Testing
import TestSupport

/// A `larder-control` process with its own database, logging to a file
/// (read it with `log`), so a chatty server never blocks on a full pipe.
final class ControlPlaneProcess {
    let process = Process()
    let baseURL: String
    /// What the server wrote to stderr up to the moment it listened.
    let startupOutput: String
    /// Where its stderr goes.
    let logFile: URL

    /// Starts `larder-control` with `bootstrapToken` as `LARDER_BOOTSTRAP_TOKEN` (none: it prints one),
    /// listening on `listen` (a free port by default), with extra `environment`; the task waits suspended until it listens.
    init(databaseURL: String, bootstrapToken: String?, listen: String = "127.0.0.1:0", environment extra: [String: String] = [:]) async throws {
        process.executableURL = LarderBinary.directory.appendingPathComponent("larder-control")
        process.arguments = ["serve", "--listen", listen, "--database-url", databaseURL]
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LARDER_") }
        if let bootstrapToken { environment["LARDER_BOOTSTRAP_TOKEN"] = bootstrapToken }
        environment.merge(extra) { _, new in new }
        process.environment = environment
        logFile = FileManager.default.temporaryDirectory.appendingPathComponent("larder-control-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: logFile.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: logFile)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // The server logs its address once it listens: read the log until then.
        let deadline = Date().addingTimeInterval(60)
        var found: String?
        var buffered = ""
        while found == nil, Date() < deadline, process.isRunning || buffered.isEmpty {
            buffered = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
            if let range = buffered.range(of: #"larder\.address=(http://127\.0\.0\.1:\d+)"#, options: .regularExpression) {
                found = String(buffered[range].dropFirst("larder.address=".count))
            } else {
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        guard let found else {
            if process.isRunning { process.terminate() }
            throw LarderBinary.Failure(description: "larder-control did not start:\n\(buffered)")
        }
        baseURL = found
        startupOutput = buffered
    }

    /// Everything the server logged so far.
    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// `host:port` it listens on.
    var listenAddress: String { String(baseURL.dropFirst("http://".count)) }

    /// Sends SIGTERM and waits; returns the exit status. A server that has not exited 30 s later fails the
    /// test (its graceful shutdown hung: the log's tail is in the issue) and is killed, so a run never hangs.
    func stop() async -> Int32 {
        await process.terminateAndWait(name: "larder-control") { log }
    }

    /// Sends `signal` and waits (suspended) for the process to end.
    func kill(_ signal: Int32) async {
        Foundation.kill(process.processIdentifier, signal)
        await process.waitForExit()
    }

    deinit {
        if process.isRunning { process.terminate() }
        try? FileManager.default.removeItem(at: logFile)
    }
}

extension LarderBinary {
    struct Failure: Error, CustomStringConvertible { let description: String }
}

@Suite("larder against a running larder-control")
struct ControlPlaneProcessTests {
    @Test("a new user's session: create a workspace, plan, apply, edit, apply, inspect")
    func endToEnd() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            let adminToken = APIToken.generate().text
            let server = try await ControlPlaneProcess(databaseURL: database.urlString, bootstrapToken: adminToken)
            try await withCleanup({ if server.process.isRunning { _ = await server.stop() } }) {
                #expect(!server.startupOutput.contains(adminToken))
                let folder = try LarderBinary.temporaryDirectory()
                defer { try? FileManager.default.removeItem(at: folder) }
                let environment = ["LARDER_URL": server.baseURL, "LARDER_TOKEN": adminToken]
                func larder(_ arguments: String..., input: String? = nil) async throws -> LarderBinary.Result {
                    try await LarderBinary.run(arguments, in: folder, environment: environment, input: input)
                }

                #expect(try await larder("init", "repo").status == 0)
                let created = try await larder("workspaces", "create", "driver-stats")
                #expect(created.status == 0, "\(created.standardError)")
                try "workspace: driver-stats\n".write(to: folder.appendingPathComponent("repo/larder.yaml"), atomically: true, encoding: .utf8)

                let plan = try await larder("plan", "repo")
                #expect(plan.status == 0, "\(plan.standardError)")
                #expect(plan.standardOutput.contains("+ FeatureService driver_ranking"))
                #expect(plan.standardOutput.contains("Summary: 9 to create."))

                let declined = try await larder("apply", "repo", input: "no\n")
                #expect(declined.status == 1 && declined.standardOutput.contains("not applied"))
                #expect(try await larder("ls", "views", "-w", "driver-stats").standardOutput.split(separator: "\n").count == 1)

                let applied = try await larder("apply", "repo", input: "yes\n")
                #expect(applied.status == 0, "\(applied.standardError)")
                #expect(applied.standardOutput.contains("is at revision 1"))
                let again = try await larder("apply", "--yes", "repo")
                #expect(again.standardOutput.contains("No changes"))

                let features = folder.appendingPathComponent("repo/features.yaml")
                let text = try String(contentsOf: features, encoding: .utf8)
                try text.replacingOccurrences(of: "    windows: [7d]\n", with: "    windows: [7d, 30d]\n")
                    .write(to: features, atomically: true, encoding: .utf8)
                let edited = try await larder("plan", "repo")
                #expect(edited.standardOutput.contains("~ FeatureView driver_trip_aggregates"))
                #expect(edited.standardOutput.contains("new version v1 → v2"))
                #expect(edited.standardOutput.contains("spec.aggregations[2].windows[1]: (none) → 2592000"))
                #expect(edited.standardOutput.contains("impact: FeatureService driver_ranking, OnDemandFeatureView trip_quote"))
                #expect(try await larder("apply", "-y", "repo").status == 0)

                let versions = try await larder("versions", "feature-views", "driver_trip_aggregates", "--repo", "repo")
                #expect(versions.standardOutput.contains("v1 ") && versions.standardOutput.contains("v2 *"))
                let old = try await larder("describe", "FeatureView", "driver_trip_aggregates", "--version", "1", "-w", "driver-stats")
                #expect(old.status == 0 && old.standardOutput.contains("FeatureView driver_trip_aggregates v1"))
                let lineage = try await larder("lineage", "sources", "trips", "-w", "driver-stats")
                #expect(lineage.standardOutput.contains("FeatureView driver_trip_aggregates v2"))
                #expect(lineage.standardOutput.contains("FeatureView driver_trip_aggregates v1 (not current)"))
                let search = try await larder("search", "fare", "-w", "driver-stats", "--json")
                #expect(search.standardOutput.contains("\"name\" : \"driver_trip_aggregates\""))
                let missing = try await larder("describe", "views", "nope", "-w", "driver-stats")
                #expect(missing.status == 1 && missing.standardError.contains("no object named 'nope'"))

                #expect(await server.stop() == 0, "graceful shutdown on SIGTERM exits 0")
                let down = try await larder("ls", "views", "-w", "driver-stats")
                #expect(down.status == 1 && down.standardError.contains("cannot reach the control plane"))
            }
        }
    }

    @Test("without LARDER_BOOTSTRAP_TOKEN the first start prints an admin token once; larder login stores it 0600")
    func bootstrapAndLogin() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            let first = try await ControlPlaneProcess(databaseURL: database.urlString, bootstrapToken: nil)
            let match = try #require(first.startupOutput.range(of: #"lrd_[a-z0-9]{12}_[A-Za-z0-9_-]{43}"#, options: .regularExpression))
            let token = String(first.startupOutput[match])
            #expect(await first.stop() == 0)
            let second = try await ControlPlaneProcess(databaseURL: database.urlString, bootstrapToken: nil)
            try await withCleanup({ if second.process.isRunning { _ = await second.stop() } }) {
                #expect(!second.startupOutput.contains("lrd_"), "the token is printed only on the first start")

                let folder = try LarderBinary.temporaryDirectory()
                defer { try? FileManager.default.removeItem(at: folder) }
                let config = folder.appendingPathComponent("home/larder/config.json")
                let environment = ["LARDER_CONFIG": config.path]
                func larder(_ arguments: String..., input: String? = nil) async throws -> LarderBinary.Result {
                    try await LarderBinary.run(arguments, in: folder, environment: environment, input: input)
                }
                let login = try await larder("login", "--url", second.baseURL, "--token", "-", input: token + "\n")
                #expect(login.status == 0, "\(login.standardError)")
                let attributes = try FileManager.default.attributesOfItem(atPath: config.path)
                #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
                #expect(try await larder("whoami").standardOutput.hasPrefix("admin (user, admin)"))

                #expect(try await larder("workspaces", "create", "rides").status == 0)
                let account = try await larder("service-accounts", "create", "model-server", "--role", "consumer", "-w", "rides", "--token")
                #expect(account.status == 0, "\(account.standardError)")
                let tokenLine = try #require(account.standardOutput.split(separator: "\n").first { $0.hasPrefix("token (shown only now): ") })
                let serverToken = String(tokenLine.dropFirst("token (shown only now): ".count))
                // A consumer service account's token is for agents: the control plane says whose it is, and nothing more.
                #expect(account.standardOutput.contains("audience: data-plane"))
                let refused = try await LarderBinary.run(
                    ["jobs", "ls", "-w", "rides"], in: folder, environment: ["LARDER_URL": second.baseURL, "LARDER_TOKEN": serverToken, "LARDER_CONFIG": "/nonexistent"])
                #expect(refused.status != 0 && refused.standardError.contains("token-audience"), "\(refused.standardError)")
                let access = try await larder("access", "ls", "-w", "rides")
                #expect(access.standardOutput.contains("model-server") && access.standardOutput.contains("consumer"))
                let asServer = try await LarderBinary.run(
                    ["whoami"], in: folder, environment: ["LARDER_URL": second.baseURL, "LARDER_TOKEN": serverToken, "LARDER_CONFIG": "/nonexistent"])
                #expect(asServer.standardOutput.contains("model-server (service_account)") && asServer.standardOutput.contains("rides: viewer, consumer"))
                let tokens = try await larder("tokens", "ls", "--principal", "model-server")
                let publicID = try #require(tokens.standardOutput.split(separator: "\n").dropFirst().first?.split(separator: " ").first)
                #expect(try await larder("tokens", "revoke", String(publicID), "--principal", "model-server").status == 0)
                let revoked = try await LarderBinary.run(
                    ["whoami"], in: folder, environment: ["LARDER_URL": second.baseURL, "LARDER_TOKEN": serverToken, "LARDER_CONFIG": "/nonexistent"])
                #expect(revoked.status == 1 && revoked.standardError.contains("unauthenticated"))
                let audit = try await larder("audit", "--limit", "5")
                #expect(audit.standardOutput.contains("DELETE /v1/principals/{principal}/tokens/{token}"))
            }
        }
    }

    @Test("larder-control refuses to start without a database and says which setting is missing")
    func missingDatabase() async throws {
        let process = Process()
        process.executableURL = LarderBinary.directory.appendingPathComponent("larder-control")
        process.arguments = ["serve"]
        process.environment = ["PATH": "/usr/bin:/bin"]
        let error = Pipe()
        process.standardError = error
        try process.run()
        let output = try await onThreadOfItsOwn { String(decoding: error.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) }
        await process.waitForExit()
        #expect(process.terminationStatus != 0)
        #expect(output.contains("LARDER_DATABASE_URL"))
    }

    /// Starts `larder-control serve` against `databaseURL` with `environment`; its stderr goes to a file.
    static func startServe(databaseURL: String, environment: [String: String]) throws -> (Process, URL) {
        let process = Process()
        process.executableURL = LarderBinary.directory.appendingPathComponent("larder-control")
        process.arguments = ["serve", "--listen", "127.0.0.1:0", "--database-url", databaseURL]
        process.environment = ["PATH": "/usr/bin:/bin"].merging(environment) { $1 }
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("larder-control-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: log)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        return (process, log)
    }

    @Test("a database that does not answer: larder-control retries for LARDER_DATABASE_WAIT, then exits naming it; SIGTERM stops the wait; a refusal ends it at once")
    func unreachableDatabase() async throws {
        // Nothing listens on a port just freed.
        let closed = try TestRedis.freePort()
        let unreachable = "postgres://larder:secret-password@127.0.0.1:\(closed)/larder?sslmode=disable"

        // It gives up after its wait, saying which database, without the password.
        let (waiting, waitingLog) = try Self.startServe(databaseURL: unreachable, environment: ["LARDER_DATABASE_WAIT": "3s"])
        defer { try? FileManager.default.removeItem(at: waitingLog) }
        let started = ContinuousClock.now
        await waiting.waitForExit()
        let output = (try? String(contentsOf: waitingLog, encoding: .utf8)) ?? ""
        #expect(waiting.terminationStatus != 0)
        #expect(ContinuousClock.now - started >= .seconds(2), "it should retry for its wait first")
        #expect(output.contains("did not answer within 3.0 seconds") && output.contains("127.0.0.1:\(closed)/larder"), "\(output)")
        #expect(output.contains("the database does not answer yet; retrying"), "\(output)")
        #expect(!output.contains("secret-password"))

        // SIGTERM while it waits (for up to ten minutes) stops it promptly.
        let (patient, patientLog) = try Self.startServe(databaseURL: unreachable, environment: ["LARDER_DATABASE_WAIT": "10m"])
        defer { try? FileManager.default.removeItem(at: patientLog) }
        let patientOutput = { (try? String(contentsOf: patientLog, encoding: .utf8)) ?? "" }
        let waitStarted = ContinuousClock.now
        while !patientOutput().contains("does not answer yet"), ContinuousClock.now - waitStarted < .seconds(60) {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(patientOutput().contains("does not answer yet"))
        // terminateAndWait fails the test if it is still running 30 s after SIGTERM.
        _ = await patient.terminateAndWait(name: "larder-control waiting for its database", log: patientOutput)
        #expect(patient.terminationReason == .exit && patient.terminationStatus == 0, "stopped by its graceful shutdown, not killed")
        #expect(patientOutput().contains("stopped before the server started"), "\(patientOutput())")

        // A server that answers with a refusal (no such database) is not waited for.
        let server = try TestDatabase.serverURL()
        let missing = server.with(database: "larder_no_such_database").urlString
        let (refused, refusedLog) = try Self.startServe(databaseURL: missing, environment: ["LARDER_DATABASE_WAIT": "10m"])
        defer { try? FileManager.default.removeItem(at: refusedLog) }
        let refusedAt = ContinuousClock.now
        await refused.waitForExit()
        let refusal = (try? String(contentsOf: refusedLog, encoding: .utf8)) ?? ""
        #expect(refused.terminationStatus != 0)
        #expect(ContinuousClock.now - refusedAt < .seconds(60), "a refusal should not be waited out")
        #expect(refusal.contains("refused the connection") && refusal.contains("3D000"), "\(refusal)")
    }
}

@Suite("larder-control key")
struct SigningKeyCommandTests {
    /// `larder-control key` against `databaseURL` (run and waited for on a thread of its own): the key and its fingerprint.
    static func key(_ databaseURL: String) async throws -> (key: String, fingerprint: String) {
        let (status, text) = try await onThreadOfItsOwn {
            let process = Process()
            process.executableURL = LarderBinary.directory.appendingPathComponent("larder-control")
            process.arguments = ["key", "--database-url", databaseURL, "--log-level", "error"]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return (process.terminationStatus, text)
        }
        #expect(status == 0)
        let lines = text.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).last.map(String.init) ?? "" }
        return (lines.first ?? "", lines.dropFirst().first ?? "")
    }

    @Test("the key pair is created once and then always shown the same, ready to pin")
    func stableKey() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            let first = try await Self.key(database.urlString)
            let second = try await Self.key(database.urlString)
            #expect(first.key.hasPrefix("ed25519:") && first == second)
            let pinned = try SigningPublicKey(parsing: first.key)
            #expect(pinned.fingerprint == first.fingerprint)
        }
    }
}

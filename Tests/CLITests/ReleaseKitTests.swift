import AsyncHTTPClient
import Foundation
import Shared
import Testing
import TestSupport

/// The release kit for real: `deploy/release/build` packages the built
/// binaries (the debug ones: a release build is too slow for every run),
/// `install.sh` installs the tarball into a system root of its own, and the
/// installed units are started the way systemd would start them — as their
/// users, with their environment files, ExecStartPre before ExecStart, their
/// umask — up to an enrolled agent heartbeating to the control plane.
@Suite("Release tarball, install script and units", .serialized)
struct ReleaseKitTests {
    static let buildScript = LarderBinary.root.appendingPathComponent("deploy/release/build").path
    static let installScript = LarderBinary.root.appendingPathComponent("deploy/install.sh").path

    /// The real, effective, saved and filesystem uids of a process, deduplicated.
    static func uids(of pid: Int32) -> Set<Int> {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") }) else { return [] }
        return Set(line.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().compactMap { Int($0) })
    }

    static func mode(_ path: String) -> Int { ((try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]) as? Int) ?? -1 }
    static func owner(_ path: String) -> Int { ((try? FileManager.default.attributesOfItem(atPath: path)[.ownerAccountID]) as? Int) ?? -1 }

    /// A system root with just the account files `useradd --root` edits.
    static func seededRoot(in folder: URL) throws -> URL {
        let root = folder.appendingPathComponent("root")
        let etc = root.appendingPathComponent("etc")
        try FileManager.default.createDirectory(at: etc, withIntermediateDirectories: true)
        for (name, text, mode) in [
            ("passwd", "root:x:0:0:root:/root:/bin/bash\n", 0o644), ("group", "root:x:0:\n", 0o644),
            ("shadow", "root:*:19000:0:99999:7:::\n", 0o640), ("gshadow", "root:*::\n", 0o640),
        ] {
            try text.write(to: etc.appendingPathComponent(name), atomically: true, encoding: .utf8)
            chmod(etc.appendingPathComponent(name).path, mode_t(mode))
        }
        return root
    }

    /// `name`'s uid and gid in the root's `etc/passwd`.
    static func account(_ name: String, in root: URL) throws -> (uid: Int, gid: Int, shell: String) {
        let passwd = try String(contentsOf: root.appendingPathComponent("etc/passwd"), encoding: .utf8)
        let fields = try #require(passwd.split(separator: "\n").map { $0.split(separator: ":", omittingEmptySubsequences: false) }.first { $0[0] == name })
        return (Int(fields[2])!, Int(fields[3])!, String(fields[6]))
    }

    @Test("""
        build --binaries → SHA256SUMS verifies → install.sh into a seeded root (users, modes, links, units; idempotent; a tampered \
        tarball refused) → the installed units started as systemd would: the control plane migrates and serves as larder, the \
        agent enrolled as larder-agent heartbeats and serves
        """)
    func releaseKit() async throws {
        try #require(getuid() == 0, "install.sh creates users and root-owned files, the units run as their users: the test runs as root (as CI does)")
        let folder = try LarderBinary.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        chmod(folder.path, 0o755)
        let root = try await Self.packageAndInstall(in: folder)
        try await Self.startInstalledUnits(root: root, folder: folder)
    }

    /// Packages the built binaries, checks the tarball, installs it into a root of its own; returns the root.
    static func packageAndInstall(in folder: URL) async throws -> URL {
        let dist = folder.appendingPathComponent("dist")
        let built = try await LarderBinary.command([Self.buildScript, "--binaries", LarderBinary.directory.path, "--output", dist.path])
        #expect(built.status == 0, "\(built.standardError)")
        let tarball = try #require(try FileManager.default.contentsOfDirectory(atPath: dist.path).first { $0.hasSuffix(".tar.gz") })
        #expect(tarball.hasPrefix("larder-\(LarderVersion.number)-linux-"))
        let checked = try await LarderBinary.command(["sha256sum", "-c", "SHA256SUMS"], in: dist)
        #expect(checked.status == 0 && checked.standardOutput.contains("\(tarball): OK"), "\(checked.standardOutput)\(checked.standardError)")
        let listing = try await LarderBinary.command(["tar", "-tzf", dist.appendingPathComponent(tarball).path])
        let release = String(tarball.dropLast(".tar.gz".count))
        for entry in ["bin/larder", "bin/larder-control", "bin/larder-agent", "systemd/larder-control.service", "systemd/larder-agent.service",
                      "install.sh", "VERSION"] {
            #expect(listing.standardOutput.contains("\(release)/\(entry)\n"), "\(entry) is in the tarball")
        }

        // A tampered copy beside the same SHA256SUMS: refused, nothing installed.
        let tampered = folder.appendingPathComponent("tampered")
        try FileManager.default.createDirectory(at: tampered, withIntermediateDirectories: true)
        var bytes = try Data(contentsOf: dist.appendingPathComponent(tarball))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: tampered.appendingPathComponent(tarball))
        try FileManager.default.copyItem(at: dist.appendingPathComponent("SHA256SUMS"), to: tampered.appendingPathComponent("SHA256SUMS"))
        let untouched = try Self.seededRoot(in: tampered)
        let refused = try await LarderBinary.command(["bash", Self.installScript, tampered.appendingPathComponent(tarball).path, "--root", untouched.path, "--no-enable"])
        #expect(refused.status != 0 && refused.standardError.contains("checksum mismatch"), "\(refused.standardError)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: untouched.path) == ["etc"])
        #expect(!(try String(contentsOf: untouched.appendingPathComponent("etc/passwd"), encoding: .utf8)).contains("larder"))

        // Installed into a root of its own, twice (the second run changes nothing).
        let root = try Self.seededRoot(in: folder)
        for run in 1...2 {
            let installed = try await LarderBinary.command(["bash", Self.installScript, dist.appendingPathComponent(tarball).path, "--root", root.path, "--no-enable"])
            #expect(installed.status == 0, "run \(run): \(installed.standardError)")
            if run == 2 { #expect(installed.standardOutput.contains("user larder: exists") && installed.standardOutput.contains("larder-control.service: unchanged")) }
        }
        let control = try Self.account("larder", in: root), agent = try Self.account("larder-agent", in: root)
        #expect(control.uid != 0 && agent.uid != 0 && control.uid != agent.uid)
        #expect(control.shell == "/usr/sbin/nologin" && agent.shell == "/usr/sbin/nologin")
        let passwd = try String(contentsOf: root.appendingPathComponent("etc/passwd"), encoding: .utf8)
        #expect(passwd.split(separator: "\n").filter { $0.hasPrefix("larder:") || $0.hasPrefix("larder-agent:") }.count == 2)
        for binary in ["larder", "larder-control", "larder-agent"] {
            let link = root.appendingPathComponent("usr/local/bin/\(binary)").path
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == "../lib/larder/\(LarderVersion.number)/bin/\(binary)")
            let version = try await LarderBinary.command([link, "--version"])
            #expect(version.standardOutput.hasPrefix(LarderVersion.number + " (revision "), "\(binary): \(version.standardOutput)")
        }
        let units = root.appendingPathComponent("etc/systemd/system")
        for unit in ["larder-control.service", "larder-agent.service"] {
            let installed = try String(contentsOf: units.appendingPathComponent(unit), encoding: .utf8)
            let shipped = try String(contentsOf: LarderBinary.root.appendingPathComponent("deploy/systemd/\(unit)"), encoding: .utf8)
            #expect(installed == shipped)
        }
        #expect(Self.mode(root.appendingPathComponent("etc/larder/control.env").path) == 0o600)
        #expect(Self.mode(root.appendingPathComponent("etc/larder/agent.env").path) == 0o600)
        let data = root.appendingPathComponent("var/lib/larder-agent").path
        #expect(Self.mode(data) == 0o700 && Self.owner(data) == agent.uid)
        return root
    }

    /// A service started as systemd starts its unit: ExecStartPre, then ExecStart, as the unit's user, with a
    /// clean environment from its EnvironmentFile(s) and its UMask. Absolute paths in the unit are taken
    /// inside `root` (the units name /usr/local/bin and /var/lib; the test's root stands for /).
    final class UnitProcess {
        let process = Process()
        let logFile: URL
        var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

        init(unit: URL, root: URL, replacing: [String: String] = [:]) async throws {
            let settings = DeployKitTests.settings(try String(contentsOf: unit, encoding: .utf8))
            func value(_ key: String) -> String? { settings.last { $0.key == key }?.value }
            let user = try #require(value("User"))
            let account = try ReleaseKitTests.account(user, in: root)
            var environment = ["PATH": "/usr/local/bin:/usr/bin:/bin"]
            for file in settings.filter({ $0.key == "EnvironmentFile" }).map(\.value) {
                let optional = file.hasPrefix("-")
                let path = root.path + (optional ? String(file.dropFirst()) : file)
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                    if optional { continue }
                    throw LarderBinary.Failure(description: "\(path) is missing")
                }
                for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                    guard let equals = line.firstIndex(of: "=") else { continue }
                    environment[String(line[..<equals])] = String(line[line.index(after: equals)...])
                }
            }
            func command(_ line: String) -> [String] {
                line.split(separator: " ").map { word in
                    let word = replacing[String(word)] ?? String(word)
                    return word.hasPrefix("/") ? root.path + word : word
                }
            }
            // setpriv drops to the unit's user and group with no supplementary groups; sh sets the umask.
            func privileged(_ words: [String]) -> [String] {
                ["setpriv", "--reuid=\(account.uid)", "--regid=\(account.gid)", "--clear-groups", "--no-new-privs", "--",
                 "/bin/sh", "-c", "umask \(value("UMask") ?? "0022") && exec \"$0\" \"$@\""] + words
            }
            logFile = FileManager.default.temporaryDirectory.appendingPathComponent("larder-unit-\(UUID().uuidString).log")
            if let pre = value("ExecStartPre") {
                let result = try await LarderBinary.command(privileged(command(pre)), environment: environment)
                guard result.status == 0 else { throw LarderBinary.Failure(description: "ExecStartPre \(pre) failed: \(result.standardError)") }
            }
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = privileged(command(try #require(value("ExecStart"))))
            process.environment = environment
            FileManager.default.createFile(atPath: logFile.path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: logFile)
            process.standardOutput = FileHandle.nullDevice
            try process.run()
        }

        /// Waits (suspended) for `pattern` in the log; returns its first capture group.
        func await(_ pattern: String, seconds: Double = 60) async throws -> String {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                let text = log
                if let match = text.firstMatch(of: try Regex(pattern)), let captured = match.output[1].substring { return String(captured) }
                guard process.isRunning else { break }
                try? await Task.sleep(for: .milliseconds(100))
            }
            throw LarderBinary.Failure(description: "never logged \(pattern):\n\(log)")
        }

        /// SIGTERM, as `systemctl stop` sends it (KillSignal); the exit status, awaited off the cooperative pool.
        func stop() async -> Int32 {
            if process.isRunning { process.terminate() }
            await process.waitForExit()
            return process.terminationStatus
        }

        deinit {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            try? FileManager.default.removeItem(at: logFile)
        }
    }

    /// Starts the installed units against a fresh database, enrolls the agent, and stops both.
    static func startInstalledUnits(root: URL, folder: URL) async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            // The operator fills in control.env (the installed template's placeholder replaced).
            let adminToken = APIToken.generate().text
            let controlEnv = root.appendingPathComponent("etc/larder/control.env").path
            let template = try String(contentsOfFile: controlEnv, encoding: .utf8)
            #expect(template.contains("LARDER_DATABASE_URL=postgres://larder:CHANGE-ME@"))
            try ([
                "LARDER_DATABASE_URL=\(database.urlString)", "LARDER_LISTEN=127.0.0.1:0", "LARDER_BOOTSTRAP_TOKEN=\(adminToken)",
                "LARDER_HEARTBEAT_SECONDS=1",
            ].joined(separator: "\n") + "\n").write(toFile: controlEnv, atomically: true, encoding: .utf8)
            chmod(controlEnv, 0o600)

            let units = root.appendingPathComponent("etc/systemd/system")
            let control = try await UnitProcess(unit: units.appendingPathComponent("larder-control.service"), root: root)
            try await withCleanup({ _ = await control.stop() }) {
                let baseURL = try await control.await(#"larder\.address=(http://127\.0\.0\.1:\d+)"#)
                let admin = ControlPlaneClient(baseURL: baseURL, token: adminToken)
                _ = try await admin.createWorkspace("release")
                // Its process runs as the larder user (env, setpriv and sh each exec the next: one process).
                let controlAccount = try Self.account("larder", in: root)
                #expect(Self.uids(of: control.process.processIdentifier) == [controlAccount.uid], "\(control.log)")
                let cli = ["LARDER_URL": baseURL, "LARDER_TOKEN": adminToken, "LARDER_WORKSPACE": "release"]
                try #require(try await LarderBinary.run(["environments", "create", "prod"], environment: cli).status == 0)
                let made = try await LarderBinary.run(["agents", "enroll-token", "--environment", "prod", "--agent", "edge"], environment: cli)
                try #require(made.status == 0, "\(made.standardError)")
                let token = try #require(made.standardOutput.split(separator: "\n").first { $0.hasPrefix("lre_") })

                // Enrolled as the larder-agent user, as the unit's comment says, into the unit's data directory.
                let agentAccount = try Self.account("larder-agent", in: root)
                let tokenFile = folder.appendingPathComponent("enrollment-token").path
                try (token + "\n").write(toFile: tokenFile, atomically: true, encoding: .utf8)
                let settingsFile = folder.appendingPathComponent("agent-settings.yaml").path
                try "serving:\n  listen: 127.0.0.1:0\n".write(toFile: settingsFile, atomically: true, encoding: .utf8)
                chmod(tokenFile, 0o644)
                chmod(settingsFile, 0o644)
                let data = root.appendingPathComponent("var/lib/larder-agent").path
                let enrolled = try await LarderBinary.command([
                    "setpriv", "--reuid=\(agentAccount.uid)", "--regid=\(agentAccount.gid)", "--clear-groups", "--",
                    root.appendingPathComponent("usr/local/bin/larder-agent").path, "enroll", "--url", baseURL, "--token-file", tokenFile,
                    "--data-dir", data, "--settings", settingsFile,
                ])
                #expect(enrolled.status == 0, "\(enrolled.standardError)")
                for file in ["agent.token", "agent.yaml"] {
                    #expect(Self.owner(data + "/" + file) == agentAccount.uid && Self.mode(data + "/" + file) == 0o600, "\(file)")
                }

                let agent = try await UnitProcess(unit: units.appendingPathComponent("larder-agent.service"), root: root)
                try await withCleanup({ _ = await agent.stop() }) {
                    let deadline = Date().addingTimeInterval(30)
                    var online = false
                    while !online, Date() < deadline {
                        online = try await admin.agents(workspace: "release").contains { $0.name == "edge" && $0.status == "online" }
                        if !online { try await Task.sleep(for: .milliseconds(200)) }
                    }
                    #expect(online, "\(agent.log)")
                    #expect(Self.uids(of: agent.process.processIdentifier) == [agentAccount.uid])
                    let served = data + "/serving-address"
                    let addressDeadline = Date().addingTimeInterval(20)
                    while !FileManager.default.fileExists(atPath: served), Date() < addressDeadline { try await Task.sleep(for: .milliseconds(100)) }
                    let address = try String(contentsOfFile: served, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                    let health = try await HTTPClient.shared.execute(HTTPClientRequest(url: address + "/healthz"), timeout: .seconds(10))
                    #expect(health.status == .ok)
                    // What the agent wrote is its own, private (UMask=0077).
                    #expect(Self.owner(served) == agentAccount.uid && Self.mode(served) & 0o077 == 0, "\(String(Self.mode(served), radix: 8))")

                    // systemctl stop: SIGTERM, a clean exit.
                    #expect(await agent.stop() == 0, "\(agent.log)")
                    #expect(await control.stop() == 0, "\(control.log)")
                }
            }
        }
    }
}

import Foundation
import Testing

/// The deployment kit names things that exist: the systemd units run real
/// binaries with subcommands and flags they accept, pass `systemd-analyze
/// verify` without a warning, and keep their hardening.
@Suite("Deployment kit")
struct DeployKitTests {
    static let systemd = LarderBinary.root.appendingPathComponent("deploy/systemd")
    static let units = ["larder-control.service", "larder-agent.service"]

    /// The `key=value` settings of a unit file, in order.
    static func settings(_ text: String) -> [(key: String, value: String)] {
        text.split(separator: "\n").compactMap { line in
            guard !line.hasPrefix("#"), !line.hasPrefix("["), let equals = line.firstIndex(of: "=") else { return nil }
            return (String(line[..<equals]), String(line[line.index(after: equals)...]))
        }
    }

    @Test("each unit's commands are real binaries, subcommands and flags", arguments: units)
    func commandsExist(unit: String) async throws {
        let text = try String(contentsOf: Self.systemd.appendingPathComponent(unit), encoding: .utf8)
        let commands = Self.settings(text).filter { $0.key == "ExecStart" || $0.key == "ExecStartPre" }.map(\.value)
        #expect(!commands.isEmpty)
        for command in commands {
            let words = command.split(separator: " ").map(String.init)
            #expect(words[0].hasPrefix("/usr/local/bin/"), "\(command)")
            let binary = LarderBinary.directory.appendingPathComponent((words[0] as NSString).lastPathComponent).path
            #expect(FileManager.default.isExecutableFile(atPath: binary), "\(unit): \(words[0]) is not a binary we build")
            let help = try await LarderBinary.command([binary, words[1], "--help"])
            #expect(help.status == 0, "\(unit): '\(words[1])' is not a subcommand of \(words[0])")
            for flag in words.dropFirst(2) where flag.hasPrefix("--") {
                #expect(help.standardOutput.contains(flag), "\(unit): \(words[0]) \(words[1]) has no \(flag)")
            }
        }
    }

    @Test("systemd-analyze verify accepts both units without a warning, given the built binaries in their place")
    func verify() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-units-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        var paths: [String] = []
        for unit in Self.units {
            let text = try String(contentsOf: Self.systemd.appendingPathComponent(unit), encoding: .utf8)
            let path = folder.appendingPathComponent(unit).path
            try text.replacingOccurrences(of: "/usr/local/bin/", with: LarderBinary.directory.path + "/").write(toFile: path, atomically: true, encoding: .utf8)
            paths.append(path)
        }
        let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let result = try await LarderBinary.command([try #require(analyze, "systemd-analyze is missing (scripts/test installs it)"), "verify"] + paths)
        #expect(result.status == 0 && result.standardError.isEmpty, "\(result.standardError)")
    }

    @Test("hardening: a dedicated user, no new privileges, a read-only system, no capabilities; the agent's state in its own 0700 directory", arguments: units)
    func hardening(unit: String) throws {
        let settings = Dictionary(Self.settings(try String(contentsOf: Self.systemd.appendingPathComponent(unit), encoding: .utf8)), uniquingKeysWith: { $1 })
        #expect(settings["User"].map { !$0.isEmpty && $0 != "root" } == true)
        for (key, value) in ["NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "CapabilityBoundingSet": "", "UMask": "0077"] {
            #expect(settings[key] == value, "\(unit): \(key)")
        }
        if unit == "larder-agent.service" {
            #expect(settings["StateDirectory"] == "larder-agent" && settings["StateDirectoryMode"] == "0700")
            #expect(settings["ExecStart"]?.hasSuffix("--data-dir /var/lib/larder-agent") == true)
        }
    }
}

import Foundation
import Shared
import Testing
import TestSupport

/// The servers size NIO's event loops to the CPUs they may use, seen from
/// outside: the threads a real process runs, under `taskset`.
@Suite("Event loops sized to the CPUs a process may use")
struct EventLoopSizingProcessTests {
    /// A server process whose stderr goes to a file.
    final class Server {
        let process = Process()
        let log: URL

        init(_ arguments: [String], environment extra: [String: String] = [:], folder: URL, name: String) throws {
            log = folder.appendingPathComponent("\(name).log")
            FileManager.default.createFile(atPath: log.path, contents: nil)
            process.executableURL = URL(fileURLWithPath: "/usr/bin/taskset")
            process.arguments = arguments
            process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LARDER_") && !$0.key.hasPrefix("NIO_") }
                .merging(extra) { $1 }
            process.standardError = try FileHandle(forWritingTo: log)
            process.standardOutput = FileHandle.nullDevice
            try process.run()
        }

        var text: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        /// Waits (up to 30 s) until the log holds `marker`.
        func wait(for marker: String) async throws {
            for _ in 0..<300 where !text.contains(marker) {
                if !process.isRunning { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(text.contains(marker), "\(text.suffix(2_000))")
        }

        /// The threads of NIO's shared event loop group (named `NIO-SGLTN-…`).
        var eventLoopThreads: Int {
            let tasks = "/proc/\(process.processIdentifier)/task"
            return ((try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? []).filter { task in
                ((try? String(contentsOfFile: "\(tasks)/\(task)/comm", encoding: .utf8)) ?? "").hasPrefix("NIO-SGLTN-")
            }.count
        }

        deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
    }

    static func agentConfig(in folder: URL) throws -> URL {
        let url = folder.appendingPathComponent("agent.yaml")
        try """
            control_plane: http://127.0.0.1:1
            public_key: \(SigningKeyPair.generate().publicKey)
            data_directory: \(folder.appendingPathComponent("data-\(UUID().uuidString)").path)
            serving:
              listen: 127.0.0.1:0
            """.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    @Test("pinned to one CPU, the agent and the control plane run one event loop; LARDER_EVENT_LOOPS and --event-loops override it; a bad count is refused")
    func pinned() async throws {
        let folder = try LarderBinary.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let agent = LarderBinary.directory.appendingPathComponent("larder-agent").path
        let control = LarderBinary.directory.appendingPathComponent("larder-control").path
        let cpus = ProcessInfo.processInfo.processorCount, allowed = CPUAllowance.current().cpus
        // The agent: one CPU allowed, one loop (and the log says why); then overridden.
        for (pin, environment, flag, expected, source) in [
            ("0", [:], nil, 1, "cpu allowance"),
            ("0-\(cpus - 1)", [:], nil, allowed, "cpu allowance"),
            ("0", ["LARDER_EVENT_LOOPS": "3"], nil, 3, "LARDER_EVENT_LOOPS"),
            ("0", ["LARDER_EVENT_LOOPS": "3"], "2", 2, "configuration"),
        ] as [(String, [String: String], String?, Int, String)] {
            // Run itself on fewer CPUs than the machine has (taskset, a cpuset), this process cannot tell
            // what a child given all of them may use: that case needs an unrestricted test run.
            if pin != "0", allowed < cpus { continue }
            let server = try Server(
                ["-c", pin, agent, "run", "--config", try Self.agentConfig(in: folder).path] + (flag.map { ["--event-loops", $0] } ?? []),
                environment: environment.merging(["LARDER_AGENT_TOKEN": "lrd_unused"]) { $1 }, folder: folder, name: "agent-\(pin)-\(expected)")
            try await server.wait(for: "feature server listening")
            #expect(server.text.contains("larder.event_loops=\(expected)") && server.text.contains("larder.event_loops_source=\(source)"), "\(server.text.prefix(3_000))")
            #expect(server.eventLoopThreads == expected, "taskset -c \(pin) \(environment) \(flag ?? "")")
        }
        // The control plane, pinned to one CPU: one loop, before it even reaches its database.
        let server = try Server(
            ["-c", "0", control, "serve", "--listen", "127.0.0.1:0", "--database-url", "postgres://larder@127.0.0.1:1/none"], folder: folder, name: "control")
        try await server.wait(for: "event loops sized")
        #expect(server.text.contains("larder.event_loops=1") && server.text.contains("larder.event_loops_source=cpu allowance"), "\(server.text.prefix(2_000))")
        // A count that cannot be used is refused, naming where it came from.
        for (environment, flag, named) in [(["LARDER_EVENT_LOOPS": "lots"], nil, "LARDER_EVENT_LOOPS is lots"), ([:], "0", "--event-loops is 0")] as [([String: String], String?, String)] {
            let refused = try Server(
                ["-c", "0", agent, "run", "--config", try Self.agentConfig(in: folder).path] + (flag.map { ["--event-loops", $0] } ?? []),
                environment: environment.merging(["LARDER_AGENT_TOKEN": "lrd_unused"]) { $1 }, folder: folder, name: "refused-\(named.prefix(3))")
            await refused.process.waitForExit()
            #expect(refused.process.terminationStatus != 0 && refused.text.contains(named), "\(refused.text)")
        }
    }
}

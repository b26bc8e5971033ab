import Foundation
import Synchronization
import Testing
import TestSupport

/// Runs the built `larder` binary as a user would.
enum LarderBinary {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The folder holding the built executables.
    static var directory: URL {
        if let override = ProcessInfo.processInfo.environment["LARDER_BIN_DIR"] { return URL(fileURLWithPath: override) }
        return root.appendingPathComponent(".build/debug")
    }

    struct Result {
        var status: Int32
        var standardOutput: String
        var standardError: String
    }

    /// Runs `larder` with `arguments` in `directory` and waits for it.
    static func run(
        _ arguments: [String], in workingDirectory: URL? = nil, environment: [String: String] = [:], input: String? = nil,
        binary: String = "larder"
    ) throws -> Result {
        let process = Process()
        process.executableURL = directory.appendingPathComponent(binary)
        process.arguments = arguments
        if let workingDirectory { process.currentDirectoryURL = workingDirectory }
        var merged = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LARDER_") }
        merged.merge(environment) { _, new in new }
        process.environment = merged
        let output = Pipe(), error = Pipe(), standardInput = Pipe()
        process.standardOutput = output
        process.standardError = error
        process.standardInput = standardInput
        try process.run()
        if let input { standardInput.fileHandleForWriting.write(Data(input.utf8)) }
        try standardInput.fileHandleForWriting.close()
        let outData = output.fileHandleForReading.readDataToEndOfFile()
        let errData = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus, standardOutput: String(decoding: outData, as: UTF8.self),
            standardError: String(decoding: errData, as: UTF8.self))
    }

    /// Runs any command (found on PATH), its output collected in files (no pipe to fill up); `environment` replaces the inherited one when given.
    @discardableResult
    static func command(_ arguments: [String], environment: [String: String]? = nil, in folder: URL? = nil) throws -> LarderBinary.Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        if let environment { process.environment = environment }
        if let folder { process.currentDirectoryURL = folder }
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("larder-run-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: log.path + ".out", contents: nil)
        FileManager.default.createFile(atPath: log.path + ".err", contents: nil)
        defer {
            try? FileManager.default.removeItem(atPath: log.path + ".out")
            try? FileManager.default.removeItem(atPath: log.path + ".err")
        }
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: log.path + ".out"))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log.path + ".err"))
        try process.run()
        process.waitUntilExit()
        return LarderBinary.Result(
            status: process.terminationStatus, standardOutput: try String(contentsOfFile: log.path + ".out", encoding: .utf8),
            standardError: try String(contentsOfFile: log.path + ".err", encoding: .utf8))
    }

    /// `run(...)` from a task: the command runs and is waited for on a thread of its own, so the task
    /// waits suspended instead of holding a thread of the cooperative pool.
    static func run(
        _ arguments: [String], in workingDirectory: URL? = nil, environment: [String: String] = [:], input: String? = nil,
        binary: String = "larder"
    ) async throws -> Result {
        try await onThreadOfItsOwn { try run(arguments, in: workingDirectory, environment: environment, input: input, binary: binary) }
    }

    /// `command(...)` from a task, on a thread of its own like `run`.
    @discardableResult
    static func command(_ arguments: [String], environment: [String: String]? = nil, in folder: URL? = nil) async throws -> LarderBinary.Result {
        try await onThreadOfItsOwn { try command(arguments, environment: environment, in: folder) }
    }

    /// A new folder for one test's files (configurations, logs, data directories). The test
    /// process removes them all when it exits, unless `LARDER_KEEP_TEST_FILES=1` keeps them for a
    /// look after a failure.
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("larder-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        TestFiles.removeAtExit(url)
        return url
    }
}

/// The folders tests made, removed when the test process exits.
enum TestFiles {
    private static let folders = Mutex<[String]>([])
    private static let registered: Void = {
        guard ProcessInfo.processInfo.environment["LARDER_KEEP_TEST_FILES"] != "1" else { return }
        atexit {
            for path in TestFiles.folders.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: path) }
        }
    }()

    static func removeAtExit(_ folder: URL) {
        _ = registered
        folders.withLock { $0.append(folder.path) }
    }
}

extension Process {
    /// SIGTERM, then up to 30 s for the exit (the status is returned). A process still running then fails the
    /// test, with the tail of its log, and is killed: a hung shutdown fails a run instead of stalling it.
    /// The task waits suspended, holding no thread of the cooperative pool.
    func terminateAndWait(name: String, log: () -> String) async -> Int32 {
        if isRunning { terminate() }
        let deadline = Date().addingTimeInterval(30)
        while isRunning, Date() < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        if isRunning {
            Issue.record("\(name) did not exit within 30 s of SIGTERM; its log ends:\n\(log().suffix(3_000))")
            kill(processIdentifier, SIGKILL)
        }
        await waitForExit()
        return terminationStatus
    }
}

/// Runs `body`, then `cleanup` however `body` ends: a `defer` whose cleanup awaits (stopping a process
/// without blocking a thread of the cooperative pool), which a `defer` block cannot.
func withCleanup<Result>(_ cleanup: () async -> Void, _ body: () async throws -> Result) async throws -> Result {
    let result: Result
    do {
        result = try await body()
    } catch {
        await cleanup()
        throw error
    }
    await cleanup()
    return result
}

@Suite("larder CLI")
struct LarderCLITests {
    @Test("init scaffolds a repository that validate accepts")
    func initThenValidate() async throws {
        let folder = try LarderBinary.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let created = try await LarderBinary.run(["init", folder.appendingPathComponent("features").path])
        #expect(created.status == 0, "\(created.standardError)")
        let validated = try await LarderBinary.run(["validate", "features"], in: folder)
        #expect(validated.status == 0, "\(validated.standardError)")
        #expect(validated.standardOutput.contains("repository 'driver-stats' is valid"))
        #expect(validated.standardOutput.contains("FeatureService       driver_ranking"))

        let again = try await LarderBinary.run(["init", folder.appendingPathComponent("features").path])
        #expect(again.status != 0)
        #expect(again.standardError.contains("--force"))
    }

    @Test("validate prints every error with file, line, column and field, and exits 1")
    func validateReportsErrors() async throws {
        let folder = try LarderBinary.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        _ = try await LarderBinary.run(["init", folder.path])
        let features = folder.appendingPathComponent("features.yaml")
        var text = try String(contentsOf: features, encoding: .utf8)
        text = text.replacingOccurrences(of: "    type: float64\n    description: Share of offers the driver accepted.",
                                         with: "    type: flaot64\n    description: Share of offers the driver accepted.")
        text = text.replacingOccurrences(of: "source: trips\nslide: 1h", with: "source: tripz\nslide: 1h")
        try text.write(to: features, atomically: true, encoding: .utf8)

        let result = try await LarderBinary.run(["validate", folder.path])
        #expect(result.status == 1)
        let lines = result.standardError.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("\(folder.path)/features.yaml:14:11: error[unknown-type] FeatureView driver_hourly_stats › features[1].type") })
        #expect(lines.contains { $0.hasPrefix("\(folder.path)/features.yaml:34:9: error[unknown-reference] FeatureView driver_trip_aggregates › source") })
        // The misspelt type is reported once: the expectations on acc_rate add no second error.
        #expect(lines.last == "2 errors in repository 'driver-stats'", "\(result.standardError)")
    }

    @Test("validate --json reports diagnostics for machines")
    func validateJSON() async throws {
        let broken = LarderBinary.root.appendingPathComponent("Tests/Fixtures/broken/many-errors-collected")
        let result = try await LarderBinary.run(["validate", "--json", broken.path])
        #expect(result.status == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any])
        #expect(object["valid"] as? Bool == false)
        let diagnostics = try #require(object["diagnostics"] as? [[String: Any]])
        #expect(diagnostics.count == 6)
        #expect(diagnostics.allSatisfy { ($0["code"] as? String)?.isEmpty == false && $0["location"] is [String: Any] })

        let example = LarderBinary.root.appendingPathComponent("examples/driver-stats")
        let valid = try await LarderBinary.run(["validate", "--json", example.path])
        #expect(valid.status == 0)
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(valid.standardOutput.utf8)) as? [String: Any])
        #expect((summary["objects"] as? [[String: Any]])?.count == 9)
    }

    @Test("validate on a missing folder fails with a clear message")
    func missingFolder() async throws {
        let result = try await LarderBinary.run(["validate", "/nonexistent/larder-repo"])
        #expect(result.status != 0)
        #expect(result.standardError.contains("is not a folder"))
    }
}

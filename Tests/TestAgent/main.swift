import DataPlane
import Foundation
import Logging
import ServiceLifecycle
import Shared

// An agent for protocol tests: the real `AgentRunner` (hello, heartbeats,
// long-poll claims, spec verification, leases, completion) with an executor
// that only simulates work. It appends one line per execution to the file in
// LARDER_TEST_EXECUTION_LOG ("start <job> <attempt> <pid>", then "done …"),
// so tests can count how often each job ran.

/// Sleeps for LARDER_TEST_JOB_MILLISECONDS and reports made-up counts.
struct SimulatedWorkExecutor: JobExecutor {
    let kinds: Set<JobKind> = [.materialize]
    let duration: Duration
    let log: String?

    /// Appends a line with O_APPEND, so concurrent jobs never overwrite each other's lines.
    func append(_ line: String) {
        guard let log else { return }
        let descriptor = open(log, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    }

    func execute(_ spec: JobSpec, context: JobContext) async throws -> JobMetrics {
        let pid = ProcessInfo.processInfo.processIdentifier
        append("start \(spec.jobId) \(context.attempt) \(pid)")
        try await Task.sleep(for: duration)
        append("done \(spec.jobId) \(context.attempt) \(pid)")
        return JobMetrics(rowsRead: 1, rowsWritten: 1, watermark: spec.end, features: [])
    }
}

let environment = ProcessInfo.processInfo.environment
guard let path = environment["LARDER_AGENT_CONFIG"] else {
    FileHandle.standardError.write(Data("larder-test-agent: set LARDER_AGENT_CONFIG\n".utf8))
    exit(2)
}
let configuration: AgentConfiguration
do { configuration = try AgentConfiguration(file: path) } catch {
    FileHandle.standardError.write(Data("larder-test-agent: \(error)\n".utf8))
    exit(2)
}
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = Logger.Level(rawValue: environment["LARDER_LOG_LEVEL"] ?? "info") ?? .info
    return handler
}
let logger = Logger(label: "larder-test-agent")
if let log = environment["LARDER_TEST_EXECUTION_LOG"], !FileManager.default.fileExists(atPath: log) {
    _ = FileManager.default.createFile(atPath: log, contents: nil)
}
let executor = SimulatedWorkExecutor(
    duration: .milliseconds(Int(environment["LARDER_TEST_JOB_MILLISECONDS"] ?? "10") ?? 10), log: environment["LARDER_TEST_EXECUTION_LOG"])
let runner = AgentRunner(configuration: configuration, executors: [executor], logger: logger)
let group = ServiceGroup(configuration: .init(
    services: [.init(service: runner, successTerminationBehavior: .gracefullyShutdownGroup)],
    gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
do {
    try await group.run()
} catch {
    FileHandle.standardError.write(Data("larder-test-agent: \(error)\n".utf8))
    exit(1)
}

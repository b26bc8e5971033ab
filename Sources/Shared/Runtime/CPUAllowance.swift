#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore

/// How many CPUs this process may run on.
///
/// Two limits apply, and the smaller wins: the CPUs in the process' affinity
/// mask (`sched_getaffinity`: what `taskset`, `numactl` and Kubernetes' static
/// CPU manager set), and what NIO's `System.coreCount` reads — the cgroup's CPU
/// quota rounded up, else its cpuset, else the CPUs online. Two event loops on
/// one allowed core only time-slice against each other, so the servers size
/// their event loops to this, not to the machine's core count.
public struct CPUAllowance: Sendable, Equatable, CustomStringConvertible {
    /// CPUs in the calling thread's affinity mask (nil where it cannot be read).
    public var affinity: Int?
    /// NIO's count: the cgroup quota or cpuset, else the CPUs online.
    public var system: Int

    public init(affinity: Int?, system: Int) {
        self.affinity = affinity
        self.system = system
    }

    /// The CPUs allowed: the smaller limit, at least one.
    public var cpus: Int { max(1, min(affinity ?? system, system)) }

    public var description: String {
        "\(cpus) (affinity mask \(affinity.map(String.init) ?? "unknown"), cgroup or online \(system))"
    }

    /// The allowance of the calling thread (a process' threads inherit its mask).
    public static func current() -> CPUAllowance {
        CPUAllowance(affinity: affinityCount(), system: System.coreCount)
    }

    /// CPUs in the calling thread's affinity mask.
    static func affinityCount() -> Int? {
        #if os(Linux)
        // glibc declares it only under _GNU_SOURCE, which Swift's Glibc module is built without: looked up by name.
        typealias GetAffinity = @convention(c) (pid_t, Int, UnsafeMutableRawPointer) -> Int32
        guard let symbol = dlsym(nil, "sched_getaffinity") else { return nil }
        var set = cpu_set_t()
        let read = withUnsafeMutableBytes(of: &set) { bytes in
            unsafeBitCast(symbol, to: GetAffinity.self)(0, bytes.count, bytes.baseAddress!)
        }
        guard read == 0 else { return nil }
        let count = withUnsafeBytes(of: &set) { bytes in bytes.reduce(0) { $0 + $1.nonzeroBitCount } }
        return count > 0 ? count : nil
        #else
        return nil
        #endif
    }
}

/// The threads of NIO's shared event loop group and blocking pool, which the
/// HTTP servers, PostgreSQL, Redis and HTTP clients all use.
public enum EventLoopSizing {
    /// The environment variable that overrides the count.
    public static let environmentVariable = "LARDER_EVENT_LOOPS"

    /// Sizes NIO's shared group and blocking pool to `configured` threads, or
    /// to `LARDER_EVENT_LOOPS`, or to the CPU allowance — before anything
    /// uses them (call first thing in a server's `run`). Returns the count.
    @discardableResult
    public static func apply(configured: Int? = nil, environment: [String: String], logger: Logger) throws -> Int {
        if let configured, !(1...1_024).contains(configured) {
            throw EventLoopSizingError(detail: "--event-loops is \(configured); give a whole number of event loops from 1 to 1024")
        }
        let allowance = CPUAllowance.current()
        let override = try configured ?? environment[environmentVariable].map { text -> Int in
            guard let count = Int(text), (1...1_024).contains(count) else {
                throw EventLoopSizingError(detail: "\(environmentVariable) is \(text); give a whole number of event loops from 1 to 1024")
            }
            return count
        }
        let loops = override ?? allowance.cpus
        NIOSingletons.groupLoopCountSuggestion = loops
        NIOSingletons.blockingPoolThreadCountSuggestion = loops
        logger.info("event loops sized", metadata: [
            "larder.event_loops": "\(loops)", "larder.cpu_allowance": "\(allowance)",
            "larder.event_loops_source": .string(override == nil ? "cpu allowance" : configured != nil ? "configuration" : environmentVariable),
        ])
        return loops
    }
}

/// An event-loop count that cannot be used.
public struct EventLoopSizingError: Error, Sendable, CustomStringConvertible {
    public var detail: String
    public var description: String { detail }
}

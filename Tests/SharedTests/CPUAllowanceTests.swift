#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
@testable import Shared
import Testing

@Suite("CPU allowance")
struct CPUAllowanceTests {
    /// Runs `body` on a thread of its own whose affinity mask is `cpus` (restored by the thread ending).
    static func onThread<Result: Sendable>(pinnedTo cpus: [Int], _ body: @escaping @Sendable () -> Result) async -> (pinned: Bool, result: Result) {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                var set = cpu_set_t()
                withUnsafeMutableBytes(of: &set) { bytes in
                    for cpu in cpus { bytes[cpu / 8] |= UInt8(1 << (cpu % 8)) }
                }
                typealias SetAffinity = @convention(c) (pid_t, Int, UnsafeRawPointer) -> Int32
                let pinned = dlsym(nil, "sched_setaffinity").map { symbol in
                    withUnsafeBytes(of: &set) { unsafeBitCast(symbol, to: SetAffinity.self)(0, $0.count, $0.baseAddress!) == 0 }
                } ?? false
                continuation.resume(returning: (pinned, body()))
            }
        }
    }

    @Test("a thread pinned to some of the CPUs counts exactly those; the allowance is the smaller limit")
    func affinity() async throws {
        let all = try #require(CPUAllowance.affinityCount())
        #expect(all >= 1 && all <= ProcessInfo.processInfo.processorCount)
        // Every prefix of the allowed CPUs (the first `count` of them).
        var allowed: [Int] = []
        // The process' CPUs, from the kernel's own list (`Cpus_allowed_list: 0-1,4`).
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let list = try #require(status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }?.split(separator: ":").last)
        for range in list.trimmingCharacters(in: .whitespaces).split(separator: ",") {
            let ends = range.split(separator: "-").compactMap { Int($0) }
            allowed += ends.count == 2 ? Array(ends[0]...ends[1]) : ends
        }
        #expect(allowed.count == all)
        for count in 1...allowed.count {
            let (pinned, allowance) = await Self.onThread(pinnedTo: Array(allowed.prefix(count))) { CPUAllowance.current() }
            #expect(pinned)
            #expect(allowance.affinity == count)
            #expect(allowance.cpus == min(count, allowance.system))
        }
        #expect(CPUAllowance(affinity: 8, system: 2).cpus == 2)
        #expect(CPUAllowance(affinity: 1, system: 4).cpus == 1)
        #expect(CPUAllowance(affinity: nil, system: 3).cpus == 3)
    }

    @Test("an event-loop count that cannot be used is refused before anything is sized, naming where it came from")
    func refused() throws {
        let logger = Logger(label: "test")
        for text in ["0", "-2", "many", "1025", ""] {
            #expect(throws: EventLoopSizingError.self) { try EventLoopSizing.apply(environment: ["LARDER_EVENT_LOOPS": text], logger: logger) }
        }
        #expect(throws: EventLoopSizingError.self) { try EventLoopSizing.apply(configured: 0, environment: [:], logger: logger) }
        do {
            try EventLoopSizing.apply(environment: ["LARDER_EVENT_LOOPS": "lots"], logger: logger)
        } catch {
            #expect("\(error)".contains("LARDER_EVENT_LOOPS is lots"))
        }
    }
}

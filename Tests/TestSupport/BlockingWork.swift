import Foundation

/// Runs `work`, which blocks (a child process's pipes and exit, say), on a thread of its own while the
/// calling task waits suspended. Swift concurrency's cooperative pool has one thread per core (two on a
/// small CI machine): a task that blocks one of them holds up every other task in the test process.
public func onThreadOfItsOwn<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
    }
}

extension Process {
    /// Waits for the process to exit, checking every 50 ms without holding a thread of the cooperative pool
    /// (as `waitUntilExit()` would).
    public func waitForExit() async {
        while isRunning { try? await Task.sleep(for: .milliseconds(50)) }
        waitUntilExit()
    }
}

/// Runs `operation`; if it has not finished after `patience`, says on standard error what is still
/// being waited for (once), so a test run stopped by its time limit shows where it hung.
public func reportingHang<T: Sendable>(
    _ what: @autoclosure () -> String, after patience: Duration = .seconds(120), _ operation: () async throws -> T
) async throws -> T {
    let description = what()
    let watchdog = Task {
        try await Task.sleep(for: patience)
        FileHandle.standardError.write(Data("larder-tests: still waiting after \(patience): \(description)\n".utf8))
    }
    defer { watchdog.cancel() }
    return try await operation()
}

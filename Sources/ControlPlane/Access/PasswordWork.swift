import Foundation
import NIOPosix
import Synchronization

/// Runs password hashing (scrypt: tens of milliseconds of CPU and 16 MiB each)
/// off Swift's cooperative pool, on NIO's blocking thread pool, at most
/// `concurrency` at once. Up to `maximumWaiting` more wait their turn; past
/// that a check is refused at once (`Busy`), so a burst of logins neither
/// stalls the other requests of the control plane nor piles up without end.
public final class PasswordWork: Sendable {
    /// Too many password checks are running and waiting: try again shortly.
    public struct Busy: Error, Sendable {}

    let concurrency: Int
    let maximumWaiting: Int

    private struct State {
        var free: Int
        var waiting: [CheckedContinuation<Bool, Never>] = []
    }

    private let state: Mutex<State>

    /// At most `concurrency` checks at once, `maximumWaiting` more queued.
    public init(concurrency: Int = 2, maximumWaiting: Int = 64) {
        self.concurrency = max(1, concurrency)
        self.maximumWaiting = max(0, maximumWaiting)
        state = Mutex(State(free: max(1, concurrency)))
    }

    /// Runs `work` on the blocking pool when a slot is free.
    public func run<Result: Sendable>(_ work: @escaping @Sendable () throws -> Result) async throws -> Result {
        let admitted = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            state.withLock { state in
                if state.free > 0 {
                    state.free -= 1
                    continuation.resume(returning: true)
                } else if state.waiting.count >= maximumWaiting {
                    continuation.resume(returning: false)
                } else {
                    state.waiting.append(continuation)
                }
            }
        }
        guard admitted else { throw Busy() }
        defer { release() }
        return try await NIOThreadPool.singleton.runIfActive { try work() }
    }

    /// Hands the slot to the longest waiter, or frees it.
    private func release() {
        state.withLock { state in
            if state.waiting.isEmpty {
                state.free += 1
            } else {
                state.waiting.removeFirst().resume(returning: true)
            }
        }
    }
}

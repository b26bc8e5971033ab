import Foundation
import Synchronization

/// Slows down guessing of tokens and passwords: after `burst` failed
/// authentications from one client address within `window`, further requests
/// from it get 429 until the oldest failure leaves the window.
///
/// Kept in memory per replica (a guesser spread over replicas is slowed per
/// replica); addresses whose failures have all left the window are dropped
/// once more than `maximumAddresses` are tracked.
public final class FailedAuthenticationLimiter: Sendable {
    let burst: Int
    let window: TimeInterval
    let maximumAddresses: Int
    let now: @Sendable () -> Date
    private let failures = Mutex<[String: [Date]]>([:])

    /// Creates a limiter; `now` is injected so tests control time.
    public init(burst: Int = 10, window: TimeInterval = 60, maximumAddresses: Int = 10_000, now: @escaping @Sendable () -> Date = { Date() }) {
        self.burst = burst
        self.window = window
        self.maximumAddresses = maximumAddresses
        self.now = now
    }

    /// Seconds until `address` may try again, or nil when it may now.
    public func retryAfter(_ address: String?) -> Int? {
        let current = now()
        return failures.withLock { failures -> Int? in
            guard let recent = failures[address ?? ""]?.filter({ current.timeIntervalSince($0) < window }), recent.count >= burst else {
                return nil
            }
            return max(1, Int((window - current.timeIntervalSince(recent[recent.count - burst])).rounded(.up)))
        }
    }

    /// Records one failed authentication from `address`.
    public func recordFailure(_ address: String?) {
        let current = now()
        failures.withLock { failures in
            let key = address ?? ""
            var recent = (failures[key] ?? []).filter { current.timeIntervalSince($0) < window }
            recent.append(current)
            failures[key] = Array(recent.suffix(burst))
            if failures.count > maximumAddresses {
                failures = failures.filter { entry in entry.value.contains { current.timeIntervalSince($0) < window } }
            }
        }
    }
}

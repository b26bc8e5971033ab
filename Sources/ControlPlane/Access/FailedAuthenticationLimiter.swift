import Foundation
import Synchronization

/// Slows down guessing of tokens and passwords: after `burst` failed
/// authentications from one client address within `window`, further requests
/// from it get 429 until the oldest failure leaves the window.
///
/// Kept in memory per replica (a guesser spread over replicas is slowed per
/// replica); at most `maximumAddresses` addresses are tracked, the stalest
/// dropped first. IPv6 clients are counted per /64 network.
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
        let key = Self.key(address)
        return failures.withLock { failures -> Int? in
            guard let recent = failures[key]?.filter({ current.timeIntervalSince($0) < window }), recent.count >= burst else {
                return nil
            }
            return max(1, Int((window - current.timeIntervalSince(recent[recent.count - burst])).rounded(.up)))
        }
    }

    /// Records one failed authentication from `address`.
    public func recordFailure(_ address: String?) {
        let current = now()
        let key = Self.key(address)
        failures.withLock { failures in
            var recent = (failures[key] ?? []).filter { current.timeIntervalSince($0) < window }
            recent.append(current)
            failures[key] = Array(recent.suffix(burst))
            guard failures.count > maximumAddresses else { return }
            // Over the bound: forget stale addresses, then those whose latest failure is oldest.
            failures = failures.filter { entry in entry.value.contains { current.timeIntervalSince($0) < window } }
            if failures.count > maximumAddresses {
                let newest = failures.mapValues { $0.max() ?? .distantPast }.sorted { $0.value > $1.value }
                failures = failures.filter { entry in newest.prefix(maximumAddresses).contains { $0.key == entry.key } }
            }
        }
    }

    /// The bucket of an address: IPv4 addresses alone, IPv6 addresses by
    /// their /64 network (one host usually holds a whole /64).
    static func key(_ address: String?) -> String {
        guard let address, address.contains(":") else { return address ?? "" }
        var groups = address.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        if let gap = groups.firstIndex(of: ""), groups.count < 8 {
            groups.replaceSubrange(gap...gap, with: Array(repeating: "0", count: 8 - groups.count + 1))
        }
        return groups.prefix(4).map { $0.isEmpty ? "0" : $0 }.joined(separator: ":") + "::/64"
    }
}

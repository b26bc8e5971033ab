import Foundation
import Shared
import Synchronization

/// Slows down the guessing of tokens and passwords without ever refusing a
/// valid credential because of someone else's failures.
///
/// Failures are counted per subject — the public id of a presented token, a
/// claimed user name, the client address of an unauthenticated attempt — in
/// a token bucket of `burst` attempts refilled over `window`: a subject that
/// used them up waits until one refills. A request whose token authenticates
/// is never throttled; an address is charged only for attempts without valid
/// credentials. Login reserves its attempt before the password is checked
/// (`reserve`), so parallel guesses for one user are cut at `burst` checks.
///
/// Kept in memory per replica (a guesser spread over replicas is slowed per
/// replica); at most `capacity` subjects are tracked, the longest-tracked
/// forgotten first, in O(1) per update.
public final class AuthenticationThrottle: Sendable {
    /// What failures are counted against.
    public enum Subject: Hashable, Sendable {
        /// A presented token's public id.
        case token(String)
        /// A user name given to `POST /v1/login`.
        case user(String)
        /// A client address (IPv6 by its /64) making attempts without valid credentials.
        case address(String)

        /// The subject of a client address: IPv4 alone, IPv6 by its /64 network
        /// (one host usually holds a whole /64), IPv4-mapped IPv6 as IPv4.
        public static func client(_ address: String?) -> Subject {
            guard let address, let parsed = IPAddress(address) else { return .address(address ?? "") }
            return .address(parsed.isIPv4 ? parsed.description : parsed.prefix(64).description + "/64")
        }
    }

    let burst: Double
    let window: TimeInterval
    let capacity: Int
    let now: @Sendable () -> Date

    struct Bucket {
        var available: Double
        var updated: Date
    }

    struct State {
        var buckets: [Subject: Bucket] = [:]
        /// Subjects in the order they were first tracked; `head` is the oldest still in the queue.
        var order: [Subject] = []
        var head = 0
    }

    private let state = Mutex(State())

    /// Creates a throttle; `now` is injected so tests control time.
    public init(burst: Int = 10, window: TimeInterval = 60, capacity: Int = 100_000, now: @escaping @Sendable () -> Date = { Date() }) {
        self.burst = Double(max(1, burst))
        self.window = window
        self.capacity = max(1, capacity)
        self.now = now
    }

    /// Seconds until `subject` may try again, or nil when it may now.
    public func retryAfter(_ subject: Subject) -> Int? {
        let current = now()
        return state.withLock { state in
            guard let bucket = state.buckets[subject] else { return nil }
            return wait(for: refilled(bucket, at: current))
        }
    }

    /// Takes one attempt from `subject` before the work: nil when it was
    /// taken, or the seconds to wait when none is left (nothing is taken then).
    public func reserve(_ subject: Subject) -> Int? {
        let current = now()
        return state.withLock { state in
            var bucket = state.buckets[subject].map { refilled($0, at: current) } ?? Bucket(available: burst, updated: current)
            if let seconds = wait(for: bucket) { return seconds }
            bucket.available -= 1
            store(bucket, for: subject, in: &state)
            return nil
        }
    }

    /// Records a failed attempt by `subject` (taken after the work).
    public func recordFailure(_ subject: Subject) {
        let current = now()
        state.withLock { state in
            var bucket = state.buckets[subject].map { refilled($0, at: current) } ?? Bucket(available: burst, updated: current)
            bucket.available = max(0, bucket.available - 1)
            store(bucket, for: subject, in: &state)
        }
    }

    /// Gives back an attempt reserved by a request that turned out valid.
    public func refund(_ subject: Subject) {
        let current = now()
        state.withLock { state in
            guard var bucket = state.buckets[subject] else { return }
            bucket = refilled(bucket, at: current)
            bucket.available = min(burst, bucket.available + 1)
            state.buckets[subject] = bucket
        }
    }

    /// Forgets `subject`'s failures (a user who logged in).
    public func reset(_ subject: Subject) {
        state.withLock { state in
            if state.buckets[subject] != nil { state.buckets[subject] = Bucket(available: burst, updated: now()) }
        }
    }

    /// How many subjects are tracked.
    public var trackedCount: Int { state.withLock { $0.buckets.count } }

    private func refilled(_ bucket: Bucket, at current: Date) -> Bucket {
        let elapsed = max(0, current.timeIntervalSince(bucket.updated))
        return Bucket(available: min(burst, bucket.available + elapsed * burst / window), updated: current)
    }

    private func wait(for bucket: Bucket) -> Int? {
        guard bucket.available < 1 else { return nil }
        return max(1, Int(((1 - bucket.available) * window / burst).rounded(.up)))
    }

    /// Keeps `bucket`, tracking a new subject at the queue's end and, over
    /// capacity, forgetting the subject tracked longest.
    private func store(_ bucket: Bucket, for subject: Subject, in state: inout State) {
        if state.buckets.updateValue(bucket, forKey: subject) == nil {
            state.order.append(subject)
            while state.buckets.count > capacity, state.head < state.order.count {
                state.buckets[state.order[state.head]] = nil
                state.head += 1
            }
            // Compact the queue once its consumed half is large: amortized O(1).
            if state.head > 1_024, state.head * 2 > state.order.count {
                state.order.removeFirst(state.head)
                state.head = 0
            }
        }
    }
}

import Foundation
import Shared

/// How jobs are leased, retried and scheduled. Each setting has an
/// environment variable (see `ControlPlaneConfiguration`).
public struct JobSettings: Sendable, Hashable {
    /// How long a lease lasts unless the agent extends it (`LARDER_LEASE_SECONDS`).
    public var leaseDuration: Duration
    /// How often agents send heartbeats (`LARDER_HEARTBEAT_SECONDS`).
    public var heartbeatInterval: Duration
    /// The longest a claim waits for work (`LARDER_MAX_CLAIM_WAIT_SECONDS`).
    public var maxClaimWait: Duration
    /// The first retry's delay; each later one doubles it (`LARDER_RETRY_BASE_SECONDS`).
    public var retryBaseDelay: Duration
    /// The longest retry delay.
    public var retryMaxDelay: Duration
    /// Attempts before a job fails for good (`LARDER_MAX_ATTEMPTS`).
    public var maxAttempts: Int
    /// How often the scheduler looks for due work and expired leases (`LARDER_SCHEDULER_INTERVAL_SECONDS`).
    public var schedulerInterval: Duration
    /// The length of each chunk of a backfill (`LARDER_BACKFILL_CHUNK`).
    public var backfillChunk: TimeSpan
    /// Whether this replica runs the scheduler at all (`LARDER_SCHEDULER=off` turns it off).
    public var schedulerEnabled: Bool
    /// How often a waiting claim looks again without being woken (for jobs whose backoff ended).
    public var claimRecheckInterval: Duration

    /// Creates settings; the defaults suit production.
    public init(
        leaseDuration: Duration = .seconds(30), heartbeatInterval: Duration = .seconds(10), maxClaimWait: Duration = .seconds(30),
        retryBaseDelay: Duration = .seconds(5), retryMaxDelay: Duration = .seconds(600), maxAttempts: Int = 5,
        schedulerInterval: Duration = .seconds(10), backfillChunk: TimeSpan = TimeSpan(seconds: 86_400), schedulerEnabled: Bool = true,
        claimRecheckInterval: Duration = .seconds(1)
    ) {
        self.claimRecheckInterval = claimRecheckInterval
        self.leaseDuration = leaseDuration
        self.heartbeatInterval = heartbeatInterval
        self.maxClaimWait = maxClaimWait
        self.retryBaseDelay = retryBaseDelay
        self.retryMaxDelay = retryMaxDelay
        self.maxAttempts = maxAttempts
        self.schedulerInterval = schedulerInterval
        self.backfillChunk = backfillChunk
        self.schedulerEnabled = schedulerEnabled
    }
}

extension Duration {
    /// The duration in seconds, with fractions.
    public var seconds: Double {
        let (whole, attoseconds) = components
        return Double(whole) + Double(attoseconds) / 1e18
    }
}

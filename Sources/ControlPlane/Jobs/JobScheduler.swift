import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import Shared

/// Decides what must be computed and when. On each tick, the replica holding
/// the scheduler lease:
/// - returns jobs whose lease expired to the queue (`expireLeases`), once it
///   has led for a whole lease (agents that could not reach a restarted
///   control plane get time to extend their leases first);
/// - queues, for every current feature-view version with a batch schedule,
///   each interval due since the version's progress mark. A version seen for
///   the first time is backfilled from its feature start time;
/// - evaluates the alert conditions (`AlertMonitor`): stale views, quiet
///   agents, jobs that failed for good.
///
/// Only the lease holder schedules; every enqueue transaction checks the lease
/// again, so a replica that lost it cannot write.
public struct JobScheduler: Service {
    let client: PostgresClient
    let store: PostgresJobStore
    let settings: JobSettings
    let logger: Logger
    /// This replica's name in the lease.
    let replica: String
    /// Webhooks alert events are queued for.
    let webhooks: [String]
    /// How long audit records are kept (whole months are dropped past it).
    let auditRetention: TimeInterval
    /// How long ended jobs, plans and resolved alerts are kept (see `HistoryRetention`).
    let historyRetention: TimeInterval
    let now: @Sendable () -> Date

    static let leaseName = "scheduler"

    /// Creates a scheduler.
    public init(
        client: PostgresClient, store: PostgresJobStore, settings: JobSettings, logger: Logger,
        replica: String = UUID().uuidString.lowercased(), webhooks: [String] = [], auditRetention: TimeInterval = 400 * 86_400,
        historyRetention: TimeInterval = 90 * 86_400, now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.webhooks = webhooks
        self.auditRetention = auditRetention
        self.historyRetention = historyRetention
        self.client = client
        self.store = store
        self.settings = settings
        self.logger = logger
        self.replica = replica
        self.now = now
    }

    public func run() async throws {
        var leadingSince: ContinuousClock.Instant?
        var auditMaintained: ContinuousClock.Instant?
        var historyPruned: ContinuousClock.Instant?
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            do {
                // Shutdown cancels a tick that waits on an unreachable database.
                let holding = try await cancelWhenGracefulShutdown { try await holdLease() }
                if holding {
                    if leadingSince == nil {
                        leadingSince = .now
                        logger.notice("this replica now runs the scheduler", metadata: ["larder.replica": .string(replica)])
                    }
                    let since = leadingSince
                    try await cancelWhenGracefulShutdown {
                        if let since, ContinuousClock.now - since >= settings.leaseDuration { try await store.expireLeases() }
                        try await tick()
                        // Alerts: stale views, quiet agents, failed jobs open one; their recovery resolves it.
                        do { try await AlertMonitor(client: client, logger: logger, heartbeat: settings.heartbeatInterval, webhooks: webhooks)
                            .evaluate(now: now()) } catch {
                            logger.warning("cannot evaluate the alert conditions", metadata: ["larder.error": "\(String(describing: error))"])
                        }
                    }
                    // The audit log's months: next month's made ahead, those past the retention dropped (hourly).
                    if auditMaintained.map({ ContinuousClock.now - $0 >= .seconds(3_600) }) ?? true {
                        let (retention, now) = (auditRetention, now())
                        do {
                            try await cancelWhenGracefulShutdown {
                                try await AuditPartitions.maintain(now: now, retention: retention, client: client, logger: logger)
                            }
                            auditMaintained = .now
                        } catch {
                            logger.warning("cannot maintain the audit log's partitions", metadata: ["larder.error": "\(String(describing: error))"])
                        }
                    }
                    // The history of jobs, plans and alerts past its retention (hourly, a bounded pass each time).
                    if historyPruned.map({ ContinuousClock.now - $0 >= .seconds(3_600) }) ?? true {
                        historyPruned = .now
                        let (retention, now) = (historyRetention, now())
                        do {
                            try await cancelWhenGracefulShutdown {
                                try await HistoryRetention.prune(now: now, retention: retention, client: client, logger: logger)
                            }
                        } catch {
                            logger.warning("cannot prune the history past its retention", metadata: ["larder.error": "\(String(describing: error))"])
                        }
                    }
                } else if leadingSince != nil {
                    leadingSince = nil
                    logger.notice("this replica lost the scheduler lease and stopped scheduling")
                }
            } catch {
                if Task.isCancelled || Task.isShuttingDownGracefully { break }
                logger.error("scheduler tick failed", metadata: ["larder.error": .string(String(describing: error))])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: settings.schedulerInterval) }
        }
        if leadingSince != nil {
            // Hand the lease over at once, but never hold up shutdown on an unreachable database: whichever
            // ends first, the release or two seconds, ends the wait. (A task group would also wait for a
            // release that ignores cancellation, such as a query on a client that has shut down.)
            let (ended, end) = AsyncStream<Void>.makeStream()
            let scheduler = self
            Task { try? await scheduler.releaseLease(); end.yield() }
            Task { try? await Task.sleep(for: .seconds(2)); end.yield() }
            for await _ in ended { break }
        }
    }

    /// How long the lease lasts: three ticks, so one slow tick does not lose it.
    var leaseSeconds: Double { max(settings.schedulerInterval.seconds * 3, 1) }

    /// Takes or renews the scheduler lease; true when this replica holds it.
    public func holdLease() async throws -> Bool {
        let rows = try await client.query(
            """
            INSERT INTO leader_leases (name, holder, term, expires_at)
            VALUES (\(Self.leaseName), \(replica), 1, now() + make_interval(secs => \(leaseSeconds)))
            ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
                term = leader_leases.term + CASE WHEN leader_leases.holder = EXCLUDED.holder THEN 0 ELSE 1 END
            WHERE leader_leases.holder = EXCLUDED.holder OR leader_leases.expires_at < now()
            RETURNING term
            """, logger: logger)
        for try await _ in rows.decode(Int64.self) { return true }
        return false
    }

    func releaseLease() async throws {
        try await client.execute("DELETE FROM leader_leases WHERE name = \(Self.leaseName) AND holder = \(replica)", logger: logger)
    }

    /// A scheduled version as the tick reads it.
    struct ScheduledVersion {
        var view: PostgresJobStore.ViewVersion
        var schedule: BatchSchedule
        var featureStartTime: Date?
        /// How long after its end an interval is queued (the view's `lateness`).
        var lateness: TimeInterval = 0
        /// How far back each run re-runs intervals that already ran (the view's `recompute`).
        var recompute: TimeInterval = 0
        /// The environment queued for: its id and name.
        var environmentID: Int64
        var environment: String
    }

    /// The trigger of the jobs that re-run intervals for a view's `recompute`.
    public static let recomputeTrigger = "recompute"

    /// Queues everything due now. Returns the number of jobs queued.
    @discardableResult
    public func tick() async throws -> Int {
        var queued = 0
        for version in try await scheduledVersions() {
            queued += try await schedule(version)
        }
        return queued
    }

    func scheduledVersions() async throws -> [ScheduledVersion] {
        let rows = try await client.query(
            """
            SELECT w.id, w.name, v.id, o.name, v.version, o.operational->'schedule'->>'every', o.operational->'schedule'->>'cron',
                   o.operational->>'feature_start_time', e.id, e.name,
                   coalesce((o.operational->>'lateness')::bigint, 0), coalesce((o.operational->>'recompute')::bigint, 0)
            FROM registry_objects o JOIN workspaces w ON w.id = o.workspace_id
            JOIN object_versions v ON v.object_id = o.id AND v.version = o.current_version
            JOIN environments e ON e.workspace_id = w.id
            WHERE o.kind = 'FeatureView' AND o.operational ? 'schedule'
            ORDER BY v.id, e.id
            """, logger: logger)
        var versions: [ScheduledVersion] = []
        for try await (workspaceID, workspace, versionID, name, number, every, cron, start, environmentID, environment, lateness, recompute)
            in rows.decode((Int64, String, Int64, String, Int, String?, String?, String?, Int64, String, Int64, Int64).self) {
            let schedule: BatchSchedule
            if let every, let seconds = Int64(every), seconds > 0 {
                schedule = .interval(TimeSpan(seconds: seconds))
            } else if let cron, let parsed = try? CronSchedule(parsing: cron) {
                schedule = .cron(parsed)
            } else {
                logger.warning("skipping a feature view whose schedule cannot be read", metadata: ["larder.view": .string(name)])
                continue
            }
            versions.append(ScheduledVersion(
                view: .init(workspaceID: workspaceID, workspace: workspace, versionID: versionID, view: name, version: number),
                schedule: schedule, featureStartTime: start.flatMap(RFC3339.parse), lateness: TimeInterval(lateness),
                recompute: TimeInterval(recompute), environmentID: environmentID, environment: environment))
        }
        return versions
    }

    /// Queues the due intervals of one version in one transaction, under the lease.
    func schedule(_ version: ScheduledVersion) async throws -> Int {
        // An interval is due once its late rows have had `lateness` to land.
        let now = self.now().addingTimeInterval(-version.lateness)
        return try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                let lease = try await connection.query(
                    """
                    SELECT 1 FROM leader_leases WHERE name = \(Self.leaseName) AND holder = \(replica) AND expires_at > now() FOR SHARE
                    """, logger: logger)
                var holding = false
                for try await _ in lease.decode(Int.self) { holding = true }
                guard holding else { return 0 }
                let progress = try await connection.query(
                    """
                    SELECT scheduled_through FROM schedule_progress
                    WHERE version_id = \(version.view.versionID) AND environment_id = \(version.environmentID) FOR UPDATE
                    """,
                    logger: logger)
                var through: Date?
                for try await date in progress.decode(Date.self) { through = date }
                var queued = 0
                if let through {
                    let due = DueIntervals.due(schedule: version.schedule, watermark: through, featureStartTime: nil, now: now)
                    guard let first = due.first, let last = due.last else { return 0 }
                    queued = try await store.enqueue(
                        version.view, intervals: due, parent: nil, environment: version.environment, trigger: "schedule", by: "scheduler",
                        on: connection
                    ).count
                    // Each run also replaces the intervals of the `recompute` before it, for rows that landed later still;
                    // not those overlapping work still pending (a backfill's last chunk, say), which would write beside it.
                    var again = DueIntervals.recomputed(
                        schedule: version.schedule, before: first.start, span: version.recompute, notBefore: version.featureStartTime)
                    if !again.isEmpty {
                        var pending: [(Date, Date)] = []
                        for try await interval in try await connection.query(
                            """
                            SELECT interval_start, interval_end FROM jobs
                            WHERE version_id = \(version.view.versionID) AND kind = 'materialize' AND state IN ('queued', 'leased', 'running')
                              AND coalesce(environment, '') = \(version.environment) AND interval_end > \(again[0].start)
                            """, logger: logger).decode((Date, Date).self) {
                            pending.append(interval)
                        }
                        again.removeAll { interval in pending.contains { $0.0 < interval.end && interval.start < $0.1 } }
                    }
                    queued += try await store.enqueue(
                        version.view, intervals: again, parent: nil, environment: version.environment, trigger: Self.recomputeTrigger,
                        by: "scheduler", on: connection
                    ).count
                    try await setProgress(version, to: last.end, on: connection)
                } else {
                    // First sight of this version: what is still queued for the versions it
                    // replaces would compute superseded features, so it is cancelled; then
                    // the new version is backfilled from the feature start time.
                    try await cancelSuperseded(by: version.view, environment: version.environment, on: connection)
                    let start = version.featureStartTime ?? DueIntervals.firstBoundary(version.schedule, before: now) ?? now
                    let due = DueIntervals.due(
                        schedule: version.schedule, watermark: start, featureStartTime: nil, now: now, limit: 1_000_000)
                    if let first = due.first, let last = due.last {
                        let chunks = Self.group(due, into: settings.backfillChunk)
                        let trigger = "new version \(version.view.version)"
                        let parent = try await store.createBackfill(
                            version.view, start: first.start, end: last.end, environment: version.environment, trigger: trigger, by: "scheduler",
                            on: connection)
                        queued = try await store.enqueue(
                            version.view, intervals: chunks, parent: parent, environment: version.environment, trigger: trigger, by: "scheduler",
                            on: connection
                        ).count
                    }
                    try await setProgress(version, to: due.last?.end ?? start, on: connection)
                }
                if queued > 0 {
                    logger.info("queued materializations", metadata: [
                        "larder.workspace": .string(version.view.workspace), "larder.view": .string(version.view.view),
                        "larder.version": "\(version.view.version)", "larder.environment": .string(version.environment), "larder.jobs": "\(queued)",
                    ])
                }
                return queued
            }
        }
    }

    /// Cancels the queued materializations of the other versions of `view`'s
    /// feature view in `environment` (and those queued for no environment).
    func cancelSuperseded(by view: PostgresJobStore.ViewVersion, environment: String, on connection: PostgresConnection) async throws {
        try await connection.execute(
            """
            WITH superseded AS (
                UPDATE jobs j SET state = 'cancelled', finished_at = now(), updated_at = now()
                FROM object_versions old, object_versions current
                WHERE current.id = \(view.versionID) AND old.object_id = current.object_id AND old.id <> current.id
                  AND j.version_id = old.id AND j.kind = 'materialize' AND j.state = 'queued'
                  AND (j.environment IS NULL OR j.environment = \(environment))
                RETURNING j.id)
            INSERT INTO job_events (job_id, event, detail)
            SELECT id, 'cancelled', \("superseded by version \(view.version)") FROM superseded
            """, logger: logger)
    }

    func setProgress(_ version: ScheduledVersion, to date: Date, on connection: PostgresConnection) async throws {
        try await connection.execute(
            """
            INSERT INTO schedule_progress (version_id, environment_id, scheduled_through)
            VALUES (\(version.view.versionID), \(version.environmentID), \(date))
            ON CONFLICT (version_id, environment_id) DO UPDATE SET scheduled_through = EXCLUDED.scheduled_through, updated_at = now()
            """, logger: logger)
    }

    /// Joins consecutive intervals into chunks of at least `chunk` (each
    /// interval stays whole, so chunk edges fall on schedule boundaries).
    static func group(_ intervals: [MaterializationInterval], into chunk: TimeSpan) -> [MaterializationInterval] {
        var chunks: [MaterializationInterval] = []
        for interval in intervals {
            if let last = chunks.last, last.end == interval.start, last.end.timeIntervalSince(last.start) < Double(chunk.seconds) {
                chunks[chunks.count - 1].end = interval.end
            } else {
                chunks.append(interval)
            }
        }
        return chunks
    }
}

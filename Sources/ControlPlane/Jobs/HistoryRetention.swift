import Foundation
import Logging
import PostgresNIO

/// Prunes the control plane's history past its retention, so the database does
/// not grow with every job and plan for ever: the scheduler's leader runs it hourly.
///
/// What goes, once older than the retention:
/// - jobs that ended (succeeded, failed, cancelled), with their attempts and
///   events, except each view version's newest successful materialization in
///   each environment (the freshness watermark is read from it), its newest
///   finished one and newest one with expectation results (alerts and quality
///   read those), and successful dataset jobs (the catalog of built datasets,
///   `larder datasets ls`); a backfill (whose state is its chunks') goes once
///   it was created before the retention and none of its chunks is left;
/// - plans (applied or not: the versions they made keep the definitions);
/// - resolved alerts, with their webhook deliveries.
///
/// Open alerts, pending jobs and the registry's versions are never touched.
public enum HistoryRetention {
    /// What one pass removed.
    public struct Pruned: Sendable, Equatable {
        public var jobs = 0
        public var plans = 0
        public var alerts = 0

        /// Nothing removed.
        public init(jobs: Int = 0, plans: Int = 0, alerts: Int = 0) {
            self.jobs = jobs
            self.plans = plans
            self.alerts = alerts
        }
    }

    /// Rows deleted per statement, so one pass never holds long locks.
    static let batch = 5_000
    /// Statements per kind and pass: a first pass over a long history is spread over several hours.
    static let batchesPerPass = 20

    /// Removes what ended more than `retention` before `now`; each kind in batches of
    /// their own transactions. The counts are logged and returned.
    @discardableResult
    public static func prune(now: Date, retention: TimeInterval, client: PostgresClient, logger: Logger) async throws -> Pruned {
        let cutoff = now.addingTimeInterval(-retention)
        var pruned = Pruned()
        try await client.withConnection { connection in
            // The rows to keep are chosen once per pass; the outer conditions are checked again
            // as each row is deleted, so a job retried meanwhile is not taken.
            pruned.jobs += try await repeatedly(on: connection, logger: logger, """
                WITH kept AS (
                    (SELECT DISTINCT ON (version_id, coalesce(environment, '')) id FROM jobs
                     WHERE kind = 'materialize' AND state = 'succeeded'
                     ORDER BY version_id, coalesce(environment, ''), interval_end DESC, id DESC)
                    UNION (SELECT DISTINCT ON (version_id) id FROM jobs
                     WHERE kind = 'materialize' AND state IN ('succeeded', 'failed') AND trigger <> 'recompute'
                     ORDER BY version_id, finished_at DESC, id DESC)
                    UNION (SELECT DISTINCT ON (version_id) id FROM jobs
                     WHERE kind = 'materialize' AND state IN ('succeeded', 'failed') AND trigger <> 'recompute' AND metrics ? 'expectations'
                     ORDER BY version_id, finished_at DESC, id DESC))
                DELETE FROM jobs WHERE id IN (
                    SELECT j.id FROM jobs j
                    WHERE j.kind <> 'backfill' AND j.state IN ('succeeded', 'failed', 'cancelled') AND j.finished_at < \(cutoff)
                      AND NOT (j.kind = 'dataset' AND j.state = 'succeeded') AND j.id NOT IN (SELECT id FROM kept)
                    LIMIT \(batch))
                  AND state IN ('succeeded', 'failed', 'cancelled') AND finished_at < \(cutoff)
                RETURNING 1
                """)
            // Backfills (their state is their chunks') made before the retention, once no chunk is left.
            pruned.jobs += try await repeatedly(on: connection, logger: logger, """
                DELETE FROM jobs WHERE id IN (
                    SELECT b.id FROM jobs b
                    WHERE b.kind = 'backfill' AND b.created_at < \(cutoff) AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = b.id)
                    LIMIT \(batch))
                  AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = jobs.id)
                RETURNING 1
                """)
            pruned.plans += try await repeatedly(on: connection, logger: logger, """
                DELETE FROM plans WHERE id IN (SELECT id FROM plans WHERE coalesce(applied_at, created_at) < \(cutoff) LIMIT \(batch))
                RETURNING 1
                """)
            pruned.alerts += try await repeatedly(on: connection, logger: logger, """
                DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE resolved_at < \(cutoff) LIMIT \(batch))
                RETURNING 1
                """)
        }
        if pruned != Pruned() {
            logger.notice("pruned history past its retention", metadata: [
                "larder.jobs": "\(pruned.jobs)", "larder.plans": "\(pruned.plans)", "larder.alerts": "\(pruned.alerts)",
                "larder.retention_days": "\(Int(retention / 86_400))",
            ])
        }
        return pruned
    }

    /// Runs a `DELETE … LIMIT … RETURNING 1` statement until it removes fewer than a batch (or
    /// `batchesPerPass` times); returns the rows removed.
    private static func repeatedly(on connection: PostgresConnection, logger: Logger, _ query: PostgresQuery) async throws -> Int {
        var total = 0
        for _ in 0..<batchesPerPass {
            try Task.checkCancellation()
            var removed = 0
            try await connection.inTransaction(logger: logger) { connection in
                let rows = try await connection.query(query, logger: logger)
                for try await _ in rows.decode(Int.self) { removed += 1 }
            }
            total += removed
            if removed < batch { return total }
        }
        return total
    }
}

import Foundation
import Logging
import PostgresNIO
import Shared

/// Raises and resolves alerts. Each kind is a condition that holds, now, for
/// some subjects of a workspace; a subject it starts to hold for opens an
/// alert (the condition's event), kept open — one per (workspace, kind,
/// subject) — until the condition no longer holds, when it is resolved (the
/// recovery). The scheduler's leader evaluates them on every tick.
///
/// - `stale`: a feature view behind its freshness SLO (`FreshnessMonitor`).
/// - `agent-offline`: an agent that connected once and has sent no
///   heartbeat for three heartbeat intervals.
/// - `job-failed`: a feature view whose newest finished materialization (of
///   its current version) failed for good; a dataset job that failed for good
///   in the last week.
public struct AlertMonitor: Sendable {
    let client: PostgresClient
    let logger: Logger
    /// Agents heartbeat this often.
    let heartbeat: Duration
    /// Webhooks each opening and resolution is queued for (`WebhookDispatcher` posts them).
    let webhooks: [String]

    /// Creates a monitor.
    public init(client: PostgresClient, logger: Logger, heartbeat: Duration, webhooks: [String] = []) {
        self.client = client
        self.logger = logger
        self.heartbeat = heartbeat
        self.webhooks = webhooks
    }

    /// Queues `event` of alert `id` for every webhook (in the caller's statement order, right after the event).
    func queueDeliveries(alert id: Int64, event: String, on connection: PostgresConnection) async throws {
        guard !webhooks.isEmpty else { return }
        try await connection.execute(
            """
            INSERT INTO alert_deliveries (alert_id, event, url) SELECT \(id), \(event), u FROM unnest(\(webhooks)::text[]) AS u
            ON CONFLICT DO NOTHING
            """, logger: logger)
    }

    /// What holds now for one kind: each subject's detail, and the words of a recovery.
    struct Condition {
        var kind: String
        var holding: [String: String]
        var recovery: (String) -> String
    }

    /// Evaluates every condition of every workspace at `now`; returns the alerts opened and resolved.
    @discardableResult
    public func evaluate(now: Date = Date()) async throws -> (opened: [AlertResource], resolved: [AlertResource]) {
        try await client.withConnection { connection in
            var workspaces: [(Int64, String)] = []
            for try await row in try await connection.query("SELECT id, name FROM workspaces ORDER BY id", logger: logger).decode((Int64, String).self) {
                workspaces.append(row)
            }
            var opened: [AlertResource] = [], resolved: [AlertResource] = []
            for (id, workspace) in workspaces {
                for condition in try await conditions(workspaceID: id, name: workspace, now: now, on: connection) {
                    let changes = try await apply(condition, workspaceID: id, name: workspace, now: now, on: connection)
                    opened += changes.opened
                    resolved += changes.resolved
                }
            }
            return (opened, resolved)
        }
    }

    func conditions(workspaceID: Int64, name: String, now: Date, on connection: PostgresConnection) async throws -> [Condition] {
        // Stale views.
        let readings = try await FreshnessMonitor(client: client, logger: logger).freshness(workspaceID: workspaceID, name: name, now: now, on: connection)
        var stale = Condition(kind: "stale", holding: [:]) { subject in
            let reading = readings.first { $0.subject == subject }
            return reading?.stalenessSeconds.map { "recovered: \(subject) is \(TimeSpan.approximate($0)) behind" }
                ?? "recovered: \(subject) no longer has a freshness SLO"
        }
        for reading in readings where reading.state == .stale {
            let slo = TimeSpan.approximate(reading.expectedSeconds ?? 0)
            let place = reading.environment.map { " in \($0)" } ?? ""
            stale.holding[reading.subject] = reading.watermark.map {
                "\(reading.view)\(place) is \(TimeSpan.approximate(reading.stalenessSeconds ?? 0)) behind (materialized to \(RFC3339.format($0))); its SLO is \(slo)"
            } ?? "\(reading.view) v\(reading.version)\(place) has not been materialized within its SLO of \(slo)"
        }

        // Agents that went quiet.
        var offline = Condition(kind: "agent-offline", holding: [:]) { "recovered: \($0) heartbeats again" }
        let quiet = heartbeat.components.seconds * 3
        for try await (agent, environment, lastSeen) in try await connection.query(
            """
            SELECT p.name, COALESCE(p.environment, ''), s.last_seen_at FROM agent_sessions s JOIN principals p ON p.id = s.principal_id
            WHERE p.workspace_id = \(workspaceID) AND s.last_seen_at < \(now.addingTimeInterval(-Double(quiet)))
            """, logger: logger).decode((String, String, Date).self) {
            offline.holding[agent] = "agent \(agent) (\(environment)) has sent no heartbeat since \(RFC3339.format(lastSeen)) (more than \(quiet) s)"
        }

        // Jobs that failed for good: a view's newest finished materialization, or a recent dataset job.
        var failed = Condition(kind: "job-failed", holding: [:]) { "recovered: \($0) succeeded since" }
        for try await (view, job, state, message, attempts) in try await connection.query(
            """
            SELECT DISTINCT ON (o.name) o.name, j.id, j.state, COALESCE(j.failure->>'message', ''), j.attempts
            FROM jobs j JOIN object_versions v ON v.id = j.version_id
            JOIN registry_objects o ON o.id = v.object_id AND o.current_version = v.version
            WHERE j.workspace_id = \(workspaceID) AND j.kind = 'materialize' AND j.state IN ('succeeded', 'failed')
              AND j.trigger <> 'recompute'   -- re-runs of older intervals finish last: the scheduled runs decide
            ORDER BY o.name, j.finished_at DESC, j.id DESC
            """, logger: logger).decode((String, Int64, String, String, Int).self) where state == "failed" {
            failed.holding["materialization of \(view)"] = "job \(job) materializing \(view) failed after \(attempts) attempt(s): \(message)"
        }
        for try await (job, message, attempts) in try await connection.query(
            """
            SELECT id, COALESCE(failure->>'message', ''), attempts FROM jobs
            WHERE workspace_id = \(workspaceID) AND kind = 'dataset' AND state = 'failed' AND finished_at > \(now.addingTimeInterval(-7 * 86_400))
            """, logger: logger).decode((Int64, String, Int).self) {
            failed.holding["dataset job \(job)"] = "dataset job \(job) failed after \(attempts) attempt(s): \(message)"
        }
        // Expectations the newest evaluated job broke.
        let qualities = try await QualityMonitor(client: client, logger: logger).quality(workspaceID: workspaceID, name: name, on: connection)
        var violated = Condition(kind: "expectation-violated", holding: [:]) { subject in
            guard let quality = qualities.first(where: { $0.view == subject }), let job = quality.job else {
                return "recovered: \(subject) no longer declares expectations"
            }
            return "recovered: job \(job) of \(subject) met every expectation"
        }
        for quality in qualities where quality.state == .failed || quality.state == .warned {
            let outcome = quality.state == .failed ? "failed and wrote nothing (policy fail)" : "wrote its rows (policy warn)"
            let broken = quality.results.filter { !$0.passed }.map(\.summary).joined(separator: "; ")
            violated.holding[quality.view] = "job \(quality.job ?? 0) of \(quality.view) v\(quality.version) broke its expectations and \(outcome): \(broken)"
        }
        return [stale, offline, failed, violated]
    }

    /// Opens an alert for each subject `condition` holds for (none open yet),
    /// and resolves the open alerts of its kind whose subject it no longer holds for.
    func apply(_ condition: Condition, workspaceID: Int64, name: String, now: Date, on connection: PostgresConnection) async throws
        -> (opened: [AlertResource], resolved: [AlertResource])
    {
        var opened: [AlertResource] = [], resolved: [AlertResource] = []
        for (subject, detail) in condition.holding.sorted(by: { $0.key < $1.key }) {
            for try await (id, openedAt) in try await connection.query(
                """
                INSERT INTO alerts (workspace_id, kind, subject, detail, opened_at) VALUES (\(workspaceID), \(condition.kind), \(subject), \(detail), \(now))
                ON CONFLICT (workspace_id, kind, subject) WHERE resolved_at IS NULL DO NOTHING
                RETURNING id, opened_at
                """, logger: logger).decode((Int64, Date).self) {
                opened.append(AlertResource(id: id, workspace: name, kind: condition.kind, subject: subject, detail: detail, openedAt: openedAt))
                try await queueDeliveries(alert: id, event: "opened", on: connection)
                logger.warning("alert opened", metadata: [
                    "larder.workspace": .string(name), "larder.alert": .string(condition.kind), "larder.subject": .string(subject),
                ])
            }
        }
        let holding = Array(condition.holding.keys)
        for try await (id, subject, detail, openedAt) in try await connection.query(
            """
            SELECT id, subject, detail, opened_at FROM alerts
            WHERE workspace_id = \(workspaceID) AND kind = \(condition.kind) AND resolved_at IS NULL AND NOT (subject = ANY(\(holding)::text[]))
            """, logger: logger).decode((Int64, String, String, Date).self) {
            let recovery = condition.recovery(subject)
            try await connection.execute(
                "UPDATE alerts SET resolved_at = \(now), resolved_detail = \(recovery) WHERE id = \(id) AND resolved_at IS NULL", logger: logger)
            try await queueDeliveries(alert: id, event: "resolved", on: connection)
            resolved.append(AlertResource(
                id: id, workspace: name, kind: condition.kind, subject: subject, detail: detail, openedAt: openedAt, resolvedAt: now,
                resolvedDetail: recovery))
            logger.notice("alert resolved", metadata: [
                "larder.workspace": .string(name), "larder.alert": .string(condition.kind), "larder.subject": .string(subject),
            ])
        }
        return (opened, resolved)
    }

    /// The alerts of `workspaces` (nil: all), newest first; only open ones unless `all`.
    public func alerts(workspaces: Set<String>?, open: Bool, limit: Int) async throws -> [AlertResource] {
        let names = workspaces.map { Array($0) }
        var alerts: [AlertResource] = []
        for try await (id, workspace, kind, subject, detail, openedAt, resolvedAt, resolvedDetail) in try await client.query(
            """
            SELECT a.id, w.name, a.kind, a.subject, a.detail, a.opened_at, a.resolved_at, a.resolved_detail
            FROM alerts a JOIN workspaces w ON w.id = a.workspace_id
            WHERE (\(names)::text[] IS NULL OR w.name = ANY(\(names)::text[])) AND (NOT \(open) OR a.resolved_at IS NULL)
            ORDER BY a.id DESC LIMIT \(limit)
            """, logger: logger).decode((Int64, String, String, String, String, Date, Date?, String?).self) {
            alerts.append(AlertResource(
                id: id, workspace: workspace, kind: kind, subject: subject, detail: detail, openedAt: openedAt, resolvedAt: resolvedAt,
                resolvedDetail: resolvedDetail))
        }
        return alerts
    }
}

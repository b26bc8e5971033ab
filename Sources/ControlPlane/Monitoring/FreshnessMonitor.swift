import Foundation
import Logging
import PostgresNIO
import Shared

/// Computes each feature view's freshness from the watermarks agents
/// reported (the end of its current version's newest successful
/// materialization), against its SLO, and keeps one `stale` alert open per
/// view while it is behind: opened when the SLO is exceeded, resolved
/// (recovered) when the view is back within it.
public struct FreshnessMonitor: Sendable {
    let client: PostgresClient
    let logger: Logger

    /// Creates a monitor.
    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// The freshness of every current feature view of `workspace`, by name.
    public func freshness(workspace: String, now: Date = Date()) async throws -> [FeatureViewFreshness] {
        try await client.withConnection { connection in
            var id: Int64?
            for try await value in try await connection.query("SELECT id FROM workspaces WHERE name = \(workspace)", logger: logger)
                .decode(Int64.self) { id = value }
            guard let id else { throw RegistryError.workspaceNotFound(workspace) }
            return try await freshness(workspaceID: id, name: workspace, now: now, on: connection)
        }
    }

    func freshness(workspaceID: Int64, name: String, now: Date, on connection: PostgresConnection) async throws -> [FeatureViewFreshness] {
        let snapshot = try await AgentRegistrySnapshots(client: client, logger: logger).snapshot(ofWorkspace: workspaceID, named: name, on: connection)
        let repository: FeatureRepository
        do { repository = try CanonicalDecoder.repository(workspace: name, definitions: snapshot.definitions) } catch {
            throw RegistryError.invalidArgument(field: "workspace", detail: "the workspace's definitions cannot be read: \(error)")
        }
        var watermarks: [String: Date] = [:], created: [String: Date] = [:]
        for try await (view, watermark, since) in try await connection.query(
            """
            SELECT o.name, (SELECT max(j.interval_end) FROM jobs j WHERE j.version_id = v.id AND j.kind = 'materialize' AND j.state = 'succeeded'),
                   v.created_at
            FROM registry_objects o JOIN object_versions v ON v.object_id = o.id AND v.version = o.current_version
            WHERE o.workspace_id = \(workspaceID) AND o.kind = 'FeatureView'
            """, logger: logger).decode((String, Date?, Date).self) {
            watermarks[view] = watermark
            created[view] = since
        }
        let versions = Dictionary(snapshot.definitions.map { ($0.name, $0.version) }, uniquingKeysWith: { first, _ in first })
        return repository.featureViews.sorted { $0.name < $1.name }.map { view in
            let expected = view.expectedFreshness
            let watermark = watermarks[view.name] ?? nil
            let staleness = watermark.map { Int64(now.timeIntervalSince($0)) }
            let state: FeatureViewFreshness.State
            switch (expected, staleness) {
            case (nil, _): state = .noSLO
            case (let slo?, let behind?): state = behind > slo ? .stale : .fresh
            case (let slo?, nil):
                // Never materialized: stale once the version is older than its SLO.
                state = created[view.name].map { Int64(now.timeIntervalSince($0)) > slo } == true ? .stale : .pending
            }
            return FeatureViewFreshness(
                view: view.name, version: versions[view.name] ?? 1, watermark: watermark, stalenessSeconds: staleness, expectedSeconds: expected,
                state: state)
        }
    }

    /// Opens a `stale` alert for each view behind its SLO and resolves those
    /// of views back within it (or gone); returns what changed.
    @discardableResult
    public func evaluate(now: Date = Date()) async throws -> (opened: [AlertResource], resolved: [AlertResource]) {
        try await client.withConnection { connection in
            var workspaces: [(Int64, String)] = []
            for try await row in try await connection.query("SELECT id, name FROM workspaces ORDER BY id", logger: logger).decode((Int64, String).self) {
                workspaces.append(row)
            }
            var opened: [AlertResource] = [], resolved: [AlertResource] = []
            for (id, workspace) in workspaces {
                let readings = try await freshness(workspaceID: id, name: workspace, now: now, on: connection)
                for reading in readings where reading.state == .stale {
                    let detail = reading.watermark.map {
                        "\(reading.view) is \(TimeSpan.approximate(reading.stalenessSeconds ?? 0)) behind (materialized to \(RFC3339.format($0))); its SLO is \(TimeSpan.approximate(reading.expectedSeconds ?? 0))"
                    } ?? "\(reading.view) v\(reading.version) has not been materialized within its SLO of \(TimeSpan.approximate(reading.expectedSeconds ?? 0))"
                    for try await row in try await connection.query(
                        """
                        INSERT INTO alerts (workspace_id, kind, subject, detail, opened_at) VALUES (\(id), 'stale', \(reading.view), \(detail), \(now))
                        ON CONFLICT (workspace_id, kind, subject) WHERE resolved_at IS NULL DO NOTHING
                        RETURNING id, opened_at
                        """, logger: logger).decode((Int64, Date).self) {
                        opened.append(AlertResource(id: row.0, workspace: workspace, kind: "stale", subject: reading.view, detail: detail, openedAt: row.1))
                        logger.warning("feature view stale", metadata: ["larder.workspace": .string(workspace), "larder.view": .string(reading.view)])
                    }
                }
                let behind = readings.filter { $0.state == .stale }.map(\.view)
                let fresh = Dictionary(readings.map { ($0.view, $0) }, uniquingKeysWith: { first, _ in first })
                for try await (alert, subject, detail, openedAt) in try await connection.query(
                    """
                    SELECT id, subject, detail, opened_at FROM alerts
                    WHERE workspace_id = \(id) AND kind = 'stale' AND resolved_at IS NULL AND NOT (subject = ANY(\(behind)::text[]))
                    """, logger: logger).decode((Int64, String, String, Date).self) {
                    let reading = fresh[subject]
                    let recovery = reading.flatMap { $0.stalenessSeconds }.map { "recovered: \(subject) is \(TimeSpan.approximate($0)) behind" }
                        ?? "recovered: \(subject) no longer has a freshness SLO"
                    try await connection.execute(
                        "UPDATE alerts SET resolved_at = \(now), resolved_detail = \(recovery) WHERE id = \(alert) AND resolved_at IS NULL",
                        logger: logger)
                    resolved.append(AlertResource(
                        id: alert, workspace: workspace, kind: "stale", subject: subject, detail: detail, openedAt: openedAt, resolvedAt: now,
                        resolvedDetail: recovery))
                    logger.notice("feature view recovered", metadata: ["larder.workspace": .string(workspace), "larder.view": .string(subject)])
                }
            }
            return (opened, resolved)
        }
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

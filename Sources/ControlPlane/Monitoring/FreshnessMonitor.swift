import Foundation
import Logging
import PostgresNIO
import Shared

/// Computes each feature view's freshness from the watermarks agents
/// reported (the end of its current version's newest successful
/// materialization), against its SLO. `AlertMonitor` keeps a `stale` alert
/// open per view while it is behind.
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
            let id = try await CurrentDefinitions.workspaceID(named: workspace, logger: logger, on: connection)
            return try await freshness(workspaceID: id, name: workspace, now: now, on: connection)
        }
    }

    func freshness(workspaceID: Int64, name: String, now: Date, on connection: PostgresConnection) async throws -> [FeatureViewFreshness] {
        let current = try await CurrentDefinitions.read(workspaceID: workspaceID, name: name, client: client, logger: logger, on: connection)
        let repository = current.repository
        var environments: [String] = []
        for try await environment in try await connection.query(
            "SELECT name FROM environments WHERE workspace_id = \(workspaceID) ORDER BY name", logger: logger
        ).decode(String.self) {
            environments.append(environment)
        }
        // Per view and environment (jobs queued for no environment, from before environments, count for each).
        struct Key: Hashable {
            var view: String
            var environment: String?
        }
        var watermarks: [Key: Date] = [:], created: [String: Date] = [:]
        for try await (view, environment, watermark, since) in try await connection.query(
            """
            SELECT o.name, e.name,
                   (SELECT max(j.interval_end) FROM jobs j WHERE j.version_id = v.id AND j.kind = 'materialize' AND j.state = 'succeeded'
                      AND (e.name IS NULL OR j.environment IS NULL OR j.environment = e.name)),
                   v.created_at
            FROM registry_objects o JOIN object_versions v ON v.object_id = o.id AND v.version = o.current_version
            LEFT JOIN environments e ON e.workspace_id = o.workspace_id
            WHERE o.workspace_id = \(workspaceID) AND o.kind = 'FeatureView'
            """, logger: logger).decode((String, String?, Date?, Date).self) {
            watermarks[Key(view: view, environment: environment)] = watermark
            created[view] = since
        }
        let versions = current.versions
        let places: [String?] = environments.isEmpty ? [nil] : environments
        return repository.featureViews.sorted { $0.name < $1.name }.flatMap { view in
            places.map { environment in
                let expected = view.expectedFreshness
                let watermark = watermarks[Key(view: view.name, environment: environment)] ?? nil
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
                    view: view.name, version: versions[view.name] ?? 1, environment: environment, watermark: watermark,
                    stalenessSeconds: staleness, expectedSeconds: expected, state: state)
            }
        }
    }
}

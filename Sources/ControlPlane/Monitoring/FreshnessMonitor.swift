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
        let versions = current.versions
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
}

import Foundation
import Logging
import PostgresNIO
import Shared

/// Reads each feature view's data-quality results from the metrics agents
/// reported: the expectations' results of the newest finished
/// materialization of its current version. The agent evaluated them; the
/// control plane only sees counts and bounds. `AlertMonitor` keeps an
/// `expectation-violated` alert open per view while its newest results break one.
public struct QualityMonitor: Sendable {
    let client: PostgresClient
    let logger: Logger

    /// Creates a monitor.
    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// The quality of every current feature view of `workspace` that declares expectations, by name.
    public func quality(workspace: String) async throws -> [FeatureViewQuality] {
        try await client.withConnection { connection in
            let id = try await CurrentDefinitions.workspaceID(named: workspace, logger: logger, on: connection)
            return try await quality(workspaceID: id, name: workspace, on: connection)
        }
    }

    func quality(workspaceID: Int64, name: String, on connection: PostgresConnection) async throws -> [FeatureViewQuality] {
        let current = try await CurrentDefinitions.read(workspaceID: workspaceID, name: name, client: client, logger: logger, on: connection)
        let repository = current.repository
        var newest: [String: (job: Int64, state: String, finishedAt: Date, metrics: JobMetrics)] = [:]
        let decoder = APICoding.makeDecoder()
        for try await (view, job, state, finishedAt, metricsText) in try await connection.query(
            """
            SELECT DISTINCT ON (o.name) o.name, j.id, j.state, j.finished_at, j.metrics::text
            FROM jobs j JOIN object_versions v ON v.id = j.version_id
            JOIN registry_objects o ON o.id = v.object_id AND o.current_version = v.version
            WHERE j.workspace_id = \(workspaceID) AND j.kind = 'materialize' AND j.state IN ('succeeded', 'failed')
              AND j.metrics ? 'expectations' AND j.trigger <> 'recompute'
            ORDER BY o.name, j.finished_at DESC, j.id DESC
            """, logger: logger).decode((String, Int64, String, Date, String).self) {
            guard let metrics = try? decoder.decode(JobMetrics.self, from: Data(metricsText.utf8)) else { continue }
            newest[view] = (job, state, finishedAt, metrics)
        }
        let versions = current.versions
        return repository.featureViews.sorted { $0.name < $1.name }.compactMap { view in
            guard let expectations = view.expectations else { return nil }
            let version = versions[view.name] ?? 1
            guard let found = newest[view.name], let report = found.metrics.expectations else {
                return FeatureViewQuality(view: view.name, version: version, policy: expectations.policy, state: .unchecked)
            }
            let state: FeatureViewQuality.State = report.violations.isEmpty ? .passed : (report.policy == .fail && found.state == "failed" ? .failed : .warned)
            return FeatureViewQuality(
                view: view.name, version: version, policy: expectations.policy, state: state, job: found.job, finishedAt: found.finishedAt,
                results: report.results)
        }
    }
}

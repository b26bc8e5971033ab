import ControlPlane
@testable import DataPlane
import Foundation
import Logging
import Shared
import Testing
import TestSupport
import Yams

/// The operator kit in `deploy/observability` (Prometheus scrape config and
/// alerting rules, the Grafana dashboard) uses only metrics Larder exports.
@Suite("Operator kit")
struct OperatorKitTests {
    static let folder = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("deploy/observability")

    /// The metric families a text names (histogram series folded into their family).
    static func referenced(in text: String) -> Set<String> {
        var names: Set<String> = []
        for token in text.split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == "_") }) where token.hasPrefix("larder_") {
            var name = String(token)
            for suffix in ["_bucket", "_count", "_sum"] where name.hasSuffix(suffix) { name.removeLast(suffix.count) }
            names.insert(name)
        }
        return names
    }

    /// The families an exposition declares (`# TYPE name kind`).
    static func exported(_ text: String) -> Set<String> {
        Set(text.split(separator: "\n").compactMap { line in
            line.hasPrefix("# TYPE ") ? line.split(separator: " ").dropFirst(2).first.map(String.init) : nil
        })
    }

    @Test("every metric the scrape config, the alerting rules and the dashboard use is exported by the control plane or an agent")
    func kitUsesExportedMetrics() async throws {
        var used: Set<String> = []
        for file in ["prometheus.yml", "larder-alerts.yml", "grafana-dashboard.json"] {
            let text = try String(contentsOf: Self.folder.appendingPathComponent(file), encoding: .utf8)
            used.formUnion(Self.referenced(in: text))
            // Each file parses (YAML; the dashboard is JSON, which YAML reads too).
            #expect(try Yams.load(yaml: text) != nil, "\(file)")
        }
        #expect(used.count >= 15, "\(used.sorted())")
        let dashboard = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.folder.appendingPathComponent("grafana-dashboard.json"))) as? [String: Any]
        #expect((dashboard?["panels"] as? [Any])?.count ?? 0 >= 10)

        // The agent's families, with a table, a request, a push.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-kit-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = try OnlineStore(directory: folder.path)
        let table = try store.table(for: OnlineTableSchema(view: "v", version: 1, keys: [Column(name: "id", type: .int64)], features: [Column(name: "f", type: .float64)], ttlSeconds: nil))
        _ = try table.upsert(OnlineRows(keys: [.int(1)], eventTimes: [1_000_000], createdTimes: [1_000_000], features: [.float64([1.5])]))
        let agent = AgentMetrics()
        var grid = FeatureGrid(entities: 1, width: 1)
        grid.statuses[0] = .present
        agent.observe(service: "s", status: 200, nanoseconds: 1_000, grid: grid, outputs: 1)
        agent.pushed(1, source: "p")
        var exported = Self.exported(String(decoding: agent.exposition(store: store), as: UTF8.self))

        // The control plane's, with jobs, a materialization, SLO views and an open alert.
        try await JobsFixture.with(agents: 1, settings: JobsFixture.patientSettings) { fixture in
            try await RepositoryFixture.example(workspace: JobsFixture.workspace).apply(to: JobsFixture.workspace, with: fixture.server.client)
            _ = try await fixture.materialize(hours: 1)
            if let claimed = try await fixture.claim(0) { _ = try await fixture.agents[0].complete(job: claimed.id, JobsFixture.success(claimed)) }
            try await TestDatabase.withClient(fixture.server.database) { database in
                _ = try await AlertMonitor(client: database, logger: Logger(label: "test"), heartbeat: .seconds(10)).evaluate(now: Date().addingTimeInterval(7 * 86_400))
            }
            exported.formUnion(Self.exported(try await ControlPlaneMetricsTests.scrape(fixture.server, token: fixture.server.adminToken).text))
        }
        #expect(used.subtracting(exported).isEmpty, "used but not exported: \(used.subtracting(exported).sorted()); exported: \(exported.sorted())")
    }
}

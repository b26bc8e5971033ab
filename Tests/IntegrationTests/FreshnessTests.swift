import ControlPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

/// Freshness SLOs from the watermarks agents report, and the stale /
/// recovered alerts, against a real control plane.
@Suite("Freshness SLOs and stale alerts")
struct FreshnessTests {
    static let workspace = "rides"

    @Test("a view behind its SLO is stale and opens one alert; materialized again, it recovers and the alert resolves; an unmaterialized view turns stale once older than its SLO")
    func staleAndRecovered() async throws {
        try await TestControlPlane.withControlPlane(jobs: JobsFixture.patientSettings) { server in
            let client = server.client
            _ = try await client.createWorkspace(Self.workspace)
            // driver_hourly_stats declares 3h; the other hourly view defaults to twice its schedule (2h); the nightly one to 48h.
            try await RepositoryFixture.example(workspace: Self.workspace)
                .replacing("name: driver_hourly_stats\n", with: "name: driver_hourly_stats\nfreshness: 3h\n", in: "features.yaml")
                .apply(to: Self.workspace, with: client)
            _ = try await client.createTestAgent(name: "agent-1", environment: "prod", workspace: Self.workspace)
            let agent = ControlPlaneClient(baseURL: server.baseURL, token: try await client.createToken(for: "agent-1").token)
            _ = try await agent.hello(AgentHello(instanceId: "i", version: "test", hostname: "test", capabilities: [.materialize]))
            let now = Date()
            let hour = 3_600.0
            func materialize(_ from: Double, _ to: Double) async throws {
                let start = Date(timeIntervalSince1970: (now.timeIntervalSince1970 / hour).rounded(.down) * hour + from * hour)
                _ = try await client.materialize(
                    MaterializeRequest(featureView: "driver_hourly_stats", start: start, end: start.addingTimeInterval((to - from) * hour), chunk: "1h"),
                    workspace: Self.workspace)
                while let claimed = try await agent.claim(ClaimRequest(instanceId: "i", kinds: [.materialize], waitSeconds: 0)) {
                    _ = try await agent.complete(job: claimed.id, JobsFixture.success(claimed))
                }
            }

            let views = try await client.freshness(workspace: Self.workspace)
            #expect(views.map(\.view) == ["customer_trip_stats", "driver_hourly_stats", "driver_trip_aggregates"])
            #expect(views.map(\.state) == [.pending, .pending, .pending])
            let expected: [Int64?] = [172_800, 10_800, 7_200]
            #expect(views.map(\.expectedSeconds) == expected)

            try await TestDatabase.withClient(server.database) { database in
                let freshness = FreshnessMonitor(client: database, logger: Logger(label: "test"))
                let monitor = AlertMonitor(client: database, logger: Logger(label: "test"), heartbeat: .seconds(3_600))
                // Materialized to 6 hours ago: 6h behind a 3h SLO.
                try await materialize(-10, -6)
                let stale = try await monitor.evaluate(now: now)
                #expect(stale.opened.filter { $0.kind == "stale" }.map(\.subject) == ["driver_hourly_stats@prod"], "\(stale)")
                #expect(stale.opened.first?.detail.contains("its SLO is 3h") == true)
                let reading = try await freshness.freshness(workspace: Self.workspace, now: now).first { $0.view == "driver_hourly_stats" }
                #expect(reading?.state == .stale && (reading?.stalenessSeconds ?? 0) >= 6 * 3_600)
                // Still stale: no second alert.
                #expect(try await monitor.evaluate(now: now.addingTimeInterval(60)).opened.isEmpty)
                #expect(try await client.alerts(workspace: Self.workspace).filter { $0.kind == "stale" }.map(\.subject) == ["driver_hourly_stats@prod"])
                // The same in the metrics.
                let samples = ControlPlaneMetricsTests.samples(try await ControlPlaneMetricsTests.scrape(server, token: server.adminToken).text)
                #expect(ControlPlaneMetricsTests.value(samples, "larder_feature_view_stale", ["view": "driver_hourly_stats", "environment": "prod"]) == 1)
                #expect((ControlPlaneMetricsTests.value(samples, "larder_feature_view_staleness_seconds", ["view": "driver_hourly_stats", "environment": "prod"]) ?? 0) >= 21_600)
                #expect(ControlPlaneMetricsTests.value(samples, "larder_feature_view_freshness_slo_seconds", ["view": "driver_hourly_stats", "environment": "prod"]) == 10_800)
                #expect(ControlPlaneMetricsTests.value(samples, "larder_alerts_open", ["workspace": Self.workspace, "kind": "stale"]) == 1)

                // Three hours on, the never-materialized hourly aggregates are behind their 2h default too.
                let later = try await monitor.evaluate(now: now.addingTimeInterval(3 * hour))
                #expect(later.opened.filter { $0.kind == "stale" }.map(\.subject) == ["driver_trip_aggregates@prod"])

                // Caught up: recovered, the alert resolved.
                try await materialize(-6, -1)
                let recovered = try await monitor.evaluate(now: now)
                #expect(recovered.resolved.map(\.subject).contains("driver_hourly_stats@prod"))
                #expect(recovered.resolved.first { $0.subject == "driver_hourly_stats@prod" }?.resolvedDetail?.hasPrefix("recovered") == true)
                let open = try await client.alerts(workspace: Self.workspace)
                #expect(!open.map(\.subject).contains("driver_hourly_stats@prod"))
                let all = try await client.alerts(workspace: Self.workspace, all: true)
                #expect(all.filter { $0.subject == "driver_hourly_stats@prod" }.count == 1)
            }
            // Another workspace's member does not see them.
            _ = try await client.createWorkspace("other")
            _ = try await client.createPrincipal(CreatePrincipalRequest(name: "olga", kind: .user))
            _ = try await client.grant(.viewer, to: "olga", workspace: "other")
            let olga = ControlPlaneClient(baseURL: server.baseURL, token: try await client.createToken(for: "olga").token)
            #expect(try await olga.alerts(workspace: nil, all: true).isEmpty)
            await #expect(throws: ProblemDetails.self) { _ = try await olga.alerts(workspace: Self.workspace) }
        }
    }
}

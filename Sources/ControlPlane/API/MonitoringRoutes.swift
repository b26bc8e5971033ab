import Foundation
import Hummingbird
import Shared

/// Freshness, data quality and alerts.
struct MonitoringRoutes {
    let monitor: FreshnessMonitor
    let alerts: AlertMonitor
    let quality: QualityMonitor

    func register(on routes: inout APIRouteBuilder) {
        let monitor = self.monitor, alerts = self.alerts, quality = self.quality
        routes.add(.get, "/v1/workspaces/{workspace}/freshness", permission: .workspace(.viewer)) { _, context in
            try APIResponse.json(try await monitor.freshness(workspace: try context.pathParameter("workspace")))
        }
        routes.add(.get, "/v1/workspaces/{workspace}/expectations", permission: .workspace(.viewer)) { _, context in
            try APIResponse.json(try await quality.quality(workspace: try context.pathParameter("workspace")))
        }
        // Every signed-in principal sees the alerts of the workspaces it may view (admins: all).
        routes.add(.get, "/v1/alerts", permission: .authenticated) { request, context in
            var visible: Set<String>? = context.caller?.isAdmin == true ? nil : Set(context.caller?.roles.keys.map { $0 } ?? [])
            if let workspace = request.queryString("workspace") {
                guard visible?.contains(workspace) ?? true else {
                    throw APIProblem(status: .forbidden, code: "forbidden", title: "Forbidden", detail: "you hold no role in workspace \(workspace)")
                }
                visible = [workspace]
            }
            let state = request.queryString("state") ?? "open"
            guard state == "open" || state == "all" else { throw APIProblem.badRequest(field: "state", "'state' is open or all") }
            return try APIResponse.json(try await alerts.alerts(
                workspaces: visible, open: state == "open", limit: try request.queryInteger("limit", default: 100, range: 1...1_000)))
        }
    }
}

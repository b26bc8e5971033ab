import AsyncHTTPClient
import ControlPlane
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PostgresNIO
import Shared
import Testing
import TestSupport

/// The callers of the access matrix, each with its token.
struct Cast {
    enum Member: String, CaseIterable {
        case anonymous, agent, viewer, consumer, `operator`, editor, owner, stranger, admin
        /// An owner's data-plane token, as a thief who sniffed it at an agent holds it.
        case stolenFromAgent = "stolen-from-agent"
        /// A Prometheus scrape token (audience metrics) of an owner.
        case scraper
    }
    var tokens: [Member: String]
    var spareTokenOfViewer: String
    var planID: UUID

    static let workspace = "alpha"
    static let otherWorkspace = "beta"
    static func principalName(_ member: Member) -> String { "\(member.rawValue)-user" }

    /// Sets up two workspaces and one principal per member.
    static func assemble(on server: RunningControlPlane) async throws -> Cast {
        let admin = server.client
        _ = try await admin.createWorkspace(workspace)
        _ = try await admin.createWorkspace(otherWorkspace)
        try await RepositoryFixture.example(workspace: workspace).apply(to: workspace, with: admin)
        var tokens: [Member: String] = [.admin: server.adminToken]
        let roles: [Member: WorkspaceRole] = [.viewer: .viewer, .consumer: .consumer, .operator: .operator, .editor: .editor, .owner: .owner]
        for (member, role) in roles {
            _ = try await admin.createPrincipal(CreatePrincipalRequest(name: principalName(member), kind: .serviceAccount))
            try await admin.grant(role, to: principalName(member), workspace: workspace)
            tokens[member] = try await admin.createToken(for: principalName(member)).token
        }
        _ = try await admin.createPrincipal(CreatePrincipalRequest(name: principalName(.stolenFromAgent), kind: .serviceAccount))
        try await admin.grant(.owner, to: principalName(.stolenFromAgent), workspace: workspace)
        tokens[.stolenFromAgent] = try await admin.createToken(for: principalName(.stolenFromAgent), audience: .dataPlane).token
        _ = try await admin.createPrincipal(CreatePrincipalRequest(name: principalName(.scraper), kind: .serviceAccount))
        try await admin.grant(.owner, to: principalName(.scraper), workspace: workspace)
        tokens[.scraper] = try await admin.createToken(for: principalName(.scraper), audience: .metrics).token
        _ = try await admin.createPrincipal(CreatePrincipalRequest(name: principalName(.stranger), kind: .user))
        try await admin.grant(.owner, to: principalName(.stranger), workspace: otherWorkspace)
        tokens[.stranger] = try await admin.createToken(for: principalName(.stranger)).token
        _ = try await admin.createTestAgent(name: principalName(.agent), environment: "prod", workspace: workspace)
        tokens[.agent] = try await admin.createToken(for: principalName(.agent)).token
        _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "target-user", kind: .user, password: "correct horse battery"))
        try await admin.grant(.viewer, to: "target-user", workspace: workspace)
        _ = try await admin.createPrincipal(CreatePrincipalRequest(name: "disposable-user", kind: .user))
        _ = try await admin.createTestAgent(name: "disposable-agent", environment: "prod", workspace: Cast.workspace)
        let spare = try await admin.createToken(for: principalName(.viewer), description: "spare").resource.publicId
        let plan = try await admin.plan(workspace: workspace, files: RepositoryFixture.example(workspace: workspace).apiFiles)
        // Job 1 (a backfill) exists before any member calls a job route.
        let start = try #require(RFC3339.parse("2025-01-01T00:00:00Z"))
        _ = try await admin.materialize(
            MaterializeRequest(featureView: "driver_hourly_stats", start: start, end: start.addingTimeInterval(3 * 3_600), chunk: "1h"),
            workspace: workspace)
        return Cast(tokens: tokens, spareTokenOfViewer: spare, planID: plan.id)
    }
}

/// The access policy, restated independently of `Authorizer` from the table
/// in docs/access-control.md: what each member must get for each permission.
enum ExpectedAccess: Equatable {
    case allowed, unauthenticated, forbidden, hidden

    static func of(_ member: Cast.Member, for permission: Permission) -> ExpectedAccess {
        if permission == .publicAccess { return .allowed }
        if member == .anonymous { return .unauthenticated }
        // A data-plane token says whose it is, and does nothing else here, whatever its principal's roles.
        if member == .stolenFromAgent { return permission == .identity ? .allowed : .forbidden }
        // A scrape token reads /metrics and says whose it is; nothing else, whatever its principal's roles.
        if member == .scraper { return permission == .identity || permission == .metrics ? .allowed : .forbidden }
        // Agents may call the agent protocol and nothing else; nobody else may call it.
        if permission == .agentProtocol { return member == .agent ? .allowed : .forbidden }
        if member == .agent { return .forbidden }
        if member == .admin { return .allowed }
        let roleInAlpha: WorkspaceRole? = [
            .viewer: .viewer, .consumer: .consumer, .operator: .operator, .editor: .editor, .owner: .owner,
        ][member]
        // Role inclusion as the docs' table states it.
        let ladder: [WorkspaceRole: Set<WorkspaceRole>] = [
            .viewer: [.viewer], .consumer: [.viewer, .consumer], .operator: [.viewer, .operator],
            .editor: [.viewer, .consumer, .operator, .editor], .owner: [.viewer, .consumer, .operator, .editor, .owner],
        ]
        func inAlpha(needing needed: WorkspaceRole) -> ExpectedAccess {
            guard let role = roleInAlpha else { return .hidden }
            return ladder[role]!.contains(needed) ? .allowed : .forbidden
        }
        switch permission {
        case .publicAccess, .authenticated, .identity: return .allowed
        case .instanceAdmin, .agentProtocol, .metrics: return .forbidden
        case .selfOrAdmin: return member == .viewer ? .allowed : .forbidden   // the matrix targets viewer-user
        case .workspace(let needed): return inAlpha(needing: needed)
        case .auditRead: return inAlpha(needing: .owner)
        }
    }
}

/// The permission each route must declare: the table of docs/access-control.md,
/// restated here so a route whose declaration drifts fails the test.
enum DocumentedPermissions {
    static let table: [String: Permission] = [
        "GET /healthz": .publicAccess, "GET /readyz": .publicAccess, "GET /openapi.json": .publicAccess,
        "POST /v1/login": .publicAccess, "POST /v1/enroll": .publicAccess,
        "POST /v1/workspaces/{workspace}/enrollment-tokens": .workspace(.owner), "DELETE /v1/workspaces/{workspace}/agents/{agent}": .workspace(.owner),
        "POST /v1/agent/credentials": .agentProtocol,
        "GET /v1/whoami": .identity, "GET /v1/workspaces": .authenticated, "GET /metrics": .metrics, "GET /v1/alerts": .authenticated,
        "POST /v1/workspaces": .instanceAdmin, "DELETE /v1/workspaces/{workspace}": .instanceAdmin,
        "GET /v1/principals": .instanceAdmin, "POST /v1/principals": .instanceAdmin,
        "DELETE /v1/principals/{principal}": .instanceAdmin, "POST /v1/workspaces/{workspace}/agents": .instanceAdmin,
        "GET /v1/principals/{principal}": .selfOrAdmin, "PUT /v1/principals/{principal}/password": .selfOrAdmin,
        "GET /v1/principals/{principal}/tokens": .selfOrAdmin, "POST /v1/principals/{principal}/tokens": .selfOrAdmin,
        "DELETE /v1/principals/{principal}/tokens/{token}": .selfOrAdmin,
        "GET /v1/workspaces/{workspace}": .workspace(.viewer),
        "GET /v1/workspaces/{workspace}/plans/{plan}": .workspace(.viewer),
        "GET /v1/workspaces/{workspace}/applies": .workspace(.viewer),
        "GET /v1/workspaces/{workspace}/search": .workspace(.viewer),
        "GET /v1/workspaces/{workspace}/{collection}": .workspace(.viewer),
        "GET /v1/workspaces/{workspace}/{collection}/{name}": .workspace(.viewer),
        "GET /v1/workspaces/{workspace}/{collection}/{name}/versions": .workspace(.viewer),
        "GET /v1/workspaces/{workspace}/{collection}/{name}/versions/{version}": .workspace(.viewer),
        "GET /v1/workspaces/{workspace}/{collection}/{name}/lineage": .workspace(.viewer),
        "POST /v1/workspaces/{workspace}/plans": .workspace(.editor),
        "POST /v1/workspaces/{workspace}/applies": .workspace(.editor),
        "GET /v1/workspaces/{workspace}/access": .workspace(.owner), "POST /v1/workspaces/{workspace}/access": .workspace(.owner),
        "DELETE /v1/workspaces/{workspace}/access/{principal}/{role}": .workspace(.owner),
        "GET /v1/workspaces/{workspace}/agents": .workspace(.viewer),
        "GET /v1/workspaces/{workspace}/environments": .workspace(.viewer),
        "GET /v1/workspaces/{workspace}/environments/{environment}": .workspace(.viewer),
        "POST /v1/workspaces/{workspace}/environments": .workspace(.owner),
        "DELETE /v1/workspaces/{workspace}/environments/{environment}": .workspace(.owner),
        "GET /v1/workspaces/{workspace}/jobs": .workspace(.viewer), "GET /v1/workspaces/{workspace}/jobs/{job}": .workspace(.viewer),
        "POST /v1/workspaces/{workspace}/jobs/{job}/cancel": .workspace(.operator),
        "POST /v1/workspaces/{workspace}/jobs/{job}/retry": .workspace(.operator),
        "POST /v1/workspaces/{workspace}/materializations": .workspace(.operator),
        "POST /v1/workspaces/{workspace}/datasets": .workspace(.consumer),
        "GET /v1/workspaces/{workspace}/freshness": .workspace(.viewer), "GET /v1/workspaces/{workspace}/expectations": .workspace(.viewer),
        "POST /v1/agent/hello": .agentProtocol, "POST /v1/agent/heartbeat": .agentProtocol, "POST /v1/agent/jobs:claim": .agentProtocol,
        "POST /v1/agent/access-snapshot": .agentProtocol, "POST /v1/agent/registry-snapshot": .agentProtocol,
        "POST /v1/agent/jobs/{job}/lease": .agentProtocol, "POST /v1/agent/jobs/{job}/progress": .agentProtocol,
        "POST /v1/agent/jobs/{job}/complete": .agentProtocol,
        "GET /v1/audit": .auditRead,
    ]
}

@Suite("Access control")
struct AccessPolicyTests {
    @Test("every route declares the permission the access-control table documents, and no route is missing from it")
    func declaredPermissions() throws {
        let routes = try ServerRoutes.descriptors()
        let declared = Dictionary(routes.map { ($0.description, $0.permission) }, uniquingKeysWith: { first, _ in first })
        #expect(declared.count == routes.count, "a route is registered twice")
        #expect(Set(declared.keys) == Set(DocumentedPermissions.table.keys))
        for (route, permission) in DocumentedPermissions.table {
            #expect(declared[route] == permission, "\(route) declares \(declared[route].map(String.init(describing:)) ?? "nothing"), documented \(permission)")
        }
    }

    static func send(
        _ method: HTTPMethod, _ url: String, token: String?, body: String? = nil, headers: [String: String] = [:]
    ) async throws -> RawResponse {
        var all = headers
        if let token { all["Authorization"] = "Bearer \(token)" }
        if body != nil { all["Content-Type"] = "application/json" }
        return try await RawResponse.send(method, url, body: body, headers: all)
    }

    /// A concrete request for a route: path parameters filled in, a valid body.
    static func request(for route: RouteDescriptor, cast: Cast) -> (path: String, body: String?) {
        var path = route.path
        let values = [
            "{workspace}": Cast.workspace, "{job}": "1", "{collection}": "feature-views", "{name}": "driver_hourly_stats", "{version}": "1",
            "{plan}": cast.planID.uuidString.lowercased(), "{token}": cast.spareTokenOfViewer, "{role}": "viewer",
            "{agent}": "disposable-agent", "{environment}": "prod",
            "{principal}": route.path == "/v1/principals/{principal}" && route.method == "DELETE" ? "disposable-user"
                : route.path.hasSuffix("{principal}/{role}") ? "target-user" : Cast.principalName(.viewer),
        ]
        for (placeholder, value) in values { path = path.replacingOccurrences(of: placeholder, with: value) }
        if route.path == "/v1/audit" { path += "?workspace=\(Cast.workspace)" }
        let unique = UUID().uuidString.prefix(8).lowercased()
        let files = try! String(decoding: APICoding.makeEncoder().encode(PlanRequest(files: RepositoryFixture.example(workspace: Cast.workspace).apiFiles)), as: UTF8.self)
        let bodies: [String: String] = [
            "POST /v1/workspaces": #"{"name":"ws-\#(unique)"}"#,
            "POST /v1/workspaces/{workspace}/plans": files,
            "POST /v1/workspaces/{workspace}/applies": #"{"plan_id":"\#(cast.planID.uuidString)"}"#,
            "POST /v1/login": #"{"name":"target-user","password":"correct horse battery"}"#,
            // A malformed token: 400 for everyone, and no failed attempt counted against the shared address.
            "POST /v1/enroll": #"{"token":"not-a-token","hostname":"matrix"}"#,
            "POST /v1/workspaces/{workspace}/enrollment-tokens": #"{"environment":"prod"}"#,
            "POST /v1/workspaces/{workspace}/environments": #"{"name":"env-\#(unique)"}"#,
            "POST /v1/agent/credentials": #"{"grace_seconds":600}"#,
            "POST /v1/principals": #"{"name":"p-\#(unique)","kind":"service_account"}"#,
            "PUT /v1/principals/{principal}/password": #"{"password":"another long password"}"#,
            "POST /v1/principals/{principal}/tokens": "{}",
            "POST /v1/workspaces/{workspace}/access": #"{"principal":"target-user","role":"viewer"}"#,
            "POST /v1/workspaces/{workspace}/agents": #"{"name":"agent-\#(unique)","environment":"prod"}"#,
            "POST /v1/workspaces/{workspace}/materializations":
                #"{"feature_view":"driver_hourly_stats","start":"2025-02-01T00:00:00Z","end":"2025-02-01T02:00:00Z","chunk":"1h"}"#,
            "POST /v1/workspaces/{workspace}/datasets":
                #"{"feature_service":"driver_ranking","entities":{"connection":"files","path":"labels.csv"},"output":{"connection":"files","path":"out.csv"}}"#,
            "POST /v1/agent/hello": #"{"instance_id":"matrix","version":"test","hostname":"test","capabilities":[]}"#,
            "POST /v1/agent/heartbeat": #"{"instance_id":"matrix","running_jobs":[]}"#,
            "POST /v1/agent/access-snapshot": #"{"instance_id":"matrix"}"#,
            "POST /v1/agent/registry-snapshot": #"{"instance_id":"matrix"}"#,
            "POST /v1/agent/jobs:claim": #"{"instance_id":"matrix","kinds":["materialize"],"wait_seconds":0}"#,
            "POST /v1/agent/jobs/{job}/lease": #"{"lease_token":"\#(UUID().uuidString)"}"#,
            "POST /v1/agent/jobs/{job}/progress": #"{"lease_token":"\#(UUID().uuidString)"}"#,
            "POST /v1/agent/jobs/{job}/complete":
                #"{"lease_token":"\#(UUID().uuidString)","outcome":"failed","started_at":"2025-01-01T00:00:00Z","finished_at":"2025-01-01T00:00:01Z","failure":{"message":"x","retryable":true}}"#,
        ]
        return (path, bodies["\(route.method) \(route.path)"])
    }

    @Test("every route, called as every kind of caller, answers 401 / 403 / 404 / success as the policy says")
    func accessMatrix() async throws {
        try await TestControlPlane.withControlPlane { server in
            let cast = try await Cast.assemble(on: server)
            let routes = try ServerRoutes.descriptors()
            #expect(routes.count >= 30)
            var checked = 0
            for member in Cast.Member.allCases {
                for route in routes {
                    let (path, body) = Self.request(for: route, cast: cast)
                    let response = try await Self.send(
                        HTTPMethod(rawValue: route.method), server.baseURL + path, token: cast.tokens[member], body: body)
                    let documented = try #require(DocumentedPermissions.table[route.description], "\(route) is not documented")
                    let expected = ExpectedAccess.of(member, for: documented)
                    let context = "\(member.rawValue) → \(route) [\(route.permission)]: HTTP \(response.status) \(response.problem?.code ?? "")"
                    switch expected {
                    case .unauthenticated:
                        #expect(response.status == 401, Comment(rawValue: context))
                    case .forbidden:
                        #expect(response.status == 403, Comment(rawValue: context))
                        if member == .stolenFromAgent || member == .scraper {
                            #expect(response.problem?.code == "token-audience", Comment(rawValue: context))
                        }
                    case .hidden:
                        #expect(response.status == 404 && response.problem?.code == "workspace-not-found", Comment(rawValue: context))
                    case .allowed:
                        #expect(![401, 403].contains(response.status), Comment(rawValue: context))
                        #expect(!(response.status == 404 && response.problem?.code == "workspace-not-found"), Comment(rawValue: context))
                        if route.method == "GET" { #expect((200..<300).contains(response.status), Comment(rawValue: context)) }
                    }
                    checked += 1
                }
            }
            #expect(checked == routes.count * Cast.Member.allCases.count)
        }
    }

    @Test("a hidden workspace answers exactly like a missing one")
    func hiddenLooksMissing() async throws {
        try await TestControlPlane.withControlPlane { server in
            let cast = try await Cast.assemble(on: server)
            let hidden = try await Self.send(.GET, "\(server.baseURL)/v1/workspaces/alpha", token: cast.tokens[.stranger])
            let missing = try await Self.send(.GET, "\(server.baseURL)/v1/workspaces/gamma", token: cast.tokens[.stranger])
            #expect(hidden.status == 404 && missing.status == 404)
            #expect(hidden.problem?.detail.replacingOccurrences(of: "alpha", with: "gamma") == missing.problem?.detail)
            let listed = try await ControlPlaneClient(baseURL: server.baseURL, token: cast.tokens[.stranger]).workspaces()
            #expect(listed.map(\.name) == ["beta"])
            let adminListed = try await server.client.workspaces()
            #expect(Set(adminListed.map(\.name)) == ["alpha", "beta"])
        }
    }
}

/// The control plane's route table, built without a running server.
enum ServerRoutes {
    static func descriptors() throws -> [RouteDescriptor] {
        let client = PostgresClient(
            configuration: PostgresURL(host: "127.0.0.1", username: "unused", database: "unused").clientConfiguration(),
            backgroundLogger: Logger(label: "test"))
        return ControlPlaneApplication.makeRouter(client: client, logger: Logger(label: "test")).1
    }
}

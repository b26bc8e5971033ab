import Foundation
import Hummingbird
import Shared

/// Jobs as operators see them: list, describe, cancel, retry, materialize on
/// demand; and the workspace's agents.
struct JobRoutes {
    let store: PostgresJobStore

    func register(on routes: inout APIRouteBuilder) {
        let store = self.store
        routes.add(.get, "/v1/workspaces/{workspace}/jobs", permission: .workspace(.viewer)) { request, context in
            let workspace = try context.pathParameter("workspace")
            let state = try request.queryString("state").map { text in
                guard let state = JobState(rawValue: text) else {
                    throw APIProblem.badRequest(field: "state", "'\(text)' is not a job state: \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                return state
            }
            let kind = try request.queryString("kind").map { text in
                guard let kind = JobKind(rawValue: text) else {
                    throw APIProblem.badRequest(field: "kind", "'\(text)' is not a job kind: \(JobKind.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                return kind
            }
            let parent = try request.queryString("parent").map { text in
                guard let id = Int64(text) else { throw APIProblem.badRequest(field: "parent", "'parent' must be a job id") }
                return id
            }
            let cursor = try request.queryString("cursor").map { text in
                guard let id = Int64(text) else { throw APIProblem.badRequest(field: "cursor", "'cursor' is not a cursor this API gave") }
                return id
            }
            let limit = try request.queryInteger("limit", default: 100, range: 1...1_000)
            try await store.requireWorkspace(workspace)
            return try APIResponse.json(try await store.list(
                workspace: workspace, state: state, view: request.queryString("view"), kind: kind, parent: parent,
                environment: request.queryString("environment"), after: cursor, limit: limit))
        }
        routes.add(.get, "/v1/workspaces/{workspace}/jobs/{job}", permission: .workspace(.viewer)) { _, context in
            try APIResponse.json(try await store.detail(job: try context.jobID(), workspace: try context.pathParameter("workspace")))
        }
        routes.add(.post, "/v1/workspaces/{workspace}/jobs/{job}/cancel", permission: .workspace(.operator)) { _, context in
            try APIResponse.json(try await store.cancel(
                job: try context.jobID(), workspace: try context.pathParameter("workspace"), by: context.callerName))
        }
        routes.add(.post, "/v1/workspaces/{workspace}/jobs/{job}/retry", permission: .workspace(.operator)) { _, context in
            try APIResponse.json(try await store.retry(
                job: try context.jobID(), workspace: try context.pathParameter("workspace"), by: context.callerName))
        }
        routes.add(.post, "/v1/workspaces/{workspace}/materializations", permission: .workspace(.operator)) { request, context in
            let body = try await request.decodeBody(as: MaterializeRequest.self, context: context)
            let workspace = try context.pathParameter("workspace")
            try await store.requireWorkspace(workspace)
            return try APIResponse.json(try await store.materialize(body, workspace: workspace, by: context.callerName), status: .created)
        }
        // Building a dataset reads feature values (on the agent): the consumer role. Free SQL
        // runs on the customer's database: it needs the operator role too; consumers name an
        // entity query an editor declared.
        routes.add(.post, "/v1/workspaces/{workspace}/datasets", permission: .workspace(.consumer)) { request, context in
            let body = try await request.decodeBody(as: CreateDatasetRequest.self, context: context)
            let workspace = try context.pathParameter("workspace")
            if body.hasFreeSQL,
               Authorizer.decide(.workspace(.operator), caller: context.caller, workspace: workspace, targetPrincipal: nil) != .allowed {
                throw APIProblem(
                    status: .forbidden, code: "forbidden", title: "Forbidden",
                    detail: "an entity table from free SQL needs the operator role; name an entity query of the workspace instead (entity_query)",
                    field: "entities.query")
            }
            return try APIResponse.json(try await store.createDataset(body, workspace: workspace, by: context.callerName), status: .created)
        }
        routes.add(.get, "/v1/workspaces/{workspace}/agents", permission: .workspace(.viewer)) { _, context in
            let workspace = try context.pathParameter("workspace")
            try await store.requireWorkspace(workspace)
            return try APIResponse.json(try await store.agents(workspace: workspace))
        }
        let environments = PostgresEnvironmentStore(jobs: store)
        routes.add(.get, "/v1/workspaces/{workspace}/environments", permission: .workspace(.viewer)) { _, context in
            try APIResponse.json(try await environments.list(workspace: try context.pathParameter("workspace")))
        }
        routes.add(.post, "/v1/workspaces/{workspace}/environments", permission: .workspace(.owner)) { request, context in
            let body = try await request.decodeBody(as: CreateEnvironmentRequest.self, context: context)
            let created = try await environments.create(body, workspace: try context.pathParameter("workspace"), by: context.callerName)
            return try APIResponse.json(created, status: .created)
        }
        routes.add(.get, "/v1/workspaces/{workspace}/environments/{environment}", permission: .workspace(.viewer)) { _, context in
            try APIResponse.json(try await environments.describe(
                try context.pathParameter("environment"), workspace: try context.pathParameter("workspace")))
        }
        routes.add(.delete, "/v1/workspaces/{workspace}/environments/{environment}", permission: .workspace(.owner)) { _, context in
            try await environments.delete(try context.pathParameter("environment"), workspace: try context.pathParameter("workspace"))
            return APIResponse.empty(.noContent)
        }
    }
}

extension ControlPlaneRequestContext {
    /// The `{job}` path parameter.
    func jobID() throws -> Int64 {
        let text = try pathParameter("job")
        guard let id = Int64(text), id > 0 else { throw APIProblem.badRequest(field: "job", "'\(text)' is not a job id") }
        return id
    }

    /// The authenticated caller's name.
    var callerName: String { caller?.name ?? "anonymous" }
}

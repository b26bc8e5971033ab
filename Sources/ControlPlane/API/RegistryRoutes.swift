import Foundation
import Hummingbird
import Shared

/// The registry's API: workspaces, plans and applies, objects and their
/// versions, lineage and search.
struct RegistryRoutes {
    let registry: RegistryService

    func register(on routes: inout APIRouteBuilder) {
        let registry = self.registry
        let store = registry.store

        routes.add(.get, "/v1/workspaces", permission: .authenticated) { request, context in
            let visible: Set<String>? = context.caller?.isAdmin == true ? nil : Set(context.caller?.roles.keys.map { $0 } ?? [])
            let page = try await store.listWorkspaces(
                after: request.queryString("cursor"), limit: try request.queryInteger("limit", default: 100, range: 1...500),
                visibleTo: visible)
            return try APIResponse.json(page)
        }
        routes.add(.post, "/v1/workspaces", permission: .instanceAdmin) { request, context in
            let body = try await request.decodeBody(as: CreateWorkspaceRequest.self, context: context)
            return try APIResponse.json(try await store.createWorkspace(body, by: context.principal), status: .created)
        }
        routes.add(.get, "/v1/workspaces/{workspace}", permission: .workspace(.viewer)) { _, context in
            try APIResponse.json(try await store.workspace(named: try context.pathParameter("workspace")))
        }
        routes.add(.delete, "/v1/workspaces/{workspace}", permission: .instanceAdmin) { _, context in
            try await store.deleteWorkspace(named: try context.pathParameter("workspace"))
            return APIResponse.empty(.noContent)
        }

        routes.add(.post, "/v1/workspaces/{workspace}/plans", permission: .workspace(.editor)) { request, context in
            let body = try await request.decodeBody(as: PlanRequest.self, context: context)
            let plan = try await registry.plan(workspace: try context.pathParameter("workspace"), files: body.files, by: context.principal)
            return try APIResponse.json(plan, status: .created)
        }
        routes.add(.get, "/v1/workspaces/{workspace}/plans/{plan}", permission: .workspace(.viewer)) { _, context in
            let text = try context.pathParameter("plan")
            guard let id = UUID(uuidString: text) else { throw APIProblem.badRequest(field: "plan", "'\(text)' is not a plan id") }
            return try APIResponse.json(try await store.plan(id, in: try context.pathParameter("workspace")))
        }
        routes.add(.post, "/v1/workspaces/{workspace}/applies", permission: .workspace(.editor)) { request, context in
            let body = try await request.decodeBody(as: ApplyRequest.self, context: context)
            let applied = try await store.apply(plan: body.planId, in: try context.pathParameter("workspace"), by: context.principal)
            return try APIResponse.json(applied, status: .created)
        }
        routes.add(.get, "/v1/workspaces/{workspace}/applies", permission: .workspace(.viewer)) { request, context in
            let page = try await store.applies(
                in: try context.pathParameter("workspace"), after: request.queryString("cursor"),
                limit: try request.queryInteger("limit", default: 50, range: 1...500))
            return try APIResponse.json(page)
        }
        routes.add(.get, "/v1/workspaces/{workspace}/search", permission: .workspace(.viewer)) { request, context in
            var kinds: [ObjectKind]?
            if let text = request.queryString("kind") {
                guard let collection = ObjectCollection(userSpelling: text) else {
                    throw APIProblem.badRequest(field: "kind", "unknown kind '\(text)'")
                }
                kinds = ObjectKind(rawValue: text).map { [$0] } ?? collection.kinds
            }
            let query = SearchQuery(
                text: request.queryString("q") ?? "", kinds: kinds, tag: request.queryString("tag"), owner: request.queryString("owner"),
                limit: try request.queryInteger("limit", default: 50, range: 1...500))
            return try APIResponse.json(try await store.search(in: try context.pathParameter("workspace"), query: query))
        }

        routes.add(.get, "/v1/workspaces/{workspace}/{collection}", permission: .workspace(.viewer)) { request, context in
            let page = try await store.objects(
                in: try context.pathParameter("workspace"), collection: try context.collection(),
                includeRetired: try request.queryBool("include_retired"), after: request.queryString("cursor"),
                limit: try request.queryInteger("limit", default: 100, range: 1...500))
            return try APIResponse.json(page)
        }
        routes.add(.get, "/v1/workspaces/{workspace}/{collection}/{name}", permission: .workspace(.viewer)) { _, context in
            try APIResponse.json(try await store.object(
                in: try context.pathParameter("workspace"), collection: try context.collection(), name: try context.pathParameter("name")))
        }
        routes.add(.get, "/v1/workspaces/{workspace}/{collection}/{name}/versions", permission: .workspace(.viewer)) { _, context in
            try APIResponse.json(try await store.versions(
                in: try context.pathParameter("workspace"), collection: try context.collection(), name: try context.pathParameter("name")))
        }
        routes.add(.get, "/v1/workspaces/{workspace}/{collection}/{name}/versions/{version}", permission: .workspace(.viewer)) { _, context in
            let text = try context.pathParameter("version")
            guard let number = Int(text), number >= 1 else {
                throw APIProblem.badRequest(field: "version", "'\(text)' is not a version number")
            }
            return try APIResponse.json(try await store.version(
                number, in: try context.pathParameter("workspace"), collection: try context.collection(),
                name: try context.pathParameter("name")))
        }
        routes.add(.get, "/v1/workspaces/{workspace}/{collection}/{name}/lineage", permission: .workspace(.viewer)) { request, context in
            let directionText = request.queryString("direction") ?? LineageDirection.downstream.rawValue
            guard let direction = LineageDirection(rawValue: directionText) else {
                throw APIProblem.badRequest(field: "direction", "direction is upstream or downstream")
            }
            return try APIResponse.json(try await store.lineage(
                in: try context.pathParameter("workspace"), collection: try context.collection(),
                name: try context.pathParameter("name"), direction: direction,
                depth: try request.queryInteger("depth", default: 3, range: 1...20)))
        }
    }
}

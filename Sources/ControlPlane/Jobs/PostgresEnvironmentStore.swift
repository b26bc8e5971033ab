import Foundation
import Logging
import PostgresNIO
import Shared

/// A workspace's environments in PostgreSQL (schema: `0017_environments.sql`):
/// creating, listing, describing and deleting them, and the check an agent's
/// hello passes — its online store is its environment's kind, and an
/// environment whose store is embedded has one writing agent.
public struct PostgresEnvironmentStore: Sendable {
    let jobs: PostgresJobStore
    var client: PostgresClient { jobs.client }
    var logger: Logger { jobs.logger }

    /// Creates a store beside the jobs ledger (which lists the agents).
    public init(jobs: PostgresJobStore) {
        self.jobs = jobs
    }

    /// The most environments a workspace may have: each scheduled interval is queued once per environment.
    public static let maximumPerWorkspace = 64

    /// Creates an environment of `workspace`.
    public func create(_ request: CreateEnvironmentRequest, workspace: String, by creator: String) async throws -> EnvironmentResource {
        guard Identifier.isValidWorkspace(request.name) else {
            throw JobError.invalidArgument(
                field: "name", detail: "'\(request.name)' is not a valid environment name (a lowercase letter, then lowercase letters, digits, '-' or '_')")
        }
        let description = request.description ?? ""
        guard description.count <= 1_000 else { throw JobError.invalidArgument(field: "description", detail: "at most 1000 characters") }
        let kind = request.onlineStore ?? .embedded
        let inserted = try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                // The workspace's row locked first, then counted in a statement of its own (which sees commits
                // made meanwhile), so concurrent creates cannot pass the bound together.
                let (workspaceID, _) = try await PostgresRegistryStore.workspaceID(workspace, connection: connection, logger: logger)
                try await connection.execute("SELECT 1 FROM workspaces WHERE id = \(workspaceID) FOR UPDATE", logger: logger)
                let rows = try await connection.query(
                    """
                    INSERT INTO environments (workspace_id, name, online_store, description, created_by)
                    SELECT \(workspaceID), \(request.name), \(kind.rawValue), \(description), \(creator)
                    WHERE (SELECT count(*) FROM environments WHERE workspace_id = \(workspaceID)) < \(Self.maximumPerWorkspace)
                    ON CONFLICT (workspace_id, name) DO NOTHING RETURNING id
                    """, logger: logger)
                for try await _ in rows.decode(Int64.self) { return true }
                return false
            }
        }
        guard inserted else {
            if try await rows(workspace: workspace, named: request.name).isEmpty {
                throw JobError.invalidArgument(
                    field: "name", detail: "workspace '\(workspace)' has \(Self.maximumPerWorkspace) environments already, the most it may have; delete one first")
            }
            throw JobError.environmentExists(request.name)
        }
        logger.notice("environment created", metadata: [
            "larder.workspace": .string(workspace), "larder.environment": .string(request.name), "larder.online_store": .string(kind.rawValue),
        ])
        return try await describe(request.name, workspace: workspace)
    }

    /// The workspace's environments, by name.
    public func list(workspace: String) async throws -> [EnvironmentResource] {
        try await jobs.requireWorkspace(workspace)
        let agents = Dictionary(grouping: try await jobs.agents(workspace: workspace), by: \.environment)
        return try await rows(workspace: workspace, named: nil).map { row in
            var environment = row
            environment.agents = agents[row.name] ?? []
            return environment
        }
    }

    /// One environment of the workspace.
    public func describe(_ name: String, workspace: String) async throws -> EnvironmentResource {
        try await jobs.requireWorkspace(workspace)
        guard var environment = try await rows(workspace: workspace, named: name).first else { throw JobError.environmentNotFound(name) }
        environment.agents = try await jobs.agents(workspace: workspace, environment: name)
        return environment
    }

    /// Deletes an environment that has no agents left; its unused enrollment
    /// tokens and its jobs go with it, in one transaction.
    public func delete(_ name: String, workspace: String) async throws {
        try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                let (workspaceID, _) = try await PostgresRegistryStore.workspaceID(workspace, connection: connection, logger: logger)
                var agents: [String] = []
                for try await agent in try await connection.query(
                    """
                    SELECT name FROM principals WHERE kind = 'agent' AND workspace_id = \(workspaceID) AND environment = \(name)
                      AND disabled_at IS NULL ORDER BY name
                    """, logger: logger).decode(String.self) {
                    agents.append(agent)
                }
                guard agents.isEmpty else { throw JobError.environmentInUse(name, agents: agents) }
                // Removed agents go with it (the audit log keeps their names).
                try await connection.query(
                    """
                    DELETE FROM principals
                    WHERE kind = 'agent' AND workspace_id = \(workspaceID) AND environment = \(name) AND disabled_at IS NOT NULL
                    """, logger: logger)
                var deleted = false
                for try await _ in try await connection.query(
                    "DELETE FROM environments WHERE workspace_id = \(workspaceID) AND name = \(name) RETURNING id", logger: logger
                ).decode(Int64.self) {
                    deleted = true
                }
                guard deleted else { throw JobError.environmentNotFound(name) }
            }
        }
        logger.notice("environment deleted", metadata: ["larder.workspace": .string(workspace), "larder.environment": .string(name)])
    }

    /// Checks an agent's hello against its environment: its online store must
    /// be the environment's kind; with an embedded store, the first agent to
    /// say hello becomes the environment's writer, and any other is refused
    /// until that one is removed.
    public func admit(_ agent: AgentIdentity, onlineStore: OnlineStoreKind) async throws {
        try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                var found: (kind: String, writer: Int64?, writerName: String?, writerGone: Bool)?
                for try await row in try await connection.query(
                    """
                    SELECT e.online_store, e.writer_id, p.name, coalesce(p.disabled_at IS NOT NULL, true)
                    FROM environments e LEFT JOIN principals p ON p.id = e.writer_id
                    WHERE e.workspace_id = \(agent.workspaceID) AND e.name = \(agent.environment)
                    FOR UPDATE OF e
                    """, logger: logger).decode((String, Int64?, String?, Bool).self) {
                    found = row
                }
                guard let found else { throw JobError.environmentNotFound(agent.environment) }
                let declared = OnlineStoreKind(rawValue: found.kind) ?? .embedded
                guard declared == onlineStore else {
                    throw JobError.onlineStoreMismatch(environment: agent.environment, declared: declared, agent: onlineStore)
                }
                guard declared == .embedded, found.writer != agent.principalID else { return }
                if let writer = found.writerName, !found.writerGone { throw JobError.embeddedStoreTaken(environment: agent.environment, writer: writer) }
                try await connection.query(
                    """
                    UPDATE environments SET writer_id = \(agent.principalID)
                    WHERE workspace_id = \(agent.workspaceID) AND name = \(agent.environment)
                    """, logger: logger)
            }
        }
    }

    private func rows(workspace: String, named name: String?) async throws -> [EnvironmentResource] {
        let rows = try await client.query(
            """
            SELECT e.name, e.online_store, e.description, p.name, e.created_at, e.created_by,
                   (SELECT count(*)::int FROM jobs j WHERE j.workspace_id = e.workspace_id AND j.environment = e.name
                      AND j.kind = 'materialize' AND j.state IN ('queued', 'leased', 'running'))
            FROM environments e JOIN workspaces w ON w.id = e.workspace_id
            LEFT JOIN principals p ON p.id = e.writer_id AND p.disabled_at IS NULL
            WHERE w.name = \(workspace) AND (\(name == nil) OR e.name = \(name ?? ""))
            ORDER BY e.name
            """, logger: logger)
        var environments: [EnvironmentResource] = []
        for try await (name, kind, description, writer, created, creator, active)
            in rows.decode((String, String, String, String?, Date, String, Int).self) {
            environments.append(EnvironmentResource(
                name: name, workspace: workspace, onlineStore: OnlineStoreKind(rawValue: kind) ?? .embedded, description: description,
                writer: writer, agents: [], activeJobs: active, createdAt: created, createdBy: creator))
        }
        return environments
    }
}

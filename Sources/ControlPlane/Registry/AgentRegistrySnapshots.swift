import Foundation
import Logging
import PostgresNIO
import Shared

/// Builds the registry snapshots agents resolve feature requests with: the
/// current version of every object of a workspace, at its revision. (Not to
/// be confused with `RegistrySnapshot`, what planning reads.)
struct AgentRegistrySnapshots: Sendable {
    let client: PostgresClient
    let logger: Logger

    /// The workspace's registry revision.
    func revision(ofWorkspace workspaceID: Int64) async throws -> Int64 {
        let rows = try await client.query("SELECT revision FROM workspaces WHERE id = \(workspaceID)", logger: logger)
        for try await revision in rows.decode(Int64.self) { return revision }
        throw RegistryError.workspaceNotFound("\(workspaceID)")
    }

    /// The snapshot of the workspace as it is now.
    func snapshot(ofWorkspace workspaceID: Int64, named workspace: String, now: Date = Date()) async throws -> AgentRegistrySnapshot {
        // One transaction, so the revision and the objects agree.
        try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger, begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { connection in
                try await snapshot(ofWorkspace: workspaceID, named: workspace, now: now, on: connection)
            }
        }
    }

    /// The snapshot of the workspace as the caller's transaction sees it
    /// (REPEATABLE READ, so the revision and the objects agree).
    func snapshot(ofWorkspace workspaceID: Int64, named workspace: String, now: Date = Date(), on connection: PostgresConnection) async throws
        -> AgentRegistrySnapshot
    {
        var revision: Int64 = 0
        for try await value in try await connection.query(
            "SELECT revision FROM workspaces WHERE id = \(workspaceID)", logger: logger).decode(Int64.self) { revision = value }
        let rows = try await connection.query(
            """
            SELECT o.kind, o.name, v.version, v.content_hash, jsonb_set(v.spec, '{operational}', o.operational)::text
            FROM registry_objects o JOIN object_versions v ON v.object_id = o.id AND v.version = o.current_version
            WHERE o.workspace_id = \(workspaceID)
            ORDER BY o.kind, o.name
            """, logger: logger)
        var definitions: [JobSpec.Definition] = []
        for try await (kind, name, version, hash, text) in rows.decode((String, String, Int, String, String).self) {
            let definition = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
            definitions.append(JobSpec.Definition(kind: kind, name: name, version: version, contentHash: hash, definition: definition))
        }
        return AgentRegistrySnapshot(workspace: workspace, revision: revision, issuedAt: now, definitions: definitions)
    }
}

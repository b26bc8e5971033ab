import Foundation
import Logging
import PostgresNIO
import Shared

/// Builds and signs the access snapshots agents authorize feature reads
/// with (docs/access-control.md, "The data plane").
struct AccessSnapshots: Sendable {
    let client: PostgresClient
    let logger: Logger
    /// How long an agent may use a snapshot without hearing from the control plane.
    static let validity: TimeInterval = 24 * 3_600

    /// The workspace's access version.
    func version(ofWorkspace workspaceID: Int64) async throws -> Int64 {
        let rows = try await client.query("SELECT access_version FROM workspaces WHERE id = \(workspaceID)", logger: logger)
        for try await version in rows.decode(Int64.self) { return version }
        throw RegistryError.workspaceNotFound("\(workspaceID)")
    }

    /// The snapshot of the workspace as it is now.
    func snapshot(ofWorkspace workspaceID: Int64, named workspace: String, now: Date = Date()) async throws -> AccessSnapshot {
        // The version first: a change landing in between makes the snapshot
        // newer than its label, never older, and the next heartbeat fetches again.
        let version = try await version(ofWorkspace: workspaceID)
        let rows = try await client.query(
            """
            SELECT t.public_id, t.secret_hash, p.name, p.is_admin, array_remove(array_agg(b.role), NULL), t.expires_at
            FROM api_tokens t
            JOIN principals p ON p.id = t.principal_id
            LEFT JOIN role_bindings b ON b.principal_id = p.id AND b.workspace_id = \(workspaceID)
            WHERE t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > \(now))
              AND p.disabled_at IS NULL AND p.kind <> 'agent' AND t.audience IN ('data-plane', 'both')
            GROUP BY t.id, p.id
            HAVING p.is_admin OR count(b.role) > 0
            ORDER BY t.public_id
            """, logger: logger)
        var entries: [AccessSnapshot.Entry] = []
        for try await (publicID, hash, principal, isAdmin, roles, expiresAt) in rows.decode((String, Data, String, Bool, [String], Date?).self) {
            var granted = Set<WorkspaceRole>()
            if isAdmin { granted = Set(WorkspaceRole.allCases) }
            for role in roles.compactMap(WorkspaceRole.init(rawValue:)) { granted.formUnion(role.granted) }
            entries.append(AccessSnapshot.Entry(
                tokenPublicId: publicID, secretSha256: hash.base64URL, principal: principal, roles: granted.sorted(), tokenExpiresAt: expiresAt))
        }
        return AccessSnapshot(workspace: workspace, version: version, issuedAt: now, expiresAt: now.addingTimeInterval(Self.validity), entries: entries)
    }
}

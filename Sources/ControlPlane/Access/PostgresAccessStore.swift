import Foundation
import Logging
import PostgresNIO
import Shared

/// Identities and access in PostgreSQL (schema: `0002_access.sql`).
public struct PostgresAccessStore: AccessStore {
    let client: PostgresClient
    let logger: Logger

    /// Creates a store over a running client pool.
    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// The advisory lock key serializing bootstraps of several replicas.
    static let bootstrapLockKey: Int64 = 0x6C61_7264_6572_0002

    public func bootstrapAdmin(name: String, token: APIToken, expiresAt: Date?) async throws -> Bool {
        try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                try await connection.query("SELECT pg_advisory_xact_lock(\(Self.bootstrapLockKey))", logger: logger)
                let rows = try await connection.query("SELECT count(*)::int FROM principals", logger: logger)
                for try await count in rows.decode(Int.self) where count > 0 { return false }
                try await connection.query(
                    """
                    WITH admin AS (
                        INSERT INTO principals (name, kind, is_admin, description, created_by)
                        VALUES (\(name), 'user', true, 'The first administrator, created at bootstrap.', 'bootstrap') RETURNING id)
                    INSERT INTO api_tokens (public_id, principal_id, secret_hash, description, created_by, expires_at)
                    SELECT \(token.publicID), id, \(Data(token.secretHash)), 'bootstrap token', 'bootstrap', \(expiresAt) FROM admin
                    """, logger: logger)
                return true
            }
        }
    }

    public func caller(for token: APIToken, now: Date) async throws -> Caller? {
        let rows = try await client.query(
            """
            SELECT p.id, p.name, p.kind, p.is_admin, w.id, w.name, p.environment, t.secret_hash, t.last_used_at, t.audience,
                   t.expires_at, t.session, t.revoked_at IS NULL AND p.disabled_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > \(now)),
                   p.disabled_at IS NOT NULL
            FROM api_tokens t
            JOIN principals p ON p.id = t.principal_id
            LEFT JOIN workspaces w ON w.id = p.workspace_id
            WHERE t.public_id = \(token.publicID)
            """, logger: logger)
        typealias Row = (id: Int64, name: String, kind: String, admin: Bool, workspaceID: Int64?, workspace: String?, environment: String?,
                         hash: Data, lastUsed: Date?, audience: String, expiresAt: Date?, session: Bool, valid: Bool, disabled: Bool)
        var found: Row?
        for try await row in rows.decode((Int64, String, String, Bool, Int64?, String?, String?, Data, Date?, String, Date?, Bool, Bool, Bool).self) {
            found = row
        }
        guard let found, token.matches(storedHash: Array(found.hash)), let kind = PrincipalKind(rawValue: found.kind),
              let audience = TokenAudience(rawValue: found.audience)
        else { return nil }
        guard found.valid else {
            // A removed (disabled) agent's own token (the secret matched): say so, so the agent stops asking.
            if kind == .agent, found.disabled { throw AccessError.agentRemoved(found.name) }
            return nil
        }
        if found.lastUsed.map({ now.timeIntervalSince($0) > 60 }) ?? true {
            try await client.query("UPDATE api_tokens SET last_used_at = \(now) WHERE public_id = \(token.publicID)", logger: logger)
        }
        if kind == .agent {
            // Agents hold no roles: nothing more to read.
            guard let workspaceID = found.workspaceID, let workspace = found.workspace, let environment = found.environment else { return nil }
            return Caller(
                name: found.name, kind: kind, isAdmin: false, roles: [:], agentWorkspace: workspace, tokenPublicID: token.publicID,
                audience: audience, agent: AgentIdentity(principalID: found.id, name: found.name, workspaceID: workspaceID, workspace: workspace, environment: environment))
        }
        var roles: [String: Set<WorkspaceRole>] = [:]
        let bindings = try await client.query(
            """
            SELECT w.name, b.role FROM role_bindings b JOIN workspaces w ON w.id = b.workspace_id WHERE b.principal_id = \(found.id)
            """, logger: logger)
        for try await (workspace, role) in bindings.decode((String, String).self) {
            if let role = WorkspaceRole(rawValue: role) { roles[workspace, default: []].formUnion(role.granted) }
        }
        var caller = Caller(
            name: found.name, kind: kind, isAdmin: found.admin, roles: roles, agentWorkspace: found.workspace, tokenPublicID: token.publicID,
            audience: audience)
        caller.isSession = found.session
        caller.tokenExpiresAt = found.expiresAt
        return caller
    }

    static let principalColumns = """
        SELECT p.name, p.kind, p.is_admin, w.name, p.environment, p.description, p.password_hash IS NOT NULL, p.disabled_at,
               p.created_at, p.created_by
        FROM principals p LEFT JOIN workspaces w ON w.id = p.workspace_id
        """
    typealias PrincipalRow = (String, String, Bool, String?, String?, String?, Bool, Date?, Date, String)

    static func principal(_ row: PrincipalRow) -> PrincipalResource {
        PrincipalResource(
            name: row.0, kind: PrincipalKind(rawValue: row.1) ?? .user, admin: row.2, workspace: row.3, environment: row.4,
            description: row.5, hasPassword: row.6, disabledAt: row.7, createdAt: row.8, createdBy: row.9)
    }

    public func createPrincipal(_ request: CreatePrincipalRequest, passwordHash: String?, by creator: String) async throws -> PrincipalResource {
        // An admin of one's own ends the bootstrap token's use, in the same statement.
        let rows = try await client.query(
            """
            WITH created AS (
                INSERT INTO principals (name, kind, is_admin, description, password_hash, created_by)
                VALUES (\(request.name), \(request.kind.rawValue), \(request.admin ?? false), \(request.description), \(passwordHash), \(creator))
                ON CONFLICT (name) DO NOTHING RETURNING name, is_admin
            ), bootstrap AS (
                UPDATE api_tokens SET revoked_at = now()
                WHERE created_by = 'bootstrap' AND description = 'bootstrap token' AND revoked_at IS NULL
                  AND EXISTS (SELECT 1 FROM created WHERE is_admin)
            )
            SELECT name FROM created
            """, logger: logger)
        for try await _ in rows.decode(String.self) { return try await principal(named: request.name) }
        throw AccessError.principalExists(request.name)
    }

    public func createAgent(_ request: CreateAgentRequest, workspace: String, by creator: String) async throws -> PrincipalResource {
        let inserted = try await PostgresFailure.missingReference(is: JobError.environmentNotFound(request.environment)) {
            let rows = try await client.query(
                """
                INSERT INTO principals (name, kind, workspace_id, environment, created_by)
                SELECT \(request.name), 'agent', w.id, \(request.environment), \(creator) FROM workspaces w WHERE w.name = \(workspace)
                ON CONFLICT (name) DO NOTHING RETURNING name
                """, logger: logger)
            for try await _ in rows.decode(String.self) { return true }
            return false
        }
        if inserted { return try await principal(named: request.name) }
        if try await principals(agentsOf: nil).contains(where: { $0.name == request.name }) {
            throw AccessError.principalExists(request.name)
        }
        throw RegistryError.workspaceNotFound(workspace)
    }

    public func principals(agentsOf workspace: String?) async throws -> [PrincipalResource] {
        let rows = try await client.query(
            """
            \(unescaped: Self.principalColumns)
            WHERE \(workspace == nil) OR (p.kind = 'agent' AND w.name = \(workspace ?? ""))
            ORDER BY p.name
            """, logger: logger)
        var principals: [PrincipalResource] = []
        for try await row in rows.decode(PrincipalRow.self) { principals.append(Self.principal(row)) }
        return principals
    }

    public func principal(named name: String) async throws -> PrincipalResource {
        let rows = try await client.query("\(unescaped: Self.principalColumns) WHERE p.name = \(name)", logger: logger)
        for try await row in rows.decode(PrincipalRow.self) { return Self.principal(row) }
        throw AccessError.principalNotFound(name)
    }

    public func disablePrincipal(named name: String) async throws {
        let rows = try await client.query(
            """
            WITH changed AS (
                UPDATE principals SET disabled_at = coalesce(disabled_at, now()) WHERE name = \(name) RETURNING name, id AS principal_id
            ), \(unescaped: Self.bumpAccessOfChanged)
            SELECT name FROM changed
            """, logger: logger)
        for try await _ in rows.decode(String.self) { return }
        throw AccessError.principalNotFound(name)
    }

    public func setPasswordHash(_ hash: String, for name: String) async throws {
        let rows = try await client.query(
            "UPDATE principals SET password_hash = \(hash) WHERE name = \(name) AND kind = 'user' RETURNING name", logger: logger)
        for try await _ in rows.decode(String.self) { return }
        let principal = try await principal(named: name)
        throw AccessError.invalidArgument(field: "password", detail: "\(principal.kind.rawValue) '\(name)' cannot have a password; only users can")
    }

    public func passwordHash(of name: String) async throws -> String? {
        let rows = try await client.query(
            "SELECT password_hash FROM principals WHERE name = \(name) AND kind = 'user' AND disabled_at IS NULL", logger: logger)
        for try await hash in rows.decode(String?.self) { return hash }
        return nil
    }

    /// A CTE moving on the access version of every workspace where the
    /// principals in `changed` (a CTE with `principal_id`) hold a role — or of
    /// every workspace, for an admin — in the same statement as the change.
    static let bumpAccessOfChanged = """
        bumped AS (
            UPDATE workspaces w SET access_version = w.access_version + 1
            WHERE w.id IN (SELECT b.workspace_id FROM role_bindings b WHERE b.principal_id IN (SELECT principal_id FROM changed))
               OR EXISTS (SELECT 1 FROM principals p WHERE p.id IN (SELECT principal_id FROM changed) AND p.is_admin)
        )
        """

    static let tokenColumns = """
        SELECT t.public_id, p.name, t.description, t.expires_at, t.revoked_at, t.last_used_at, t.created_at, t.created_by, t.audience
        FROM api_tokens t JOIN principals p ON p.id = t.principal_id
        """
    typealias TokenRow = (String, String, String?, Date?, Date?, Date?, Date, String, String)

    static func token(_ row: TokenRow) -> TokenResource {
        TokenResource(
            publicId: row.0, principal: row.1, description: row.2, expiresAt: row.3, revokedAt: row.4, lastUsedAt: row.5,
            createdAt: row.6, createdBy: row.7, audience: TokenAudience(rawValue: row.8) ?? .controlPlane)
    }

    public func createToken(
        _ token: APIToken, for principal: String, description: String?, expiresAt: Date?, audience: TokenAudience, session: Bool, by creator: String
    ) async throws -> TokenResource {
        let rows = try await client.query(
            """
            WITH changed AS (
                INSERT INTO api_tokens (public_id, principal_id, secret_hash, description, expires_at, created_by, audience, session)
                SELECT \(token.publicID), p.id, \(Data(token.secretHash)), \(description), \(expiresAt), \(creator), \(audience.rawValue), \(session)
                FROM principals p WHERE p.name = \(principal)
                RETURNING public_id, principal_id
            ), \(unescaped: Self.bumpAccessOfChanged)
            SELECT public_id FROM changed
            """, logger: logger)
        for try await _ in rows.decode(String.self) {
            return try await tokens(of: principal).first { $0.publicId == token.publicID }!
        }
        throw AccessError.principalNotFound(principal)
    }

    public func revokeSessions(of principal: String, except publicID: String?) async throws -> Int {
        let rows = try await client.query(
            """
            WITH changed AS (
                UPDATE api_tokens t SET revoked_at = now() FROM principals p
                WHERE p.id = t.principal_id AND p.name = \(principal) AND t.session AND t.revoked_at IS NULL
                  AND t.public_id IS DISTINCT FROM \(publicID)
                RETURNING t.principal_id
            ), \(unescaped: Self.bumpAccessOfChanged)
            SELECT count(*)::int FROM changed
            """, logger: logger)
        for try await count in rows.decode(Int.self) { return count }
        return 0
    }

    public func tokens(of principal: String) async throws -> [TokenResource] {
        _ = try await self.principal(named: principal)
        let rows = try await client.query(
            "\(unescaped: Self.tokenColumns) WHERE p.name = \(principal) ORDER BY t.created_at DESC, t.id DESC", logger: logger)
        var tokens: [TokenResource] = []
        for try await row in rows.decode(TokenRow.self) { tokens.append(Self.token(row)) }
        return tokens
    }

    public func revokeToken(publicID: String, of principal: String) async throws -> TokenResource {
        let rows = try await client.query(
            """
            WITH changed AS (
                UPDATE api_tokens t SET revoked_at = coalesce(t.revoked_at, now())
                FROM principals p WHERE p.id = t.principal_id AND p.name = \(principal) AND t.public_id = \(publicID)
                RETURNING t.public_id, t.principal_id
            ), \(unescaped: Self.bumpAccessOfChanged)
            SELECT public_id FROM changed
            """, logger: logger)
        for try await _ in rows.decode(String.self) {
            return try await tokens(of: principal).first { $0.publicId == publicID }!
        }
        throw AccessError.tokenNotFound(publicID)
    }

    public func grant(_ role: WorkspaceRole, to principal: String, in workspace: String, by creator: String) async throws -> RoleBindingResource {
        let target = try await self.principal(named: principal)
        guard target.kind != .agent else {
            throw AccessError.invalidArgument(field: "principal", detail: "agents hold no roles; they act only for their own workspace")
        }
        let rows = try await client.query(
            """
            WITH granted AS (
                INSERT INTO role_bindings (principal_id, workspace_id, role, created_by)
                SELECT p.id, w.id, \(role.rawValue), \(creator) FROM principals p, workspaces w
                WHERE p.name = \(principal) AND w.name = \(workspace)
                ON CONFLICT (principal_id, workspace_id, role) DO UPDATE SET role = EXCLUDED.role
                RETURNING workspace_id, created_at, created_by
            ), bumped AS (
                UPDATE workspaces SET access_version = access_version + 1 WHERE id IN (SELECT workspace_id FROM granted)
            )
            SELECT created_at, created_by FROM granted
            """, logger: logger)
        for try await (createdAt, createdBy) in rows.decode((Date, String).self) {
            return RoleBindingResource(principal: principal, kind: target.kind, workspace: workspace, role: role, createdAt: createdAt, createdBy: createdBy)
        }
        throw RegistryError.workspaceNotFound(workspace)
    }

    public func revoke(_ role: WorkspaceRole, from principal: String, in workspace: String) async throws {
        let rows = try await client.query(
            """
            WITH revoked AS (
                DELETE FROM role_bindings b USING principals p, workspaces w
                WHERE b.principal_id = p.id AND b.workspace_id = w.id AND p.name = \(principal) AND w.name = \(workspace)
                  AND b.role = \(role.rawValue)
                RETURNING b.role, b.workspace_id
            ), bumped AS (
                UPDATE workspaces SET access_version = access_version + 1 WHERE id IN (SELECT workspace_id FROM revoked)
            )
            SELECT role FROM revoked
            """, logger: logger)
        for try await _ in rows.decode(String.self) { return }
        throw AccessError.bindingNotFound("\(principal) has no role \(role.rawValue) in \(workspace)")
    }

    public func bindings(in workspace: String) async throws -> [RoleBindingResource] {
        let rows = try await client.query(
            """
            SELECT p.name, p.kind, b.role, b.created_at, b.created_by
            FROM role_bindings b JOIN principals p ON p.id = b.principal_id JOIN workspaces w ON w.id = b.workspace_id
            WHERE w.name = \(workspace) ORDER BY p.name, b.role
            """, logger: logger)
        var bindings: [RoleBindingResource] = []
        for try await (name, kind, role, createdAt, createdBy) in rows.decode((String, String, String, Date, String).self) {
            guard let kind = PrincipalKind(rawValue: kind), let role = WorkspaceRole(rawValue: role) else { continue }
            bindings.append(RoleBindingResource(principal: name, kind: kind, workspace: workspace, role: role, createdAt: createdAt, createdBy: createdBy))
        }
        // No bindings: a workspace that does not exist is 404 (an admin would otherwise get an empty list).
        if bindings.isEmpty {
            var exists = false
            for try await _ in try await client.query("SELECT 1 FROM workspaces WHERE name = \(workspace)", logger: logger).decode(Int.self) { exists = true }
            if !exists { throw RegistryError.workspaceNotFound(workspace) }
        }
        return bindings
    }

    public func appendAudit(_ entry: AuditRecord) async throws {
        // Bounded fields: a name or path a caller made up is cut, never refused (the record still counts).
        func cut(_ text: String, _ length: Int) -> String { text.count <= length ? text : String(text.prefix(length - 1)) + "…" }
        let insert: PostgresQuery = """
            INSERT INTO audit_log (principal, action, resource, workspace, outcome, status, request_id, client_address, count)
            VALUES (\(cut(entry.principal, 256)), \(cut(entry.action, 256)), \(cut(entry.resource, 1_024)), \(entry.workspace.map { cut($0, 256) }),
                    \(entry.outcome), \(entry.status), \(cut(entry.requestID, 128)), \(entry.clientAddress.map { cut($0, 64) }), \(max(1, entry.count)))
            """
        do {
            try await client.query(insert, logger: logger)
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23514" {
            // No partition for this month yet (the scheduler's leader makes them ahead; none may run): make it, then write.
            try await client.withConnection { connection in
                try await connection.inTransaction(logger: logger) { try await AuditPartitions.ensure(monthOf: Date(), on: $0, logger: logger) }
            }
            try await client.query(insert, logger: logger)
        }
    }

    public func audit(_ filter: AuditFilter) async throws -> Page<AuditEntry> {
        let rows = try await client.query(
            """
            SELECT id, at, principal, action, resource, workspace, outcome, status, request_id, client_address, count FROM audit_log
            WHERE (\(filter.workspace ?? "") = '' OR workspace = \(filter.workspace ?? ""))
              AND (\(filter.principal ?? "") = '' OR principal = \(filter.principal ?? ""))
              AND (\(filter.outcome ?? "") = '' OR outcome = \(filter.outcome ?? ""))
              AND at >= \(filter.since ?? Date(timeIntervalSince1970: 0)) AND id < \(filter.before ?? Int64.max)
            ORDER BY id DESC LIMIT \(filter.limit + 1)
            """, logger: logger)
        var entries: [AuditEntry] = []
        for try await row in rows.decode((Int64, Date, String, String, String, String?, String, Int, String, String?, Int).self) {
            entries.append(AuditEntry(
                id: row.0, at: row.1, principal: row.2, action: row.3, resource: row.4, workspace: row.5, outcome: row.6, status: row.7,
                requestId: row.8, clientAddress: row.9, count: row.10))
        }
        guard entries.count > filter.limit else { return Page(items: entries, nextCursor: nil) }
        let kept = Array(entries.prefix(filter.limit))
        return Page(items: kept, nextCursor: kept.last.map { PageCursor.encode(["\($0.id)"]) })
    }
}

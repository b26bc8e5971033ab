import Foundation
import Logging
import PostgresNIO
import Shared

/// How agents join and leave a workspace.
///
/// - A workspace owner creates a one-time enrollment token for an
///   environment; only its SHA-256 is kept.
/// - The agent's host exchanges it (`POST /v1/enroll`) for a new agent
///   principal and its API token, and the control plane's signing key to
///   pin. The token is marked used in the same transaction, so it works once.
/// - A running agent replaces its token (`POST /v1/agent/credentials`): the
///   new one is issued and the old one expires after a grace period.
/// - Removing an agent disables it and revokes its tokens at once; its
///   leases end, so its jobs go back to the queue.
public struct AgentEnrollment: Sendable {
    let client: PostgresClient
    let logger: Logger
    let keys: SigningKeys

    /// The default and longest lifetimes of an enrollment token.
    static let defaultLifetime: Int64 = 3_600
    static let longestLifetime: Int64 = 7 * 86_400

    /// Creates the enrollment service.
    public init(client: PostgresClient, logger: Logger, keys: SigningKeys) {
        self.client = client
        self.logger = logger
        self.keys = keys
    }

    /// Creates an enrollment token for `request.environment` of `workspace`.
    public func createToken(_ request: CreateEnrollmentTokenRequest, workspace: String, by creator: String, now: Date = Date()) async throws
        -> EnrollmentTokenResource
    {
        guard Identifier.isValidWorkspace(request.environment) else {
            throw AccessError.invalidArgument(field: "environment", detail: "'\(request.environment)' is not a valid environment name")
        }
        if let name = request.agent, !PrincipalName.isValid(name) || AccessRoutes.reservedNames.contains(name) {
            throw AccessError.invalidArgument(field: "agent", detail: "'\(name)' is not a valid name")
        }
        let lifetime = request.ttlSeconds ?? Self.defaultLifetime
        guard (60...Self.longestLifetime).contains(lifetime) else {
            throw AccessError.invalidArgument(field: "ttl_seconds", detail: "an enrollment token lasts from 60 seconds to 7 days")
        }
        let token = APIToken.generate(prefix: APIToken.enrollmentPrefix)
        let expiresAt = now.addingTimeInterval(TimeInterval(lifetime))
        let inserted = try await PostgresFailure.missingReference(is: JobError.environmentNotFound(request.environment)) {
            let rows = try await client.query(
                """
                INSERT INTO enrollment_tokens (public_id, secret_hash, workspace_id, environment, agent_name, created_by, expires_at)
                SELECT \(token.publicID), \(Data(token.secretHash)), w.id, \(request.environment), \(request.agent), \(creator), \(expiresAt)
                FROM workspaces w WHERE w.name = \(workspace)
                RETURNING id
                """, logger: logger)
            for try await _ in rows.decode(Int64.self) { return true }
            return false
        }
        if inserted {
            return EnrollmentTokenResource(
                token: token.text, workspace: workspace, environment: request.environment, agent: request.agent, expiresAt: expiresAt,
                keyFingerprint: try await keys.current().publicKey.fingerprint)
        }
        throw RegistryError.workspaceNotFound(workspace)
    }

    /// Exchanges an enrollment token for a new agent and its API token, in one transaction.
    public func enroll(_ request: EnrollRequest) async throws -> EnrollResponse {
        guard let presented = APIToken(parsing: request.token, prefix: APIToken.enrollmentPrefix) else {
            throw AccessError.invalidArgument(field: "token", detail: "not an enrollment token (they start with \(APIToken.enrollmentPrefix))")
        }
        let key = try await keys.current().publicKey
        let agentToken = APIToken.generate()
        return try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                var found: (id: Int64, hash: Data, workspace: String, environment: String, agent: String?, expired: Bool, used: Bool)?
                for try await row in try await connection.query(
                    """
                    SELECT t.id, t.secret_hash, w.name, t.environment, t.agent_name, t.expires_at <= now(), t.used_at IS NOT NULL
                    FROM enrollment_tokens t JOIN workspaces w ON w.id = t.workspace_id
                    WHERE t.public_id = \(presented.publicID) FOR UPDATE OF t
                    """, logger: logger).decode((Int64, Data, String, String, String?, Bool, Bool).self) {
                    found = row
                }
                guard let found, presented.matches(storedHash: Array(found.hash)) else {
                    throw AccessError.unauthenticated("the enrollment token is not valid")
                }
                guard !found.used else { throw AccessError.unauthenticated("the enrollment token was already used; ask for a new one") }
                guard !found.expired else { throw AccessError.unauthenticated("the enrollment token has expired; ask for a new one") }
                let name = found.agent ?? Self.generatedName(environment: found.environment)
                var created = false
                for try await _ in try await connection.query(
                    """
                    INSERT INTO principals (name, kind, workspace_id, environment, description, created_by)
                    SELECT \(name), 'agent', w.id, \(found.environment), \("enrolled from " + String(request.hostname.prefix(200))), 'enrollment'
                    FROM workspaces w WHERE w.name = \(found.workspace)
                    ON CONFLICT (name) DO NOTHING RETURNING id
                    """, logger: logger).decode(Int64.self) {
                    created = true
                }
                guard created else { throw AccessError.principalExists(name) }
                try await connection.query(
                    """
                    INSERT INTO api_tokens (public_id, principal_id, secret_hash, description, created_by)
                    SELECT \(agentToken.publicID), p.id, \(Data(agentToken.secretHash)), 'agent credentials from enrollment', 'enrollment'
                    FROM principals p WHERE p.name = \(name)
                    """, logger: logger)
                try await connection.query(
                    "UPDATE enrollment_tokens SET used_at = now(), used_by = \(name) WHERE id = \(found.id)", logger: logger)
                logger.notice("agent enrolled", metadata: [
                    "larder.agent": .string(name), "larder.workspace": .string(found.workspace), "larder.environment": .string(found.environment),
                ])
                return EnrollResponse(
                    agent: name, workspace: found.workspace, environment: found.environment, token: agentToken.text, publicKey: key.description,
                    keyFingerprint: key.fingerprint)
            }
        }
    }

    /// `<environment>-<6 random characters>`.
    static func generatedName(environment: String) -> String {
        let suffix = APIToken.generate().publicID.prefix(6)
        return "\(environment.prefix(40))-\(suffix)"
    }

    /// Issues a new token for the agent presenting token `publicID`, and
    /// makes that one expire after `grace` seconds.
    public func rotate(agent: String, presented publicID: String, grace: Int64, now: Date = Date()) async throws -> RotateCredentialsResponse {
        guard (0...3_600).contains(grace) else {
            throw AccessError.invalidArgument(field: "grace_seconds", detail: "the old token may stay valid from 0 to 3600 seconds")
        }
        let fresh = APIToken.generate()
        let previousExpiry = now.addingTimeInterval(TimeInterval(grace))
        return try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                // A token past half its life may not end itself at once: a thief holding an old copy
                // cannot cut the running agent off (with a grace period, the agent sees the rotation).
                if grace == 0 {
                    for try await (created, expires) in try await connection.query(
                        "SELECT created_at, expires_at FROM api_tokens WHERE public_id = \(publicID)", logger: logger
                    ).decode((Date, Date?).self) {
                        if let expires, now > created.addingTimeInterval(expires.timeIntervalSince(created) / 2) {
                            throw AccessError.invalidArgument(
                                field: "grace_seconds", detail: "this token is past half its life: rotate with a grace period of at least 1 second")
                        }
                    }
                }
                var rotated = false
                for try await _ in try await connection.query(
                    """
                    UPDATE api_tokens t SET expires_at = LEAST(coalesce(t.expires_at, \(previousExpiry)), \(previousExpiry))
                    FROM principals p
                    WHERE p.id = t.principal_id AND p.name = \(agent) AND p.kind = 'agent' AND t.public_id = \(publicID) AND t.revoked_at IS NULL
                    RETURNING t.id
                    """, logger: logger).decode(Int64.self) {
                    rotated = true
                }
                guard rotated else { throw AccessError.unauthenticated("only an agent's own token can be rotated") }
                try await connection.query(
                    """
                    INSERT INTO api_tokens (public_id, principal_id, secret_hash, description, created_by)
                    SELECT \(fresh.publicID), p.id, \(Data(fresh.secretHash)), 'agent credentials, rotated', \(agent)
                    FROM principals p WHERE p.name = \(agent)
                    """, logger: logger)
                return RotateCredentialsResponse(token: fresh.text, previousExpiresAt: previousExpiry)
            }
        }
    }

    /// Removes agent `name` of `workspace`: disabled, every token revoked,
    /// its session dropped and its leases ended (their jobs are queued again
    /// by the scheduler's next lease sweep), in one transaction.
    public func remove(agent name: String, workspace: String) async throws {
        try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                var principal: Int64?
                for try await id in try await connection.query(
                    """
                    UPDATE principals p SET disabled_at = coalesce(p.disabled_at, now())
                    FROM workspaces w WHERE w.id = p.workspace_id AND w.name = \(workspace) AND p.name = \(name) AND p.kind = 'agent'
                    RETURNING p.id
                    """, logger: logger).decode(Int64.self) {
                    principal = id
                }
                guard let principal else { throw AccessError.principalNotFound(name) }
                try await connection.query(
                    "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE principal_id = \(principal)", logger: logger)
                try await connection.query("DELETE FROM agent_sessions WHERE principal_id = \(principal)", logger: logger)
                try await connection.query(
                    "UPDATE jobs SET lease_expires_at = now() WHERE lease_agent = \(name) AND lease_token IS NOT NULL", logger: logger)
            }
        }
        logger.notice("agent removed", metadata: ["larder.agent": .string(name), "larder.workspace": .string(workspace)])
    }
}

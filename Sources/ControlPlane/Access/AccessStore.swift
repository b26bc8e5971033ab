import Foundation
import Shared

/// What the control plane keeps about identities and access.
/// `PostgresAccessStore` is the implementation.
public protocol AccessStore: Sendable {
    /// Creates the first admin with `token` (expiring at `expiresAt`) if there
    /// are no principals yet; returns whether it did.
    func bootstrapAdmin(name: String, token: APIToken, expiresAt: Date?) async throws -> Bool

    /// The caller a token belongs to, or nil when the token is unknown,
    /// revoked, expired, or its principal disabled. Records the token's use.
    /// Throws `AccessError.agentRemoved` for a removed agent's own token.
    func caller(for token: APIToken, now: Date) async throws -> Caller?

    /// Creates a user or service account.
    func createPrincipal(_ request: CreatePrincipalRequest, passwordHash: String?, by creator: String) async throws -> PrincipalResource
    /// Creates an agent principal of a workspace.
    func createAgent(_ request: CreateAgentRequest, workspace: String, by creator: String) async throws -> PrincipalResource
    /// Principals, by name; agents of one workspace when `agentsOf` is set.
    func principals(agentsOf workspace: String?) async throws -> [PrincipalResource]
    /// One principal.
    func principal(named name: String) async throws -> PrincipalResource
    /// Disables a principal: its tokens stop working at once.
    func disablePrincipal(named name: String) async throws
    /// Sets a user's password hash.
    func setPasswordHash(_ hash: String, for name: String) async throws
    /// A user's password hash, if the user exists, is enabled and has one.
    func passwordHash(of name: String) async throws -> String?

    /// Stores a new token of a principal (a login's `session`).
    func createToken(
        _ token: APIToken, for principal: String, description: String?, expiresAt: Date?, audience: TokenAudience, session: Bool, by creator: String
    ) async throws -> TokenResource
    /// Revokes a user's sessions but `except`; returns how many.
    func revokeSessions(of principal: String, except publicID: String?) async throws -> Int
    /// A principal's tokens, newest first.
    func tokens(of principal: String) async throws -> [TokenResource]
    /// Revokes a token; it stops working on the next request.
    func revokeToken(publicID: String, of principal: String) async throws -> TokenResource

    /// Grants a role in a workspace.
    func grant(_ role: WorkspaceRole, to principal: String, in workspace: String, by creator: String) async throws -> RoleBindingResource
    /// Revokes a role in a workspace.
    func revoke(_ role: WorkspaceRole, from principal: String, in workspace: String) async throws
    /// The workspace's role bindings.
    func bindings(in workspace: String) async throws -> [RoleBindingResource]

    /// Appends an audit record.
    func appendAudit(_ entry: AuditRecord) async throws
    /// Audit records matching `filter`, newest first.
    func audit(_ filter: AuditFilter) async throws -> Page<AuditEntry>
}

/// An audit record to append.
public struct AuditRecord: Sendable {
    public var principal: String
    public var action: String
    public var resource: String
    public var workspace: String?
    public var outcome: String
    public var status: Int
    public var requestID: String
    public var clientAddress: String?
    /// How many attempts the record stands for (failed authentications are counted per minute).
    public var count = 1
}

/// Which audit records to list.
public struct AuditFilter: Sendable {
    public var workspace: String?
    public var principal: String?
    public var outcome: String?
    public var since: Date?
    public var before: Int64?
    public var limit: Int
}

/// Identity and access errors; mapped to HTTP in `AccessError+HTTP.swift`.
public enum AccessError: Error, Sendable, Equatable {
    /// No credentials, or credentials that do not identify anyone.
    case unauthenticated(String)
    /// Authenticated, but the role does not allow it.
    case forbidden(String)
    /// The caller may not see the workspace (answered like a missing one).
    case hiddenWorkspace(String)
    /// Too many failed attempts from this address.
    case tooManyFailures(retryAfterSeconds: Int)
    /// The token is a removed (or disabled) agent's: it should stop asking.
    case agentRemoved(String)
    /// The token works only on agents' feature servers (its audience is the data plane).
    case wrongAudience
    /// No such principal.
    case principalNotFound(String)
    /// The name is taken.
    case principalExists(String)
    /// No such token of that principal.
    case tokenNotFound(String)
    /// No such role binding.
    case bindingNotFound(String)
    /// A request field is invalid.
    case invalidArgument(field: String, detail: String)
}

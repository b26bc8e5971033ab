import Foundation

/// What kind of principal an identity is.
public enum PrincipalKind: String, Sendable, Codable, CaseIterable {
    /// A person. May have a password (for `larder login`) and tokens.
    case user
    /// A machine identity: tokens only, never a password.
    case serviceAccount = "service_account"
    /// A data-plane agent of one workspace and environment: may call only the agent protocol.
    case agent
}

/// Where a token works. A token used at agents' feature servers (a model
/// server's) should be useless against the control plane when it leaks
/// there, and agents should hold no hash of tokens they never see.
public enum TokenAudience: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// The control plane's API only; agents never learn of it.
    case controlPlane = "control-plane"
    /// Agents' feature servers only; the control plane answers it on `whoami` alone.
    case dataPlane = "data-plane"
    /// Both.
    case both
    /// The control plane's `/metrics` only (a Prometheus scrape token), and `whoami`.
    case metrics

    /// Whether the control plane's API takes it (on every route its principal may use).
    public var includesControlPlane: Bool { self == .controlPlane || self == .both }
    /// Whether agents take it (it is in their access snapshots).
    public var includesDataPlane: Bool { self == .dataPlane || self == .both }

    public var description: String { rawValue }
}

/// A workspace role. Each includes the ones listed as included; see `docs/access-control.md`.
public enum WorkspaceRole: String, Sendable, Codable, CaseIterable, Comparable {
    /// Read definitions, versions, lineage, jobs and metrics.
    case viewer
    /// Viewer, and read feature values (enforced by agents).
    case consumer
    /// Viewer, and trigger, cancel and retry jobs.
    case `operator`
    /// Operator and consumer, and plan and apply.
    case editor
    /// Editor, and manage the workspace's role bindings.
    case owner

    /// The roles this role grants, itself included.
    public var granted: Set<WorkspaceRole> {
        switch self {
        case .viewer: return [.viewer]
        case .consumer: return [.viewer, .consumer]
        case .operator: return [.viewer, .operator]
        case .editor: return [.viewer, .consumer, .operator, .editor]
        case .owner: return Set(WorkspaceRole.allCases)
        }
    }

    public static func < (lhs: WorkspaceRole, rhs: WorkspaceRole) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// A principal: a user, service account or agent.
public struct PrincipalResource: Sendable, Codable, Hashable {
    /// The unique name.
    public var name: String
    /// What it is.
    public var kind: PrincipalKind
    /// Whether it holds the instance role `admin`.
    public var admin: Bool
    /// For agents: the workspace it serves.
    public var workspace: String?
    /// For agents: the environment it runs in (such as `prod-eu`).
    public var environment: String?
    /// Free-text description.
    public var description: String?
    /// Whether it has a password (users only).
    public var hasPassword: Bool
    /// When it was disabled, if it is; a disabled principal's tokens stop working.
    public var disabledAt: Date?
    /// When it was created.
    public var createdAt: Date
    /// Who created it.
    public var createdBy: String

    /// Creates a principal resource.
    public init(
        name: String, kind: PrincipalKind, admin: Bool, workspace: String?, environment: String?, description: String?,
        hasPassword: Bool, disabledAt: Date?, createdAt: Date, createdBy: String
    ) {
        self.name = name
        self.kind = kind
        self.admin = admin
        self.workspace = workspace
        self.environment = environment
        self.description = description
        self.hasPassword = hasPassword
        self.disabledAt = disabledAt
        self.createdAt = createdAt
        self.createdBy = createdBy
    }
}

/// `POST /v1/principals`: a user or service account (agents are created per workspace).
public struct CreatePrincipalRequest: Sendable, Codable {
    /// The unique name: lowercase letters, digits, `_`, `-`, `.` and `@`.
    public var name: String
    /// `user` or `service_account`.
    public var kind: PrincipalKind
    /// Whether to grant the instance role `admin`.
    public var admin: Bool?
    /// Free-text description.
    public var description: String?
    /// A password (users only), at least 12 characters.
    public var password: String?

    /// Creates a request.
    public init(name: String, kind: PrincipalKind, admin: Bool? = nil, description: String? = nil, password: String? = nil) {
        self.name = name
        self.kind = kind
        self.admin = admin
        self.description = description
        self.password = password
    }
}

/// `POST /v1/workspaces/{ws}/agents`.
public struct CreateAgentRequest: Sendable, Codable {
    /// The agent's name (unique among principals).
    public var name: String
    /// The environment it runs in.
    public var environment: String

    /// Creates a request.
    public init(name: String, environment: String) {
        self.name = name
        self.environment = environment
    }
}

/// An API token as listed: never its secret.
public struct TokenResource: Sendable, Codable, Hashable {
    /// The public id, also the token's recognizable prefix (`lrd_<public id>_…`).
    public var publicId: String
    /// Whose token it is.
    public var principal: String
    /// Free-text description.
    public var description: String?
    /// When it stops working, if ever.
    public var expiresAt: Date?
    /// When it was revoked, if it was.
    public var revokedAt: Date?
    /// When it was last used (updated at most once a minute).
    public var lastUsedAt: Date?
    /// When it was created.
    public var createdAt: Date
    /// Who created it.
    public var createdBy: String
    /// Where it works.
    public var audience: TokenAudience

    /// Creates a token resource.
    public init(
        publicId: String, principal: String, description: String?, expiresAt: Date?, revokedAt: Date?, lastUsedAt: Date?,
        createdAt: Date, createdBy: String, audience: TokenAudience = .controlPlane
    ) {
        self.audience = audience
        self.publicId = publicId
        self.principal = principal
        self.description = description
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
        self.lastUsedAt = lastUsedAt
        self.createdAt = createdAt
        self.createdBy = createdBy
    }
}

/// `POST /v1/principals/{name}/tokens`.
public struct CreateTokenRequest: Sendable, Codable {
    /// Free-text description (where the token is used).
    public var description: String?
    /// Lifetime in seconds; none means the token does not expire.
    public var expiresInSeconds: Int?
    /// Where it works (default: the control plane only).
    public var audience: TokenAudience?
    /// The caller's password, given again: without it, a token made with a
    /// session (`larder login`) expires no later than the session.
    public var password: String?

    /// Creates a request.
    public init(description: String? = nil, expiresInSeconds: Int? = nil, audience: TokenAudience? = nil, password: String? = nil) {
        self.description = description
        self.expiresInSeconds = expiresInSeconds
        self.audience = audience
        self.password = password
    }
}

/// A newly created token: the only time its secret is shown.
public struct CreatedToken: Sendable, Codable {
    /// The token to send as `Authorization: Bearer <token>`. Shown once, stored only as a hash.
    public var token: String
    /// Its listing.
    public var resource: TokenResource

    /// Creates a created token.
    public init(token: String, resource: TokenResource) {
        self.token = token
        self.resource = resource
    }
}

/// `POST /v1/login`: exchanges a user's password for a session token.
public struct LoginRequest: Sendable, Codable {
    /// The user's name.
    public var name: String
    /// The user's password.
    public var password: String
    /// Session lifetime in seconds (default 12 hours, at most 30 days).
    public var expiresInSeconds: Int?

    /// Creates a request.
    public init(name: String, password: String, expiresInSeconds: Int? = nil) {
        self.name = name
        self.password = password
        self.expiresInSeconds = expiresInSeconds
    }
}

/// `PUT /v1/principals/{name}/password`.
public struct SetPasswordRequest: Sendable, Codable {
    /// The new password, at least 12 characters.
    public var password: String
    /// The current password: needed to change one's own.
    public var currentPassword: String?

    /// Creates a request.
    public init(password: String, currentPassword: String? = nil) {
        self.password = password
        self.currentPassword = currentPassword
    }
}

/// One role binding: a principal holds a role in a workspace.
public struct RoleBindingResource: Sendable, Codable, Hashable {
    /// The principal's name.
    public var principal: String
    /// The principal's kind.
    public var kind: PrincipalKind
    /// The workspace.
    public var workspace: String
    /// The role.
    public var role: WorkspaceRole
    /// When it was granted.
    public var createdAt: Date
    /// Who granted it.
    public var createdBy: String

    /// Creates a binding resource.
    public init(principal: String, kind: PrincipalKind, workspace: String, role: WorkspaceRole, createdAt: Date, createdBy: String) {
        self.principal = principal
        self.kind = kind
        self.workspace = workspace
        self.role = role
        self.createdAt = createdAt
        self.createdBy = createdBy
    }
}

/// `POST /v1/workspaces/{ws}/access`.
public struct GrantRequest: Sendable, Codable {
    /// The principal to grant the role to.
    public var principal: String
    /// The role.
    public var role: WorkspaceRole

    /// Creates a request.
    public init(principal: String, role: WorkspaceRole) {
        self.principal = principal
        self.role = role
    }
}

/// `GET /v1/whoami`.
public struct WhoAmIResource: Sendable, Codable {
    /// The caller.
    public var principal: PrincipalResource
    /// The caller's roles by workspace.
    public var roles: [String: [WorkspaceRole]]
    /// The public id of the token used.
    public var tokenPublicId: String

    /// Creates a resource.
    public init(principal: PrincipalResource, roles: [String: [WorkspaceRole]], tokenPublicId: String) {
        self.principal = principal
        self.roles = roles
        self.tokenPublicId = tokenPublicId
    }
}

/// One audit record: who did what to what, and how it ended.
public struct AuditEntry: Sendable, Codable, Hashable {
    /// Its sequence number.
    public var id: Int64
    /// When.
    public var at: Date
    /// The principal's name, or `anonymous`.
    public var principal: String
    /// The action: `METHOD /route/{template}`.
    public var action: String
    /// The resource: the request's path.
    public var resource: String
    /// The workspace concerned, if any.
    public var workspace: String?
    /// `success`, `failure` (the request failed), or `denied` (authentication or authorization failed).
    public var outcome: String
    /// The HTTP status answered.
    public var status: Int
    /// The request id.
    public var requestId: String
    /// The client's address.
    public var clientAddress: String?
    /// How many attempts it stands for: failed authentications are counted per source and minute.
    public var count: Int

    /// Creates an entry.
    public init(
        id: Int64, at: Date, principal: String, action: String, resource: String, workspace: String?, outcome: String, status: Int,
        requestId: String, clientAddress: String?, count: Int = 1
    ) {
        self.count = count
        self.id = id
        self.at = at
        self.principal = principal
        self.action = action
        self.resource = resource
        self.workspace = workspace
        self.outcome = outcome
        self.status = status
        self.requestId = requestId
        self.clientAddress = clientAddress
    }
}

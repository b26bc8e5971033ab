import Foundation
import Shared

/// The authenticated principal of a request, with everything authorization
/// needs, read in one go when its token is checked.
public struct Caller: Sendable, Hashable {
    /// The principal's name.
    public let name: String
    /// What it is.
    public let kind: PrincipalKind
    /// Whether it holds the instance role `admin`.
    public let isAdmin: Bool
    /// Its roles per workspace, each expanded to the roles it includes.
    public let roles: [String: Set<WorkspaceRole>]
    /// For agents: the workspace it serves.
    public let agentWorkspace: String?
    /// The public id of the token it used.
    public let tokenPublicID: String
    /// Where that token works: a data-plane token gets nothing here but `whoami`.
    public let audience: TokenAudience
    /// For agents: everything the agent protocol needs to know of it, read
    /// with the token, so its requests need no further lookup.
    public let agent: AgentIdentity?
    /// Whether the token is a session from `POST /v1/login`.
    public var isSession = false
    /// When the token expires, if it does.
    public var tokenExpiresAt: Date?

    /// Creates a caller.
    public init(
        name: String, kind: PrincipalKind, isAdmin: Bool, roles: [String: Set<WorkspaceRole>], agentWorkspace: String?, tokenPublicID: String,
        audience: TokenAudience = .controlPlane, agent: AgentIdentity? = nil
    ) {
        self.audience = audience
        self.name = name
        self.kind = kind
        self.isAdmin = isAdmin
        self.roles = roles
        self.agentWorkspace = agentWorkspace
        self.tokenPublicID = tokenPublicID
        self.agent = agent
    }

    /// Whether the caller may see the workspace at all.
    public func canSee(workspace: String) -> Bool {
        isAdmin || !(roles[workspace] ?? []).isEmpty
    }
}

/// Principal names: lowercase letters, digits, `.`, `_`, `-` and `@`, starting
/// with a letter or digit, at most 63 characters (so e-mail addresses work).
enum PrincipalName {
    static func isValid(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.unicodeScalars.count <= 63 else { return false }
        let lowerOrDigit: (Unicode.Scalar) -> Bool = { ("a"..."z").contains($0) || ("0"..."9").contains($0) }
        return lowerOrDigit(first) && name.unicodeScalars.allSatisfy { lowerOrDigit($0) || ".-_@".unicodeScalars.contains($0) }
    }
}

/// An agent principal, as the agent protocol needs it.
public struct AgentIdentity: Sendable, Hashable {
    /// The principal's id.
    public var principalID: Int64
    /// Its name.
    public var name: String
    /// Its workspace's id.
    public var workspaceID: Int64
    /// Its workspace's name.
    public var workspace: String
    /// Its environment.
    public var environment: String
}

import Foundation

/// Who may read a workspace's features, as the control plane signs it for the
/// workspace's agents: each valid token of a principal holding a role in the
/// workspace, or of an admin, with the roles (so that an agent can answer a
/// member without `consumer` with 403, and anyone else with 401). Tokens
/// appear by public id and the SHA-256 of their secret only, never the
/// secret; an agent authorizes feature reads from it without asking the
/// control plane, until `expiresAt`.
public struct AccessSnapshot: Sendable, Hashable, Codable, SignedPayload {
    public static let signingDomain = "larder.access-snapshot.v1"

    /// One token that may read features.
    public struct Entry: Sendable, Hashable, Codable {
        /// The token's public id (the part after `lrd_`).
        public var tokenPublicId: String
        /// The SHA-256 of the token's secret, base64url without padding.
        public var secretSha256: String
        /// The principal the token belongs to.
        public var principal: String
        /// The principal's roles in the workspace, with the roles they include (every role for an admin).
        public var roles: [WorkspaceRole]
        /// When the token stops being valid, if ever.
        public var tokenExpiresAt: Date?

        /// Creates an entry.
        public init(tokenPublicId: String, secretSha256: String, principal: String, roles: [WorkspaceRole], tokenExpiresAt: Date?) {
            self.tokenPublicId = tokenPublicId
            self.secretSha256 = secretSha256
            self.principal = principal
            self.roles = roles
            self.tokenExpiresAt = tokenExpiresAt
        }
    }

    /// The workspace it is for.
    public var workspace: String
    /// The workspace's access version it was built at.
    public var version: Int64
    /// When it was built.
    public var issuedAt: Date
    /// After this instant an agent must not use it (it fails closed).
    public var expiresAt: Date
    /// The tokens that may read features, by public id.
    public var entries: [Entry]

    /// Creates a snapshot.
    public init(workspace: String, version: Int64, issuedAt: Date, expiresAt: Date, entries: [Entry]) {
        self.workspace = workspace
        self.version = version
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
        self.entries = entries
    }
}

/// `POST /v1/agent/access-snapshot`: the workspace's access snapshot, unless
/// the agent already holds `haveVersion`.
public struct AccessSnapshotRequest: Sendable, Codable, Hashable {
    /// The process id from the hello.
    public var instanceId: String
    /// The version the agent holds, if any.
    public var haveVersion: Int64?

    /// Creates a request.
    public init(instanceId: String, haveVersion: Int64?) {
        self.instanceId = instanceId
        self.haveVersion = haveVersion
    }
}

/// The answer: the current version, and the signed snapshot when the agent's is older.
public struct AccessSnapshotReply: Sendable, Codable, Hashable {
    /// The workspace's access version.
    public var version: Int64
    /// The signed `AccessSnapshot`; nil when the agent already holds `version`.
    public var snapshot: SignedDocument?

    /// Creates a reply.
    public init(version: Int64, snapshot: SignedDocument?) {
        self.version = version
        self.snapshot = snapshot
    }
}

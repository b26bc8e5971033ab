import Foundation

/// A workspace's registry as the control plane signs it for the workspace's
/// agents: the current version of every object (entities, sources, feature
/// views, on-demand views, feature services), with its canonical spec. An
/// agent resolves feature requests from it without asking the control plane.
public struct AgentRegistrySnapshot: Sendable, Hashable, Codable, SignedPayload {
    public static let signingDomain = "larder.registry-snapshot.v1"

    /// The workspace it is for.
    public var workspace: String
    /// The workspace's registry revision it was built at (every apply that changes something moves it on).
    public var revision: Int64
    /// When it was built.
    public var issuedAt: Date
    /// The current version of each object.
    public var definitions: [JobSpec.Definition]

    /// Creates a snapshot.
    public init(workspace: String, revision: Int64, issuedAt: Date, definitions: [JobSpec.Definition]) {
        self.workspace = workspace
        self.revision = revision
        self.issuedAt = issuedAt
        self.definitions = definitions
    }
}

/// `POST /v1/agent/registry-snapshot`: the workspace's registry snapshot,
/// unless the agent already holds `haveRevision`.
public struct RegistrySnapshotRequest: Sendable, Codable, Hashable {
    /// The process id from the hello.
    public var instanceId: String
    /// The revision the agent holds, if any.
    public var haveRevision: Int64?

    /// Creates a request.
    public init(instanceId: String, haveRevision: Int64?) {
        self.instanceId = instanceId
        self.haveRevision = haveRevision
    }
}

/// The answer: the current revision, and the signed snapshot when the agent's is older.
public struct RegistrySnapshotReply: Sendable, Codable, Hashable {
    /// The workspace's registry revision.
    public var revision: Int64
    /// The signed `AgentRegistrySnapshot`; nil when the agent already holds `revision`.
    public var snapshot: SignedDocument?

    /// Creates a reply.
    public init(revision: Int64, snapshot: SignedDocument?) {
        self.revision = revision
        self.snapshot = snapshot
    }
}

import Foundation

/// Where an environment's agents keep the online store.
public enum OnlineStoreKind: String, Sendable, Codable, Hashable, CaseIterable {
    /// In the agent's own memory and disk: the fastest, but one agent per environment.
    case embedded
    /// One Redis (or Valkey) shared by every agent of the environment.
    case redis
}

/// `POST /v1/workspaces/{ws}/environments`: a new environment of a workspace.
public struct CreateEnvironmentRequest: Sendable, Codable, Hashable {
    /// Its name (such as `prod` or `staging-eu`).
    public var name: String
    /// Its online store; absent: `embedded`.
    public var onlineStore: OnlineStoreKind?
    /// What it is for.
    public var description: String?

    /// Creates a request.
    public init(name: String, onlineStore: OnlineStoreKind? = nil, description: String? = nil) {
        self.name = name
        self.onlineStore = onlineStore
        self.description = description
    }
}

/// An environment of a workspace: a place its data plane runs, with its own
/// offline and online stores and its agents. Every materialization is queued
/// once per environment.
public struct EnvironmentResource: Sendable, Codable, Hashable {
    public var name: String
    public var workspace: String
    /// Its online store.
    public var onlineStore: OnlineStoreKind
    public var description: String
    /// With an embedded store: the one agent that writes it, once one said hello.
    public var writer: String?
    /// Its agents (not removed), with what they last said.
    public var agents: [AgentResource]
    /// Materializations of its own queued, leased or running now.
    public var activeJobs: Int
    public var createdAt: Date
    public var createdBy: String

    /// Creates a resource.
    public init(
        name: String, workspace: String, onlineStore: OnlineStoreKind, description: String, writer: String?, agents: [AgentResource],
        activeJobs: Int, createdAt: Date, createdBy: String
    ) {
        self.name = name
        self.workspace = workspace
        self.onlineStore = onlineStore
        self.description = description
        self.writer = writer
        self.agents = agents
        self.activeJobs = activeJobs
        self.createdAt = createdAt
        self.createdBy = createdBy
    }
}

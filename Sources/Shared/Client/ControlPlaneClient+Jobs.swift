import Foundation

extension ControlPlaneClient {
    // MARK: Jobs (operators)

    /// A page of the workspace's jobs, newest first.
    public func jobs(
        workspace: String, state: JobState? = nil, view: String? = nil, kind: JobKind? = nil, parent: Int64? = nil,
        environment: String? = nil, cursor: String? = nil, limit: Int = 100
    ) async throws -> Page<JobResource> {
        try await send(
            .GET, "/v1/workspaces/\(Self.segment(workspace))/jobs",
            query: [("state", state?.rawValue), ("view", view), ("kind", kind?.rawValue), ("parent", parent.map(String.init)),
                    ("environment", environment), ("cursor", cursor), ("limit", "\(limit)")])
    }

    /// A job with its attempts and events.
    public func job(_ id: Int64, workspace: String) async throws -> JobDetailResource {
        try await send(.GET, "/v1/workspaces/\(Self.segment(workspace))/jobs/\(id)")
    }

    /// Cancels a job.
    public func cancelJob(_ id: Int64, workspace: String) async throws -> JobResource {
        try await send(.POST, "/v1/workspaces/\(Self.segment(workspace))/jobs/\(id)/cancel")
    }

    /// Queues a finished job again.
    public func retryJob(_ id: Int64, workspace: String) async throws -> JobResource {
        try await send(.POST, "/v1/workspaces/\(Self.segment(workspace))/jobs/\(id)/retry")
    }

    /// Materializes a feature view over a range of event time, in chunks.
    public func materialize(_ request: MaterializeRequest, workspace: String) async throws -> MaterializeResponse {
        try await send(.POST, "/v1/workspaces/\(Self.segment(workspace))/materializations", body: request)
    }

    /// Queues a dataset job.
    public func createDataset(_ request: CreateDatasetRequest, workspace: String) async throws -> JobResource {
        try await send(.POST, "/v1/workspaces/\(Self.segment(workspace))/datasets", body: request)
    }

    /// Each current feature view's freshness.
    public func freshness(workspace: String) async throws -> [FeatureViewFreshness] {
        try await send(.GET, "/v1/workspaces/\(Self.segment(workspace))/freshness")
    }

    /// The data quality of each current feature view that declares expectations.
    public func expectations(workspace: String) async throws -> [FeatureViewQuality] {
        try await send(.GET, "/v1/workspaces/\(Self.segment(workspace))/expectations")
    }

    /// Alerts, newest first: open ones unless `all`.
    public func alerts(workspace: String?, all: Bool = false, limit: Int = 100) async throws -> [AlertResource] {
        try await send(.GET, "/v1/alerts", query: [("workspace", workspace), ("state", all ? "all" : "open"), ("limit", "\(limit)")])
    }

    /// The workspace's agents and their status.
    public func agents(workspace: String) async throws -> [AgentResource] {
        try await send(.GET, "/v1/workspaces/\(Self.segment(workspace))/agents")
    }

    /// The workspace's environments.
    public func environments(workspace: String) async throws -> [EnvironmentResource] {
        try await send(.GET, "/v1/workspaces/\(Self.segment(workspace))/environments")
    }

    /// One environment of the workspace, with its agents.
    public func environment(_ name: String, workspace: String) async throws -> EnvironmentResource {
        try await send(.GET, "/v1/workspaces/\(Self.segment(workspace))/environments/\(Self.segment(name))")
    }

    /// Creates an environment (workspace owners).
    public func createEnvironment(_ request: CreateEnvironmentRequest, workspace: String) async throws -> EnvironmentResource {
        try await send(.POST, "/v1/workspaces/\(Self.segment(workspace))/environments", body: request)
    }

    /// Deletes an environment that has no agents (workspace owners).
    public func deleteEnvironment(_ name: String, workspace: String) async throws {
        try await sendRaw(.DELETE, "/v1/workspaces/\(Self.segment(workspace))/environments/\(Self.segment(name))")
    }

    // MARK: The agent protocol (agent tokens)

    /// Announces an agent process.
    public func hello(_ hello: AgentHello) async throws -> AgentWelcome {
        try await send(.POST, "/v1/agent/hello", body: hello)
    }

    /// Reports that the agent is alive and which jobs it runs.
    public func heartbeat(_ heartbeat: AgentHeartbeat) async throws -> AgentHeartbeatReply {
        try await send(.POST, "/v1/agent/heartbeat", body: heartbeat)
    }

    /// The workspace's signed access snapshot, unless `request.haveVersion` is current.
    public func accessSnapshot(_ request: AccessSnapshotRequest) async throws -> AccessSnapshotReply {
        try await send(.POST, "/v1/agent/access-snapshot", body: request)
    }

    /// The workspace's signed registry snapshot, unless `request.haveRevision` is current.
    public func registrySnapshot(_ request: RegistrySnapshotRequest) async throws -> RegistrySnapshotReply {
        try await send(.POST, "/v1/agent/registry-snapshot", body: request)
    }

    /// Claims a job, waiting up to `request.waitSeconds` for one.
    public func claim(_ request: ClaimRequest) async throws -> ClaimedJob? {
        try await send(.POST, "/v1/agent/jobs:claim", body: request, as: ClaimResponse.self).job
    }

    /// Extends a lease.
    public func extendLease(job: Int64, token: UUID) async throws -> LeaseStatus {
        try await send(.POST, "/v1/agent/jobs/\(job)/lease", body: LeaseExtension(leaseToken: token))
    }

    /// Reports progress (and extends the lease).
    public func reportProgress(job: Int64, token: UUID, progress: JobProgress) async throws -> LeaseStatus {
        try await send(.POST, "/v1/agent/jobs/\(job)/progress", body: LeaseExtension(leaseToken: token, progress: progress))
    }

    /// Ends an attempt.
    public func complete(job: Int64, _ completion: JobCompletion) async throws -> JobResource {
        try await send(.POST, "/v1/agent/jobs/\(job)/complete", body: completion)
    }
}

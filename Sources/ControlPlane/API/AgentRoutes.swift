import Foundation
import Hummingbird
import Shared

/// The agent protocol. Agents call out to these routes only; each acts for the
/// workspace its token belongs to. Bodies are decoded strictly: a field the
/// protocol does not declare is refused, so no feature values can cross.
struct AgentRoutes {
    let store: PostgresJobStore
    let wakeups: JobWakeups
    let settings: JobSettings
    let keys: SigningKeys

    func register(on routes: inout APIRouteBuilder) {
        let store = self.store, wakeups = self.wakeups, settings = self.settings, keys = self.keys
        let snapshots = AccessSnapshots(client: store.client, logger: store.logger)
        let registry = AgentRegistrySnapshots(client: store.client, logger: store.logger)
        @Sendable func identity(_ context: ControlPlaneRequestContext) async throws -> AgentIdentity {
            // Read with the token; only an agent's token gets past the route's permission.
            guard let agent = context.caller?.agent else { throw JobError.unknownAgent(context.callerName) }
            return agent
        }
        routes.add(.post, "/v1/agent/hello", permission: .agentProtocol) { request, context in
            let hello = try await request.decodeStrictBody(as: AgentHello.self, context: context)
            let agent = try await identity(context)
            try Self.check(instanceID: hello.instanceId)
            try Self.check(agentVersion: hello.version)
            try await PostgresEnvironmentStore(jobs: store).admit(agent, onlineStore: hello.onlineStore ?? .embedded)
            try await store.hello(hello, agent: agent)
            let fingerprint = try await keys.current().publicKey.fingerprint
            let announcement = try await keys.announcement()
            context.logger.info("agent said hello", metadata: [
                "larder.agent": .string(agent.name), "larder.instance": .string(hello.instanceId), "larder.agent_version": .string(hello.version),
            ])
            return try APIResponse.json(AgentWelcome(
                agent: agent.name, workspace: agent.workspace, environment: agent.environment,
                heartbeatSeconds: Int(settings.heartbeatInterval.seconds.rounded(.up)), leaseSeconds: Int(settings.leaseDuration.seconds.rounded(.up)),
                maxClaimWaitSeconds: Int(settings.maxClaimWait.seconds), signingKeyFingerprint: fingerprint, serverTime: Date(),
                signingKeys: announcement))
        }
        routes.add(.post, "/v1/agent/heartbeat", permission: .agentProtocol) { request, context in
            let heartbeat = try await request.decodeStrictBody(as: AgentHeartbeat.self, context: context)
            let agent = try await identity(context)
            let abort = try await store.heartbeat(heartbeat, agent: agent)
            let versions = try await store.snapshotVersions(of: agent)
            return try APIResponse.json(AgentHeartbeatReply(
                abort: abort, serverTime: Date(), accessVersion: versions.access, registryRevision: versions.registry,
                signingKeys: try await keys.announcement()))
        }
        routes.add(.post, "/v1/agent/registry-snapshot", permission: .agentProtocol) { request, context in
            let body = try await request.decodeStrictBody(as: RegistrySnapshotRequest.self, context: context)
            try Self.check(instanceID: body.instanceId)
            let agent = try await identity(context)
            let revision = try await registry.revision(ofWorkspace: agent.workspaceID)
            if body.haveRevision == revision { return try APIResponse.json(RegistrySnapshotReply(revision: revision, snapshot: nil)) }
            let snapshot = try await registry.snapshot(ofWorkspace: agent.workspaceID, named: agent.workspace)
            let signed = try await keys.current().sign(try snapshot.jsonValue())
            return try APIResponse.json(RegistrySnapshotReply(revision: snapshot.revision, snapshot: signed))
        }
        routes.add(.post, "/v1/agent/access-snapshot", permission: .agentProtocol) { request, context in
            let body = try await request.decodeStrictBody(as: AccessSnapshotRequest.self, context: context)
            try Self.check(instanceID: body.instanceId)
            let agent = try await identity(context)
            let version = try await snapshots.version(ofWorkspace: agent.workspaceID)
            if body.haveVersion == version { return try APIResponse.json(AccessSnapshotReply(version: version, snapshot: nil)) }
            let snapshot = try await snapshots.snapshot(ofWorkspace: agent.workspaceID, named: agent.workspace)
            let signed = try await keys.current().sign(try snapshot.jsonValue())
            return try APIResponse.json(AccessSnapshotReply(version: snapshot.version, snapshot: signed))
        }
        routes.add(.post, "/v1/agent/jobs:claim", permission: .agentProtocol) { request, context in
            let claim = try await request.decodeStrictBody(as: ClaimRequest.self, context: context)
            try Self.check(instanceID: claim.instanceId)
            guard claim.waitSeconds >= 0 else { throw APIProblem.badRequest(field: "wait_seconds", "'wait_seconds' cannot be negative") }
            let agent = try await identity(context)
            let deadline = ContinuousClock.now + min(.seconds(claim.waitSeconds), settings.maxClaimWait)
            while true {
                let generation = await wakeups.generation(of: agent.workspaceID)
                if let job = try await store.claim(claim, agent: agent) { return try APIResponse.json(ClaimResponse(job: job)) }
                let remaining = deadline - .now
                guard remaining > .zero else { return try APIResponse.json(ClaimResponse(job: nil)) }
                // Woken by NOTIFY when work is queued; otherwise look again now and
                // then (each second by default), for jobs whose backoff ended.
                await wakeups.wait(workspace: agent.workspaceID, since: generation, timeout: min(remaining, settings.claimRecheckInterval))
            }
        }
        routes.add(.post, "/v1/agent/jobs/{job}/lease", permission: .agentProtocol) { request, context in
            let body = try await request.decodeStrictBody(as: LeaseExtension.self, context: context)
            return try APIResponse.json(try await store.extendLease(
                job: try context.jobID(), token: body.leaseToken, progress: nil, agent: try await identity(context)))
        }
        routes.add(.post, "/v1/agent/jobs/{job}/progress", permission: .agentProtocol) { request, context in
            let body = try await request.decodeStrictBody(as: LeaseExtension.self, context: context)
            let progress = body.progress ?? JobProgress(phase: "running")
            guard progress.phase.count <= 64 else { throw APIProblem.badRequest(field: "progress.phase", "a phase is at most 64 characters") }
            return try APIResponse.json(try await store.extendLease(
                job: try context.jobID(), token: body.leaseToken, progress: progress, agent: try await identity(context)))
        }
        routes.add(.post, "/v1/agent/jobs/{job}/complete", permission: .agentProtocol) { request, context in
            let completion = try await request.decodeStrictBody(as: JobCompletion.self, context: context)
            if completion.outcome == .succeeded, completion.metrics == nil {
                throw APIProblem.badRequest(field: "metrics", "a successful completion carries its metrics")
            }
            if let metrics = completion.metrics, metrics.features.count > 10_000 {
                throw APIProblem.badRequest(field: "metrics.features", "at most 10000 feature summaries")
            }
            let job = try await store.complete(job: try context.jobID(), completion, agent: try await identity(context))
            return try APIResponse.json(job)
        }
    }

    /// The version skew this control plane supports: agents of its own major version, of its release or older.
    /// A newer agent may send fields this release does not know, so it is refused (upgrade the control plane
    /// first). Versions that are not `MAJOR.MINOR.PATCH` (custom builds) are let through.
    static func check(agentVersion: String) throws {
        guard let agent = LarderVersion.release(agentVersion), let own = LarderVersion.release(LarderVersion.number) else { return }
        let problem: String
        if agent.major != own.major {
            problem = "agent release \(agentVersion) is not supported by this control plane (\(LarderVersion.number)): agents must be of release \(own.major).x"
        } else if agent.minor > own.minor {
            problem = "agent release \(agentVersion) is newer than this control plane (\(LarderVersion.number)): upgrade the control plane first"
        } else {
            return
        }
        throw APIProblem(status: .conflict, code: "agent-version-unsupported", title: "Agent version unsupported", detail: problem, field: "version")
    }

    static func check(instanceID: String) throws {
        guard !instanceID.isEmpty, instanceID.count <= 128 else {
            throw APIProblem.badRequest(field: "instance_id", "'instance_id' is 1 to 128 characters")
        }
    }
}

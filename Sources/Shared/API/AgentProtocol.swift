import Foundation

// The agent protocol: what an agent sends to the control plane and what it
// gets back. Agents only ever call out; nothing here carries feature values.
// Requests are decoded strictly (unknown fields are refused), so nothing but
// these declared fields crosses the boundary.

/// `POST /v1/agent/hello`: an agent process announces itself.
public struct AgentHello: Sendable, Codable, Hashable {
    /// A new id for each agent process, such as a UUID.
    public var instanceId: String
    /// The agent's software version.
    public var version: String
    /// The host it runs on.
    public var hostname: String
    /// The job kinds it can run.
    public var capabilities: [JobKind]
    /// Its online store's kind (absent: embedded). The control plane refuses an
    /// agent whose store is not its environment's, and a second agent in an
    /// environment whose store is embedded.
    public var onlineStore: OnlineStoreKind?

    /// Creates a hello.
    public init(instanceId: String, version: String, hostname: String, capabilities: [JobKind], onlineStore: OnlineStoreKind? = nil) {
        self.instanceId = instanceId
        self.version = version
        self.hostname = hostname
        self.capabilities = capabilities
        self.onlineStore = onlineStore
    }
}

/// The answer to a hello: who the agent is and how to pace itself.
public struct AgentWelcome: Sendable, Codable, Hashable {
    /// The agent principal's name.
    public var agent: String
    /// Its workspace.
    public var workspace: String
    /// Its environment.
    public var environment: String
    /// How often to send heartbeats.
    public var heartbeatSeconds: Int
    /// How long a lease lasts unless extended.
    public var leaseSeconds: Int
    /// The longest a claim may wait for work.
    public var maxClaimWaitSeconds: Int
    /// The fingerprint of the key that signs job specs (compare with the pinned key).
    public var signingKeyFingerprint: String
    /// The control plane's clock.
    public var serverTime: Date
    /// The control plane's signing keys, signed by its active key (and, during
    /// a rotation, by the previous one too): see `SigningKeySet`.
    public var signingKeys: [SignedDocument]?

    /// Creates a value.
    public init(
        agent: String, workspace: String, environment: String, heartbeatSeconds: Int, leaseSeconds: Int, maxClaimWaitSeconds: Int,
        signingKeyFingerprint: String, serverTime: Date, signingKeys: [SignedDocument]? = nil
    ) {
        self.agent = agent
        self.workspace = workspace
        self.environment = environment
        self.heartbeatSeconds = heartbeatSeconds
        self.leaseSeconds = leaseSeconds
        self.maxClaimWaitSeconds = maxClaimWaitSeconds
        self.signingKeyFingerprint = signingKeyFingerprint
        self.serverTime = serverTime
        self.signingKeys = signingKeys
    }
}

/// `POST /v1/agent/heartbeat`: the agent is alive and holds these jobs.
public struct AgentHeartbeat: Sendable, Codable, Hashable {
    /// The process id from the hello.
    public var instanceId: String
    /// The jobs it is running.
    public var runningJobs: [Int64]
    /// The generation of the signing key set it holds (see `SigningKeySet`).
    public var keyGeneration: Int64?

    /// Creates a heartbeat.
    public init(instanceId: String, runningJobs: [Int64], keyGeneration: Int64? = nil) {
        self.instanceId = instanceId
        self.runningJobs = runningJobs
        self.keyGeneration = keyGeneration
    }
}

/// The answer to a heartbeat.
public struct AgentHeartbeatReply: Sendable, Codable, Hashable {
    /// Jobs among those it runs that must stop: cancelled, or no longer its own.
    public var abort: [Int64]
    /// The control plane's clock.
    public var serverTime: Date
    /// The version of the workspace's access snapshot: one newer than the
    /// agent holds means it should fetch it again.
    public var accessVersion: Int64?
    /// The workspace's registry revision, likewise for the registry snapshot.
    public var registryRevision: Int64?
    /// The control plane's signing keys, as in the hello answer: how a key
    /// rotation reaches agents that are running.
    public var signingKeys: [SignedDocument]?

    /// Creates a value.
    public init(
        abort: [Int64], serverTime: Date, accessVersion: Int64? = nil, registryRevision: Int64? = nil, signingKeys: [SignedDocument]? = nil
    ) {
        self.abort = abort
        self.serverTime = serverTime
        self.accessVersion = accessVersion
        self.registryRevision = registryRevision
        self.signingKeys = signingKeys
    }
}

/// `POST /v1/agent/jobs:claim`: give me a job, waiting up to `waitSeconds` for one.
public struct ClaimRequest: Sendable, Codable, Hashable {
    /// The process id from the hello.
    public var instanceId: String
    /// The kinds it can run now.
    public var kinds: [JobKind]
    /// How long to wait for work (capped by the server).
    public var waitSeconds: Int

    /// Creates a claim.
    public init(instanceId: String, kinds: [JobKind], waitSeconds: Int) {
        self.instanceId = instanceId
        self.kinds = kinds
        self.waitSeconds = waitSeconds
    }
}

/// A job leased to the agent that claimed it.
public struct ClaimedJob: Sendable, Codable, Hashable {
    /// The job's id.
    public var id: Int64
    /// Which attempt this is (1 for the first).
    public var attempt: Int
    /// The fencing token: every later call about this job must present it.
    public var leaseToken: UUID
    /// When the lease ends unless extended.
    public var leaseExpiresAt: Date
    /// The job spec, signed by the control plane.
    public var spec: SignedDocument
    /// The lease's term: a number that grows with every claim of any job. The
    /// agent writes it with each interval it replaces in the offline store,
    /// which refuses a writer whose term is lower than the one that wrote the
    /// interval last (0: unknown, from an older control plane: not fenced).
    public var leaseTerm: Int64

    /// Creates a value.
    public init(id: Int64, attempt: Int, leaseToken: UUID, leaseExpiresAt: Date, spec: SignedDocument, leaseTerm: Int64 = 0) {
        self.id = id
        self.attempt = attempt
        self.leaseToken = leaseToken
        self.leaseExpiresAt = leaseExpiresAt
        self.spec = spec
        self.leaseTerm = leaseTerm
    }

    enum CodingKeys: String, CodingKey {
        case id, attempt, leaseToken, leaseExpiresAt, spec, leaseTerm
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(Int64.self, forKey: .id)
        attempt = try container.decode(Int.self, forKey: .attempt)
        leaseToken = try container.decode(UUID.self, forKey: .leaseToken)
        leaseExpiresAt = try container.decode(Date.self, forKey: .leaseExpiresAt)
        spec = try container.decode(SignedDocument.self, forKey: .spec)
        leaseTerm = try container.decodeIfPresent(Int64.self, forKey: .leaseTerm) ?? 0
    }
}

/// The answer to a claim: a job, or none when the wait ended without work.
public struct ClaimResponse: Sendable, Codable, Hashable {
    /// The job, if one was claimed.
    public var job: ClaimedJob?

    /// Creates a response.
    public init(job: ClaimedJob?) { self.job = job }
}

/// `POST /v1/agent/jobs/{job}/lease` and `…/progress`: keep the lease, and say how far the job is.
public struct LeaseExtension: Sendable, Codable, Hashable {
    /// The token from the claim.
    public var leaseToken: UUID
    /// How far the job is (progress reports only).
    public var progress: JobProgress?

    /// Creates an extension.
    public init(leaseToken: UUID, progress: JobProgress? = nil) {
        self.leaseToken = leaseToken
        self.progress = progress
    }
}

/// The answer to a lease extension or progress report.
public struct LeaseStatus: Sendable, Codable, Hashable {
    /// When the lease now ends.
    public var leaseExpiresAt: Date
    /// Whether an operator cancelled the job: the agent must abort it and report `cancelled`.
    public var cancelRequested: Bool

    /// Creates a value.
    public init(leaseExpiresAt: Date, cancelRequested: Bool) {
        self.leaseExpiresAt = leaseExpiresAt
        self.cancelRequested = cancelRequested
    }
}

/// How an attempt ended, as the agent reports it.
public enum AttemptOutcome: String, Sendable, Codable, CaseIterable {
    /// It did what the spec asked.
    case succeeded
    /// It failed (see the failure's `retryable`).
    case failed
    /// It stopped because the job was cancelled.
    case cancelled
}

/// `POST /v1/agent/jobs/{job}/complete`: the attempt is over.
public struct JobCompletion: Sendable, Codable, Hashable {
    /// The token from the claim: a completion under a lost lease is refused.
    public var leaseToken: UUID
    /// How it ended.
    public var outcome: AttemptOutcome
    /// When the agent started the work.
    public var startedAt: Date
    /// When it finished.
    public var finishedAt: Date
    /// For a success: the declared metrics.
    public var metrics: JobMetrics?
    /// For a failure: why.
    public var failure: JobFailure?

    /// Creates a completion.
    public init(
        leaseToken: UUID, outcome: AttemptOutcome, startedAt: Date, finishedAt: Date, metrics: JobMetrics? = nil, failure: JobFailure? = nil
    ) {
        self.leaseToken = leaseToken
        self.outcome = outcome
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.metrics = metrics
        self.failure = failure
    }
}

/// The signed description of a job: everything an agent needs to run it,
/// and nothing it could use to run something else (it names its job, workspace
/// and attempt window).
public struct JobSpec: Sendable, Codable, Hashable, SignedPayload {
    /// A definition the job reads: the feature view and everything upstream of it.
    public struct Definition: Sendable, Codable, Hashable {
        /// The object's kind, such as `FeatureView`.
        public var kind: String
        /// Its name.
        public var name: String
        /// Its version.
        public var version: Int
        /// Its content hash.
        public var contentHash: String
        /// Its canonical spec (`spec`, `operational`, `metadata`).
        public var definition: JSONValue

        enum CodingKeys: String, CodingKey {
            case kind, name, version, contentHash = "content_hash", definition
        }

        /// Creates a definition entry.
        public init(kind: String, name: String, version: Int, contentHash: String, definition: JSONValue) {
            self.kind = kind
            self.name = name
            self.version = version
            self.contentHash = contentHash
            self.definition = definition
        }
    }

    /// Which stores to write.
    public struct Targets: Sendable, Codable, Hashable {
        /// The offline store (history, for training sets).
        public var offline: Bool
        /// The online store (latest values, for serving).
        public var online: Bool

        /// Creates targets.
        public init(offline: Bool, online: Bool) {
            self.offline = offline
            self.online = online
        }
    }

    /// The spec format's version.
    public var format: Int
    /// The job's id: an agent refuses a spec that names another job.
    public var jobId: Int64
    /// What to compute.
    public var kind: JobKind
    /// The workspace: an agent refuses a spec of another workspace.
    public var workspace: String
    /// The feature view to materialize.
    public var featureView: String?
    /// Its version.
    public var version: Int?
    /// The first instant of event time to compute.
    public var start: Date?
    /// The first instant not to compute.
    public var end: Date?
    /// The feature view and everything it reads, as applied.
    public var definitions: [Definition]
    /// Which stores to write.
    public var targets: Targets
    /// When the control plane signed it.
    public var issuedAt: Date
    /// For a dataset job: what to build.
    public var dataset: CreateDatasetRequest?
    /// For a dataset job: the registry revision of `definitions` (the whole workspace's current objects).
    public var registryRevision: Int64?
    /// The claim it was signed for: its attempt (set when the job is claimed;
    /// an agent runs only a spec bound to the claim it holds).
    public var attempt: Int?
    /// The claim's lease token.
    public var leaseToken: UUID?
    /// The claim's lease term.
    public var leaseTerm: Int64?
    /// When the spec stops being valid: the end of the claim's first lease.
    public var expiresAt: Date?

    public static let signingDomain = "larder.job-spec.v1"

    // Spelled out rather than converted by a key strategy, which would also
    // rewrite the keys inside the definitions.
    enum CodingKeys: String, CodingKey {
        case format, jobId = "job_id", kind, workspace, featureView = "feature_view", version, start, end, definitions, targets
        case issuedAt = "issued_at", dataset, registryRevision = "registry_revision"
        case attempt, leaseToken = "lease_token", leaseTerm = "lease_term", expiresAt = "expires_at"
    }

    /// This spec bound to one claim: it names the claim's attempt, lease and
    /// lease term, and expires with the claim's first lease.
    public func bound(attempt: Int, leaseToken: UUID, leaseTerm: Int64, expiresAt: Date) -> JobSpec {
        var bound = self
        bound.attempt = attempt
        bound.leaseToken = leaseToken
        bound.leaseTerm = leaseTerm
        bound.expiresAt = expiresAt
        return bound
    }

    /// Creates a spec.
    public init(
        jobId: Int64, kind: JobKind, workspace: String, featureView: String?, version: Int?, start: Date?, end: Date?,
        definitions: [Definition], targets: Targets, issuedAt: Date, dataset: CreateDatasetRequest? = nil, registryRevision: Int64? = nil
    ) {
        format = 1
        self.dataset = dataset
        self.registryRevision = registryRevision
        self.jobId = jobId
        self.kind = kind
        self.workspace = workspace
        self.featureView = featureView
        self.version = version
        self.start = start
        self.end = end
        self.definitions = definitions
        self.targets = targets
        self.issuedAt = issuedAt
    }

}

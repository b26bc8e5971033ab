import Foundation

/// What a job computes.
public enum JobKind: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// One feature-view version over one interval of event time.
    case materialize
    /// A range of event time, split into `materialize` chunks (its children).
    case backfill
    /// A training dataset.
    case dataset

    public var description: String { rawValue }
}

/// Where a job is in its life: `queued → leased → running → succeeded | failed | cancelled`.
public enum JobState: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// Waiting for an agent (possibly not before a backoff time).
    case queued
    /// Claimed by an agent, which holds a lease on it.
    case leased
    /// The leaseholder reported that it started.
    case running
    /// Done.
    case succeeded
    /// Failed for good: a permanent error, or every attempt used.
    case failed
    /// Cancelled by an operator.
    case cancelled

    /// Whether the job will not change again unless retried.
    public var isTerminal: Bool { self == .succeeded || self == .failed || self == .cancelled }

    public var description: String { rawValue }
}

/// Why a job or attempt failed, as the agent reported it.
public struct JobFailure: Sendable, Codable, Hashable {
    /// What went wrong, in words (at most 2,000 characters; never row values).
    public var message: String
    /// Whether another attempt may succeed.
    public var retryable: Bool

    /// Creates a failure report.
    public init(message: String, retryable: Bool) {
        self.message = message
        self.retryable = retryable
    }
}

/// Summary statistics of one feature over the rows a job wrote: counts and
/// numeric aggregates only.
public struct FeatureSummary: Sendable, Codable, Hashable {
    /// The feature's name.
    public var feature: String
    /// Rows with a value.
    public var count: Int64
    /// Rows without a value.
    public var nullCount: Int64
    /// For numeric features: the smallest value.
    public var min: Double?
    /// For numeric features: the largest value.
    public var max: Double?
    /// For numeric features: the mean.
    public var mean: Double?
    /// For features with allowed values: how many values were not among them.
    public var disallowedCount: Int64?

    /// Creates a summary.
    public init(
        feature: String, count: Int64, nullCount: Int64, min: Double? = nil, max: Double? = nil, mean: Double? = nil, disallowedCount: Int64? = nil
    ) {
        self.feature = feature
        self.count = count
        self.nullCount = nullCount
        self.min = min
        self.max = max
        self.mean = mean
        self.disallowedCount = disallowedCount
    }
}

/// The declared metrics of a finished job: everything of a job's result that
/// leaves the customer's environment.
public struct JobMetrics: Sendable, Codable, Hashable {
    /// Rows read from the sources.
    public var rowsRead: Int64
    /// Rows written to the stores.
    public var rowsWritten: Int64
    /// The end of event time now materialized, if the job moved it.
    public var watermark: Date?
    /// Per-feature statistics.
    public var features: [FeatureSummary]
    /// For a dataset job: what it built.
    public var dataset: DatasetMetadata?
    /// For a materialization of a view with expectations: their results.
    public var expectations: ExpectationReport?

    /// Creates metrics.
    public init(
        rowsRead: Int64, rowsWritten: Int64, watermark: Date? = nil, features: [FeatureSummary] = [], dataset: DatasetMetadata? = nil,
        expectations: ExpectationReport? = nil
    ) {
        self.rowsRead = rowsRead
        self.rowsWritten = rowsWritten
        self.watermark = watermark
        self.features = features
        self.dataset = dataset
        self.expectations = expectations
    }
}

/// How far a running job is.
public struct JobProgress: Sendable, Codable, Hashable {
    /// The step it is in, such as `reading` or `writing-online`.
    public var phase: String
    /// The share done, from 0 to 1, when known.
    public var fraction: Double?
    /// Rows read so far.
    public var rowsRead: Int64?
    /// Rows written so far.
    public var rowsWritten: Int64?

    /// Creates a progress report.
    public init(phase: String, fraction: Double? = nil, rowsRead: Int64? = nil, rowsWritten: Int64? = nil) {
        self.phase = phase
        self.fraction = fraction
        self.rowsRead = rowsRead
        self.rowsWritten = rowsWritten
    }
}

/// A job in the ledger.
public struct JobResource: Sendable, Codable, Hashable {
    /// The job's id.
    public var id: Int64
    /// Its workspace.
    public var workspace: String
    /// What it computes.
    public var kind: JobKind
    /// Where it is.
    public var state: JobState
    /// For materialization and backfills: the feature view.
    public var featureView: String?
    /// The feature view's version.
    public var version: Int?
    /// The first instant of event time covered.
    public var start: Date?
    /// The first instant not covered.
    public var end: Date?
    /// For a backfill chunk: the backfill's id.
    public var parentId: Int64?
    /// The environment whose agents may run it; none means any of the workspace's agents.
    public var environment: String?
    /// Why it exists: `schedule`, `new-version` or the principal who asked.
    public var trigger: String
    /// Attempts started so far.
    public var attempts: Int
    /// Attempts allowed before it fails for good.
    public var maxAttempts: Int
    /// When queued: not claimed before this time (backoff after a failure).
    public var notBefore: Date?
    /// The agent holding the lease, when leased or running.
    public var agent: String?
    /// When the current lease ends unless extended.
    public var leaseExpiresAt: Date?
    /// Whether an operator asked to cancel it while an agent runs it.
    public var cancelRequested: Bool
    /// The latest progress report.
    public var progress: JobProgress?
    /// The metrics of the successful attempt.
    public var metrics: JobMetrics?
    /// The last failure.
    public var failure: JobFailure?
    /// For a backfill: how many chunks are in each state.
    public var chunks: [String: Int]?
    /// For a dataset job: what was asked.
    public var dataset: CreateDatasetRequest?
    /// When it was created.
    public var createdAt: Date
    /// When it last changed.
    public var updatedAt: Date
    /// When it reached a terminal state.
    public var finishedAt: Date?

    /// Creates a value.
    public init(id: Int64, workspace: String, kind: JobKind, state: JobState, featureView: String? = nil, version: Int? = nil, start: Date? = nil, end: Date? = nil, parentId: Int64? = nil, environment: String? = nil, trigger: String, attempts: Int, maxAttempts: Int, notBefore: Date? = nil, agent: String? = nil, leaseExpiresAt: Date? = nil, cancelRequested: Bool, progress: JobProgress? = nil, metrics: JobMetrics? = nil, failure: JobFailure? = nil, chunks: [String: Int]? = nil, dataset: CreateDatasetRequest? = nil, createdAt: Date, updatedAt: Date, finishedAt: Date? = nil) {
        self.id = id
        self.workspace = workspace
        self.kind = kind
        self.state = state
        self.featureView = featureView
        self.version = version
        self.start = start
        self.end = end
        self.parentId = parentId
        self.environment = environment
        self.trigger = trigger
        self.attempts = attempts
        self.maxAttempts = maxAttempts
        self.notBefore = notBefore
        self.agent = agent
        self.leaseExpiresAt = leaseExpiresAt
        self.cancelRequested = cancelRequested
        self.progress = progress
        self.metrics = metrics
        self.failure = failure
        self.chunks = chunks
        self.dataset = dataset
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.finishedAt = finishedAt
    }
}

/// One attempt at a job.
public struct JobAttemptResource: Sendable, Codable, Hashable {
    /// 1 for the first attempt.
    public var attempt: Int
    /// The agent that ran it.
    public var agent: String
    /// The agent's instance (process) id.
    public var instanceId: String?
    /// When it was claimed.
    public var claimedAt: Date
    /// When the agent reported that it started.
    public var startedAt: Date?
    /// When it ended.
    public var endedAt: Date?
    /// `running`, `succeeded`, `failed`, `cancelled` or `lease-expired`.
    public var outcome: String
    /// The failure, if it failed.
    public var failure: JobFailure?

    /// Creates a value.
    public init(attempt: Int, agent: String, instanceId: String? = nil, claimedAt: Date, startedAt: Date? = nil, endedAt: Date? = nil, outcome: String, failure: JobFailure? = nil) {
        self.attempt = attempt
        self.agent = agent
        self.instanceId = instanceId
        self.claimedAt = claimedAt
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.outcome = outcome
        self.failure = failure
    }
}

/// Something that happened to a job.
public struct JobEventResource: Sendable, Codable, Hashable {
    /// When.
    public var at: Date
    /// What, such as `queued`, `claimed`, `lease-expired`, `failed-permanently`.
    public var event: String
    /// Details in words.
    public var detail: String?

    /// Creates a value.
    public init(at: Date, event: String, detail: String? = nil) {
        self.at = at
        self.event = event
        self.detail = detail
    }
}

/// A job with its attempts and events.
public struct JobDetailResource: Sendable, Codable, Hashable {
    /// The job.
    public var job: JobResource
    /// Every attempt, first first.
    public var attempts: [JobAttemptResource]
    /// Every event, oldest first.
    public var events: [JobEventResource]

    /// Creates a value.
    public init(job: JobResource, attempts: [JobAttemptResource], events: [JobEventResource]) {
        self.job = job
        self.attempts = attempts
        self.events = events
    }
}

/// `POST /v1/workspaces/{workspace}/materializations`: materialize a feature
/// view over a range of event time, in chunks.
public struct MaterializeRequest: Sendable, Codable, Hashable {
    /// The feature view.
    public var featureView: String
    /// The first instant to materialize.
    public var start: Date
    /// The first instant not to materialize.
    public var end: Date
    /// The length of each chunk, such as `1d` (default: the server's backfill chunk).
    public var chunk: String?
    /// Only agents of this environment may run it.
    public var environment: String?

    /// Creates a request.
    public init(featureView: String, start: Date, end: Date, chunk: String? = nil, environment: String? = nil) {
        self.featureView = featureView
        self.start = start
        self.end = end
        self.chunk = chunk
        self.environment = environment
    }
}

/// What a materialization request queued.
public struct MaterializeResponse: Sendable, Codable, Hashable {
    /// The backfill job that groups the chunks (the first environment's, when there are several).
    public var backfill: JobResource
    /// One backfill per environment queued for, by environment name.
    public var backfills: [JobResource]
    /// Chunks queued now, over every environment.
    public var chunksQueued: Int
    /// Chunks skipped because the same interval is queued, running or done already.
    public var chunksSkipped: Int

    /// Creates a value.
    public init(backfills: [JobResource], chunksQueued: Int, chunksSkipped: Int) {
        precondition(!backfills.isEmpty, "a materialization queues at least one backfill")
        self.backfill = backfills[0]
        self.backfills = backfills
        self.chunksQueued = chunksQueued
        self.chunksSkipped = chunksSkipped
    }
}

/// An agent as the control plane knows it: its principal and what it said
/// in its last hello and heartbeat.
public struct AgentResource: Sendable, Codable, Hashable {
    /// The agent principal's name.
    public var name: String
    /// Its workspace.
    public var workspace: String
    /// Its environment.
    public var environment: String
    /// The instance (process) that last said hello, if any did.
    public var instanceId: String?
    /// Its software version.
    public var version: String?
    /// The host it runs on.
    public var hostname: String?
    /// The job kinds it can run.
    public var capabilities: [JobKind]
    /// When it last said hello.
    public var connectedAt: Date?
    /// When it was last heard from.
    public var lastSeenAt: Date?
    /// `online` (heard from within three heartbeat intervals), `offline`, or `never` (no hello yet).
    public var status: String
    /// Jobs it holds leases on.
    public var activeJobs: Int

    /// Creates a value.
    public init(name: String, workspace: String, environment: String, instanceId: String? = nil, version: String? = nil, hostname: String? = nil, capabilities: [JobKind], connectedAt: Date? = nil, lastSeenAt: Date? = nil, status: String, activeJobs: Int) {
        self.name = name
        self.workspace = workspace
        self.environment = environment
        self.instanceId = instanceId
        self.version = version
        self.hostname = hostname
        self.capabilities = capabilities
        self.connectedAt = connectedAt
        self.lastSeenAt = lastSeenAt
        self.status = status
        self.activeJobs = activeJobs
    }
}

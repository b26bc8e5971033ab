import Foundation

/// A feature view's freshness: how far behind now its newest materialized
/// event time is, against its SLO (`GET /v1/workspaces/{ws}/freshness`).
public struct FeatureViewFreshness: Sendable, Codable, Hashable {
    /// Where a view stands.
    public enum State: String, Sendable, Codable, Hashable {
        /// Within its SLO.
        case fresh
        /// Behind its SLO (or never materialized for longer than it).
        case stale
        /// Not materialized yet, and younger than its SLO.
        case pending
        /// No schedule and no declared freshness: nothing to hold it to.
        case noSLO = "no-slo"
    }

    public var view: String
    public var version: Int
    /// The environment whose stores this reading is of (absent while the workspace has none).
    public var environment: String?
    /// The end of the newest materialized interval of this version.
    public var watermark: Date?
    /// Now minus the watermark.
    public var stalenessSeconds: Int64?
    /// The SLO: the declared freshness, or twice the schedule's longest gap.
    public var expectedSeconds: Int64?
    public var state: State

    /// What an alert about this reading is about: the view, in its environment.
    public var subject: String { environment.map { "\(view)@\($0)" } ?? view }

    /// Creates a reading.
    public init(
        view: String, version: Int, environment: String? = nil, watermark: Date?, stalenessSeconds: Int64?, expectedSeconds: Int64?, state: State
    ) {
        self.view = view
        self.version = version
        self.environment = environment
        self.watermark = watermark
        self.stalenessSeconds = stalenessSeconds
        self.expectedSeconds = expectedSeconds
        self.state = state
    }
}

/// An alert: a condition that opened (its event) and, once over, resolved (its recovery).
public struct AlertResource: Sendable, Codable, Hashable {
    public var id: Int64
    public var workspace: String
    /// `stale`, `job-failed`, `agent-offline`, `expectation-violated`.
    public var kind: String
    /// What it is about: a feature view, a job, an agent.
    public var subject: String
    public var detail: String
    public var openedAt: Date
    public var resolvedAt: Date?
    public var resolvedDetail: String?

    /// Creates an alert.
    public init(
        id: Int64, workspace: String, kind: String, subject: String, detail: String, openedAt: Date, resolvedAt: Date? = nil,
        resolvedDetail: String? = nil
    ) {
        self.id = id
        self.workspace = workspace
        self.kind = kind
        self.subject = subject
        self.detail = detail
        self.openedAt = openedAt
        self.resolvedAt = resolvedAt
        self.resolvedDetail = resolvedDetail
    }
}

/// A feature view's data quality: its declared expectations' results in the
/// newest finished materialization of its current version
/// (`GET /v1/workspaces/{ws}/expectations`).
public struct FeatureViewQuality: Sendable, Codable, Hashable {
    /// Where a view stands.
    public enum State: String, Sendable, Codable, Hashable {
        /// Every expectation held.
        case passed
        /// Some did not; the job wrote its rows (policy warn).
        case warned
        /// Some did not; the job failed and wrote nothing (policy fail).
        case failed
        /// No materialization of this version has finished since the expectations were declared.
        case unchecked
    }

    public var view: String
    public var version: Int
    /// The view's policy as declared now.
    public var policy: ViolationPolicy
    public var state: State
    /// The job that evaluated them.
    public var job: Int64?
    /// When that job finished.
    public var finishedAt: Date?
    /// Each check's result in that job.
    public var results: [ExpectationResult]

    /// Creates a reading.
    public init(
        view: String, version: Int, policy: ViolationPolicy, state: State, job: Int64? = nil, finishedAt: Date? = nil, results: [ExpectationResult] = []
    ) {
        self.view = view
        self.version = version
        self.policy = policy
        self.state = state
        self.job = job
        self.finishedAt = finishedAt
        self.results = results
    }
}

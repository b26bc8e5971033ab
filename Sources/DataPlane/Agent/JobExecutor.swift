import Foundation
import Shared

/// Runs one kind of job inside the customer's environment. The agent hands it
/// a verified spec; it returns the declared metrics, or throws.
///
/// An executor must stop promptly when its task is cancelled (the job was
/// cancelled, or its lease was lost).
public protocol JobExecutor: Sendable {
    /// The job kinds it runs.
    var kinds: Set<JobKind> { get }

    /// Runs the job described by `spec`.
    func execute(_ spec: JobSpec, context: JobContext) async throws -> JobMetrics
}

/// What an executor may do while it runs: report progress.
public struct JobContext: Sendable {
    /// Which attempt this is.
    public let attempt: Int
    /// Sends a progress report (best effort).
    public let report: @Sendable (JobProgress) async -> Void
    /// The claim's fencing term, written with each offline interval (0: not fenced).
    public let leaseTerm: Int64
    /// How long a lease lasts: a write transaction left idle longer than a few
    /// of these (its agent paused or cut off) is ended by the database.
    public let leaseDuration: Duration
    /// Whether the agent still holds the lease by its own clock: false once
    /// it could not extend it before it ran out.
    public let leaseHeld: @Sendable () -> Bool

    /// Creates a context.
    public init(
        attempt: Int, leaseTerm: Int64 = 0, leaseDuration: Duration = .seconds(30), leaseHeld: @escaping @Sendable () -> Bool = { true },
        report: @escaping @Sendable (JobProgress) async -> Void
    ) {
        self.attempt = attempt
        self.report = report
        self.leaseTerm = leaseTerm
        self.leaseDuration = leaseDuration
        self.leaseHeld = leaseHeld
    }

    /// Throws unless the lease is still held: called before anything is written for good.
    public func requireLease() throws {
        guard leaseHeld() else {
            throw JobExecutionError("the agent's lease on the job ran out before it could write; another agent may hold it now", retryable: true)
        }
    }
}

/// A failure an executor throws to say whether another attempt could succeed.
public struct JobExecutionError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public var message: String
    /// Whether to retry.
    public var retryable: Bool
    /// What only the agent's own log may hold (it may quote the customer's
    /// data); `message` is what the control plane is told.
    public var localDetail: String?
    /// The declared metrics of what the attempt saw before it failed (such as
    /// the results of the expectations that failed it), reported with the failure.
    public var metrics: JobMetrics?

    /// Creates an error.
    public init(_ message: String, retryable: Bool, localDetail: String? = nil, metrics: JobMetrics? = nil) {
        self.message = message
        self.retryable = retryable
        self.localDetail = localDetail
        self.metrics = metrics
    }

    public var description: String { message }
}

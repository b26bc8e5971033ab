import Foundation
import Shared

/// Why a job operation was refused. Mapped to HTTP in `JobError+HTTP.swift`.
public enum JobError: Error, Sendable, Equatable {
    /// No job with this id in the workspace.
    case jobNotFound(Int64)
    /// The caller's lease on the job is gone (expired, or the job was given to
    /// another attempt): its reports are refused.
    case leaseLost(Int64)
    /// The job is in a state that does not allow the operation.
    case invalidState(Int64, JobState, String)
    /// The feature view does not exist or is retired.
    case featureViewNotFound(String)
    /// A field of the request is wrong.
    case invalidArgument(field: String, detail: String)
    /// The caller is not an agent known to the control plane.
    case unknownAgent(String)
}

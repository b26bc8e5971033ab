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
    /// No environment of that name in the workspace.
    case environmentNotFound(String)
    /// The workspace has an environment of that name already.
    case environmentExists(String)
    /// The environment still has agents (named), so it cannot be deleted.
    case environmentInUse(String, agents: [String])
    /// The environment's online store is embedded and another agent (named) writes it.
    case embeddedStoreTaken(environment: String, writer: String)
    /// The agent's online store is not the kind its environment declares.
    case onlineStoreMismatch(environment: String, declared: OnlineStoreKind, agent: OnlineStoreKind)
}

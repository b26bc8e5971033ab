import Foundation
import Shared

/// What can go wrong in a registry operation. Each case has a stable code;
/// the API maps them to HTTP in one place (`RegistryError+HTTP.swift`).
public enum RegistryError: Error, Sendable {
    /// No workspace with that name (or the caller may not see it).
    case workspaceNotFound(String)
    /// A workspace with that name exists already.
    case workspaceExists(String)
    /// The workspace still has current objects.
    case workspaceNotEmpty(String, objects: Int)
    /// No such object in the workspace.
    case objectNotFound(ObjectCollection, String)
    /// The object has no such version.
    case versionNotFound(ObjectKey, Int)
    /// No such plan in the workspace.
    case planNotFound(UUID)
    /// The repository has mistakes.
    case invalidRepository([RepositoryDiagnostic])
    /// The repository's larder.yaml names another workspace than the URL.
    case workspaceMismatch(url: String, repository: String)
    /// The workspace changed since the plan was computed.
    case planConflict(planRevision: Int64, currentRevision: Int64)
    /// The plan was applied already.
    case planAlreadyApplied(UUID)
    /// The repository is valid but cannot be applied to this registry state.
    case unplannable(PlanningError)
    /// A request field is malformed.
    case invalidArgument(field: String, detail: String)
}

import Foundation
import Logging
import Shared

/// The registry's storage: workspaces, objects and versions, lineage, plans
/// and applies. `PostgresRegistryStore` is the implementation.
public protocol RegistryStore: Sendable {
    /// Creates a workspace.
    func createWorkspace(_ request: CreateWorkspaceRequest, by principal: String) async throws -> WorkspaceResource
    /// One page of workspaces, by name; only those in `visibleTo` when it is given.
    func listWorkspaces(after cursor: String?, limit: Int, visibleTo: Set<String>?) async throws -> Page<WorkspaceResource>
    /// One workspace.
    func workspace(named name: String) async throws -> WorkspaceResource
    /// Deletes a workspace that has no current objects (its retired history goes with it).
    func deleteWorkspace(named name: String) async throws

    /// What planning needs to know about a workspace, read consistently.
    func snapshot(of workspace: String) async throws -> RegistrySnapshot
    /// Stores a computed plan with the rows it would write.
    func savePlan(_ plan: PlanResource, writes: [PlannedWrite]) async throws
    /// A stored plan.
    func plan(_ id: UUID, in workspace: String) async throws -> PlanResource
    /// Applies a stored plan atomically; fails with `planConflict` when the
    /// workspace moved past the plan's base revision.
    func apply(plan id: UUID, in workspace: String, by principal: String) async throws -> ApplyResource
    /// The workspace's applies, newest first.
    func applies(in workspace: String, after cursor: String?, limit: Int) async throws -> Page<ApplyResource>

    /// One page of a collection's objects, by kind and name.
    func objects(
        in workspace: String, collection: ObjectCollection, includeRetired: Bool, after cursor: String?, limit: Int
    ) async throws -> Page<ObjectResource>
    /// One object.
    func object(in workspace: String, collection: ObjectCollection, name: String) async throws -> ObjectResource
    /// Every version of an object, oldest first.
    func versions(in workspace: String, collection: ObjectCollection, name: String) async throws -> [VersionResource]
    /// One version of an object.
    func version(_ number: Int, in workspace: String, collection: ObjectCollection, name: String) async throws -> VersionResource
    /// The lineage of an object's current version (latest, when retired).
    func lineage(
        in workspace: String, collection: ObjectCollection, name: String, direction: LineageDirection, depth: Int
    ) async throws -> LineageGraph
    /// Full-text search over current objects' names, descriptions, owners, tags and feature names.
    func search(in workspace: String, query: SearchQuery) async throws -> [SearchResult]
}

/// A catalog search: text and optional filters.
public struct SearchQuery: Sendable {
    /// Words to look for (prefixes match: `driv` finds `driver`); may be empty when filtering only.
    public var text: String
    /// Only these kinds.
    public var kinds: [ObjectKind]?
    /// Only objects with this tag: `key` or `key=value`.
    public var tag: String?
    /// Only objects with this owner.
    public var owner: String?
    /// At most this many results.
    public var limit: Int

    /// Creates a query.
    public init(text: String, kinds: [ObjectKind]? = nil, tag: String? = nil, owner: String? = nil, limit: Int = 50) {
        self.text = text
        self.kinds = kinds
        self.tag = tag
        self.owner = owner
        self.limit = limit
    }
}

import Foundation
import Shared

/// Plans repositories against the registry: reads and validates the files
/// with the same code as `larder validate`, canonicalizes them, diffs them
/// against a consistent snapshot of the workspace, and stores the plan.
public struct RegistryService: Sendable {
    /// Where the registry lives.
    public let store: any RegistryStore
    /// The current time (injected so tests control it).
    let now: @Sendable () -> Date

    /// Creates a service over `store`.
    public init(store: any RegistryStore, now: @escaping @Sendable () -> Date = { Date() }) {
        self.store = store
        self.now = now
    }

    /// Computes and stores the plan of applying `files` to `workspace`.
    public func plan(workspace: String, files: [RepositoryFile], by principal: String) async throws -> PlanResource {
        for (index, file) in files.enumerated() {
            if file.path.isEmpty || file.path.hasPrefix("/") || file.path.split(separator: "/").contains("..") {
                throw RegistryError.invalidArgument(field: "files[\(index)].path", detail: "'\(file.path)' must be a relative path inside the repository")
            }
        }
        let loaded = RepositoryLoader.load(files: files.map { ($0.path, $0.contents) })
        guard loaded.isValid else { throw RegistryError.invalidRepository(loaded.diagnostics) }
        guard loaded.repository.config.workspace == workspace else {
            throw RegistryError.workspaceMismatch(url: workspace, repository: loaded.repository.config.workspace)
        }
        let definitions = DefinitionCanonicalizer.canonicalize(loaded.repository)
        let snapshot = try await store.snapshot(of: workspace)
        let changes: [PlannedChange]
        do {
            changes = try PlanBuilder.changes(applying: definitions, to: snapshot)
        } catch {
            throw RegistryError.unplannable(error)
        }
        let plan = PlanResource(
            id: UUID(), workspace: workspace, baseRevision: snapshot.revision, changes: changes, createdAt: now(), createdBy: principal,
            appliedAt: nil)
        let writing = Set(changes.filter { [.create, .newVersion, .update].contains($0.action) }.map { ObjectKey(kind: $0.kind, name: $0.name) })
        try await store.savePlan(plan, writes: definitions.filter { writing.contains($0.key) }.map(PlannedWrite.init))
        return plan
    }
}

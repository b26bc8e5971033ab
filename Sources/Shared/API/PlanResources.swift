import Foundation

/// One file of a feature repository, as sent to the control plane.
public struct RepositoryFile: Sendable, Codable, Hashable {
    /// The path relative to the repository root, such as `features/trips.yaml`.
    public var path: String
    /// The file's text.
    public var contents: String

    /// Creates a file.
    public init(path: String, contents: String) {
        self.path = path
        self.contents = contents
    }
}

/// `POST /v1/workspaces/{ws}/plans`: the whole repository, as files. The
/// control plane reads and validates them with the same code as `larder validate`.
public struct PlanRequest: Sendable, Codable {
    /// Every file of the repository, `larder.yaml` included.
    public var files: [RepositoryFile]

    /// Creates a request.
    public init(files: [RepositoryFile]) { self.files = files }
}

/// What applying a plan does to one object.
public enum PlanAction: String, Sendable, Codable, CaseIterable {
    /// The object is new (or comes back after being retired).
    case create
    /// Its semantic definition changed: it gets another version.
    case newVersion = "new_version"
    /// Only operational or descriptive fields changed: the current version is updated in place.
    case update
    /// It is no longer in the repository: it stops being current, its versions stay.
    case retire
    /// Nothing changed.
    case unchanged
}

/// One changed field: where, and its value before and after (absent = nil).
public struct FieldChange: Sendable, Codable, Hashable {
    /// A path into the canonical spec, such as `spec.aggregations[1].windows[0]` or `metadata.owner`.
    public var path: String
    /// The value before, if there was one.
    public var before: JSONValue?
    /// The value after, if there is one.
    public var after: JSONValue?

    /// Creates a field change.
    public init(path: String, before: JSONValue?, after: JSONValue?) {
        self.path = path
        self.before = before
        self.after = after
    }
}

/// What a plan does to one object, and what it reaches downstream.
public struct PlannedChange: Sendable, Codable, Hashable {
    /// The object's kind.
    public var kind: ObjectKind
    /// The object's name.
    public var name: String
    /// What happens to it.
    public var action: PlanAction
    /// The current version before the apply, if any.
    public var fromVersion: Int?
    /// The current version after the apply; nil when retired. May be an
    /// existing version when the definition returns to content applied before.
    public var toVersion: Int?
    /// The content hash after the apply (before, for a retirement).
    public var contentHash: String
    /// Field-level differences from the current state.
    public var fieldChanges: [FieldChange]
    /// The on-demand views and feature services this change reaches through lineage.
    public var impact: [ObjectKey]

    /// Creates a planned change.
    public init(
        kind: ObjectKind, name: String, action: PlanAction, fromVersion: Int?, toVersion: Int?, contentHash: String,
        fieldChanges: [FieldChange], impact: [ObjectKey]
    ) {
        self.kind = kind
        self.name = name
        self.action = action
        self.fromVersion = fromVersion
        self.toVersion = toVersion
        self.contentHash = contentHash
        self.fieldChanges = fieldChanges
        self.impact = impact
    }
}

/// A computed plan: what applying the repository would change, against one
/// registry revision.
public struct PlanResource: Sendable, Codable {
    /// The plan's id, to apply it.
    public var id: UUID
    /// The workspace it applies to.
    public var workspace: String
    /// The registry revision it was computed against; applying fails with 409
    /// once the workspace has moved past it.
    public var baseRevision: Int64
    /// Every object of the repository and the registry, with its action, in dependency order.
    public var changes: [PlannedChange]
    /// When it was computed.
    public var createdAt: Date
    /// Who computed it.
    public var createdBy: String
    /// When it was applied, if it was.
    public var appliedAt: Date?

    /// Creates a plan resource.
    public init(
        id: UUID, workspace: String, baseRevision: Int64, changes: [PlannedChange], createdAt: Date, createdBy: String,
        appliedAt: Date?
    ) {
        self.id = id
        self.workspace = workspace
        self.baseRevision = baseRevision
        self.changes = changes
        self.createdAt = createdAt
        self.createdBy = createdBy
        self.appliedAt = appliedAt
    }

    /// Whether applying would change anything.
    public var hasChanges: Bool { changes.contains { $0.action != .unchanged } }

    /// How many objects get each action.
    public var summary: [PlanAction: Int] {
        Dictionary(grouping: changes, by: \.action).mapValues(\.count)
    }
}

/// `POST /v1/workspaces/{ws}/applies`.
public struct ApplyRequest: Sendable, Codable {
    /// The plan to apply.
    public var planId: UUID

    /// Creates a request.
    public init(planId: UUID) { self.planId = planId }
}

/// A recorded apply.
public struct ApplyResource: Sendable, Codable {
    /// The apply's sequence number in the workspace.
    public var id: Int64
    /// The plan applied.
    public var planId: UUID
    /// The workspace.
    public var workspace: String
    /// The registry revision after the apply.
    public var revision: Int64
    /// Whether the apply changed anything (an unchanged repository applies as a no-op).
    public var changed: Bool
    /// The changes made (unchanged objects left out).
    public var changes: [PlannedChange]
    /// Who applied it.
    public var appliedBy: String
    /// When.
    public var appliedAt: Date

    /// Creates an apply resource.
    public init(
        id: Int64, planId: UUID, workspace: String, revision: Int64, changed: Bool, changes: [PlannedChange], appliedBy: String,
        appliedAt: Date
    ) {
        self.id = id
        self.planId = planId
        self.workspace = workspace
        self.revision = revision
        self.changed = changed
        self.changes = changes
        self.appliedBy = appliedBy
        self.appliedAt = appliedAt
    }
}

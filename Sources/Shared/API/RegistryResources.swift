import Foundation

/// A workspace: the unit of ownership and access of a set of definitions.
public struct WorkspaceResource: Sendable, Codable, Hashable {
    /// The workspace's name.
    public var name: String
    /// Free-text description.
    public var description: String?
    /// The registry revision: increases by one with every apply that changes something.
    public var revision: Int64
    /// How many objects are current (not retired).
    public var objectCount: Int
    /// When it was created.
    public var createdAt: Date
    /// Who created it.
    public var createdBy: String

    /// Creates a workspace resource.
    public init(name: String, description: String?, revision: Int64, objectCount: Int, createdAt: Date, createdBy: String) {
        self.name = name
        self.description = description
        self.revision = revision
        self.objectCount = objectCount
        self.createdAt = createdAt
        self.createdBy = createdBy
    }
}

/// `POST /v1/workspaces`.
public struct CreateWorkspaceRequest: Sendable, Codable {
    /// The new workspace's name.
    public var name: String
    /// Free-text description.
    public var description: String?

    /// Creates a request.
    public init(name: String, description: String? = nil) {
        self.name = name
        self.description = description
    }
}

/// The URL path segment of each object kind: `/v1/workspaces/{ws}/{segment}`.
public enum ObjectCollection: String, Sendable, Codable, CaseIterable {
    case entities
    case sources
    case featureViews = "feature-views"
    case onDemandFeatureViews = "on-demand-feature-views"
    case featureServices = "feature-services"
    case entityQueries = "entity-queries"

    /// The kinds listed under this segment (sources has three).
    public var kinds: [ObjectKind] {
        switch self {
        case .entities: return [.entity]
        case .sources: return [.postgresSource, .fileSource, .pushSource]
        case .featureViews: return [.featureView]
        case .onDemandFeatureViews: return [.onDemandFeatureView]
        case .featureServices: return [.featureService]
        case .entityQueries: return [.entityQuery]
        }
    }

    /// The segment a kind is listed under.
    public init(kind: ObjectKind) {
        switch kind {
        case .entity: self = .entities
        case .postgresSource, .fileSource, .pushSource: self = .sources
        case .featureView: self = .featureViews
        case .onDemandFeatureView: self = .onDemandFeatureViews
        case .featureService: self = .featureServices
        case .entityQuery: self = .entityQueries
        }
    }

    /// Accepts the segment, the kind's YAML name, or a few natural spellings
    /// (`views`, `services`, `FeatureView`), for the CLI.
    public init?(userSpelling text: String) {
        let lowered = text.lowercased().replacingOccurrences(of: "_", with: "-")
        if let exact = ObjectCollection(rawValue: lowered) {
            self = exact
            return
        }
        if let kind = ObjectKind.allCases.first(where: { $0.rawValue.lowercased() == text.lowercased() }) {
            self.init(kind: kind)
            return
        }
        switch lowered {
        case "entity": self = .entities
        case "source", "postgres-sources", "file-sources", "push-sources": self = .sources
        case "views", "view", "feature-view", "fv", "fvs": self = .featureViews
        case "on-demand-views", "on-demand-view", "on-demand-feature-view", "odfv", "odfvs": self = .onDemandFeatureViews
        case "services", "service", "feature-service": self = .featureServices
        case "entity-query", "queries", "query": self = .entityQueries
        default: return nil
        }
    }
}

/// One registry object with its current state.
public struct ObjectResource: Sendable, Codable, Hashable {
    /// The object's kind.
    public var kind: ObjectKind
    /// The object's name.
    public var name: String
    /// The current version; nil when the object is retired.
    public var currentVersion: Int?
    /// The highest version number ever created.
    public var latestVersion: Int
    /// The content hash of the current (or, when retired, latest) version.
    public var contentHash: String
    /// Description, owner and tags as currently applied.
    public var description: String?
    /// Who to ask about the object.
    public var owner: String?
    /// Labels.
    public var tags: [String: String]
    /// The current canonical spec: `spec` (semantic), `operational`, `metadata`.
    public var spec: JSONValue
    /// When the object was retired, if it is.
    public var retiredAt: Date?
    /// When the object was first created.
    public var createdAt: Date
    /// When its current state was last changed by an apply.
    public var updatedAt: Date

    /// Creates an object resource.
    public init(
        kind: ObjectKind, name: String, currentVersion: Int?, latestVersion: Int, contentHash: String, description: String?,
        owner: String?, tags: [String: String], spec: JSONValue, retiredAt: Date?, createdAt: Date, updatedAt: Date
    ) {
        self.kind = kind
        self.name = name
        self.currentVersion = currentVersion
        self.latestVersion = latestVersion
        self.contentHash = contentHash
        self.description = description
        self.owner = owner
        self.tags = tags
        self.spec = spec
        self.retiredAt = retiredAt
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

/// One immutable version of an object.
public struct VersionResource: Sendable, Codable, Hashable {
    /// The object's kind.
    public var kind: ObjectKind
    /// The object's name.
    public var name: String
    /// The version number, from 1.
    public var version: Int
    /// The content hash that identifies it.
    public var contentHash: String
    /// The canonical spec as applied when the version was created.
    public var spec: JSONValue
    /// What this version read when it was created: kind, name and version of each upstream object.
    public var upstream: [LineageNode]
    /// When it was created.
    public var createdAt: Date
    /// Who applied it.
    public var createdBy: String
    /// Whether it is the object's current version.
    public var isCurrent: Bool

    /// Creates a version resource.
    public init(
        kind: ObjectKind, name: String, version: Int, contentHash: String, spec: JSONValue, upstream: [LineageNode],
        createdAt: Date, createdBy: String, isCurrent: Bool
    ) {
        self.kind = kind
        self.name = name
        self.version = version
        self.contentHash = contentHash
        self.spec = spec
        self.upstream = upstream
        self.createdAt = createdAt
        self.createdBy = createdBy
        self.isCurrent = isCurrent
    }
}

/// A version of an object in a lineage graph.
public struct LineageNode: Sendable, Codable, Hashable, Comparable {
    /// The object's kind.
    public var kind: ObjectKind
    /// The object's name.
    public var name: String
    /// The version.
    public var version: Int
    /// Whether it is the object's current version.
    public var isCurrent: Bool

    /// Creates a node.
    public init(kind: ObjectKind, name: String, version: Int, isCurrent: Bool) {
        self.kind = kind
        self.name = name
        self.version = version
        self.isCurrent = isCurrent
    }

    public static func < (lhs: LineageNode, rhs: LineageNode) -> Bool {
        (lhs.kind.rawValue, lhs.name, lhs.version) < (rhs.kind.rawValue, rhs.name, rhs.version)
    }
}

/// A directed edge: `downstream` was built from `upstream`.
public struct LineageEdge: Sendable, Codable, Hashable, Comparable {
    /// The version that reads.
    public var downstream: LineageNode
    /// The version read.
    public var upstream: LineageNode

    /// Creates an edge.
    public init(downstream: LineageNode, upstream: LineageNode) {
        self.downstream = downstream
        self.upstream = upstream
    }

    public static func < (lhs: LineageEdge, rhs: LineageEdge) -> Bool {
        (lhs.downstream, lhs.upstream) < (rhs.downstream, rhs.upstream)
    }
}

/// Which way a lineage query walks.
public enum LineageDirection: String, Sendable, Codable, CaseIterable {
    /// Towards what the object reads (sources, entities).
    case upstream
    /// Towards what reads the object (views, services).
    case downstream
}

/// The answer to a lineage query: the versions reached and the edges between them.
public struct LineageGraph: Sendable, Codable, Hashable {
    /// The version the walk started from.
    public var root: LineageNode
    /// The direction walked.
    public var direction: LineageDirection
    /// The maximum number of edges walked from the root.
    public var depth: Int
    /// Every version reached, the root included, sorted.
    public var nodes: [LineageNode]
    /// Every edge walked, sorted.
    public var edges: [LineageEdge]

    /// Creates a graph.
    public init(root: LineageNode, direction: LineageDirection, depth: Int, nodes: [LineageNode], edges: [LineageEdge]) {
        self.root = root
        self.direction = direction
        self.depth = depth
        self.nodes = nodes
        self.edges = edges
    }
}

/// One catalog search hit.
public struct SearchResult: Sendable, Codable, Hashable {
    /// The object's kind.
    public var kind: ObjectKind
    /// The object's name.
    public var name: String
    /// Its current version.
    public var currentVersion: Int
    /// Its description.
    public var description: String?
    /// Its owner.
    public var owner: String?
    /// Its tags.
    public var tags: [String: String]
    /// How well it matched; higher is better.
    public var rank: Double

    /// Creates a hit.
    public init(kind: ObjectKind, name: String, currentVersion: Int, description: String?, owner: String?, tags: [String: String], rank: Double) {
        self.kind = kind
        self.name = name
        self.currentVersion = currentVersion
        self.description = description
        self.owner = owner
        self.tags = tags
        self.rank = rank
    }
}

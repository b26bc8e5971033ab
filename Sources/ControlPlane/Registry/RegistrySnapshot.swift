import Shared

/// What the registry holds for one workspace, as far as planning needs it.
public struct RegistrySnapshot: Sendable {
    /// One object's state.
    public struct ObjectState: Sendable {
        /// The current version; nil when retired.
        public var currentVersion: Int?
        /// The highest version number created so far.
        public var latestVersion: Int
        /// The content hash of the current version (the latest one when retired).
        public var contentHash: String
        /// The semantic spec of that version.
        public var semantic: JSONValue
        /// The operational part as currently applied.
        public var operational: JSONValue
        /// The descriptive part as currently applied.
        public var descriptive: JSONValue
        /// Every version's number by its content hash, to reuse a version when
        /// a definition returns to earlier content.
        public var versionsByHash: [String: Int]

        /// Creates an object state.
        public init(
            currentVersion: Int?, latestVersion: Int, contentHash: String, semantic: JSONValue, operational: JSONValue,
            descriptive: JSONValue, versionsByHash: [String: Int]
        ) {
            self.currentVersion = currentVersion
            self.latestVersion = latestVersion
            self.contentHash = contentHash
            self.semantic = semantic
            self.operational = operational
            self.descriptive = descriptive
            self.versionsByHash = versionsByHash
        }
    }

    /// The workspace's registry revision.
    public var revision: Int64
    /// Every object ever applied in the workspace, retired ones included.
    public var objects: [ObjectKey: ObjectState]
    /// For each current object, the objects its current version reads.
    public var currentUpstream: [ObjectKey: [ObjectKey]]

    /// Creates a snapshot.
    public init(revision: Int64, objects: [ObjectKey: ObjectState] = [:], currentUpstream: [ObjectKey: [ObjectKey]] = [:]) {
        self.revision = revision
        self.objects = objects
        self.currentUpstream = currentUpstream
    }
}

import Foundation
import Shared

/// What the registry holds for one workspace, as far as planning needs it.
///
/// The stored parts are kept as the database's JSON text and decoded only for
/// objects whose hashes say they changed: most objects of a plan are unchanged.
public struct RegistrySnapshot: Sendable {
    /// One object's state.
    public struct ObjectState: Sendable {
        /// The current version; nil when retired.
        public var currentVersion: Int?
        /// The highest version number created so far.
        public var latestVersion: Int
        /// The content hash of the current version (the latest one when retired).
        public var contentHash: String
        /// The hash of the operational and descriptive parts as applied.
        public var stateHash: String
        /// The semantic spec of that version, as JSON text.
        public var semanticJSON: String
        /// The operational part as currently applied, as JSON text.
        public var operationalJSON: String
        /// The descriptive part as currently applied, as JSON text.
        public var descriptiveJSON: String
        /// Every version's number by its content hash, to reuse a version when
        /// a definition returns to earlier content.
        public var versionsByHash: [String: Int]

        /// Creates an object state.
        public init(
            currentVersion: Int?, latestVersion: Int, contentHash: String, stateHash: String, semanticJSON: String,
            operationalJSON: String, descriptiveJSON: String, versionsByHash: [String: Int]
        ) {
            self.currentVersion = currentVersion
            self.latestVersion = latestVersion
            self.contentHash = contentHash
            self.stateHash = stateHash
            self.semanticJSON = semanticJSON
            self.operationalJSON = operationalJSON
            self.descriptiveJSON = descriptiveJSON
            self.versionsByHash = versionsByHash
        }

        /// The state of an object as `definition` at version 1 would leave it.
        public init(applied definition: CanonicalDefinition, version: Int = 1) {
            self.init(
                currentVersion: version, latestVersion: version, contentHash: definition.contentHash, stateHash: definition.stateHash,
                semanticJSON: definition.semantic.canonicalString, operationalJSON: definition.operational.canonicalString,
                descriptiveJSON: definition.descriptive.canonicalString, versionsByHash: [definition.contentHash: version])
        }

        static func decode(_ text: String) -> JSONValue {
            (try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))) ?? .null
        }

        var semantic: JSONValue { Self.decode(semanticJSON) }
        var operational: JSONValue { Self.decode(operationalJSON) }
        var descriptive: JSONValue { Self.decode(descriptiveJSON) }
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

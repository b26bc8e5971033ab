import Foundation

/// The result of validating a repository, as `larder validate` shows it.
public struct ValidationReport: Sendable, Codable {
    /// One valid object with its version identity.
    public struct ObjectSummary: Sendable, Codable, Hashable {
        /// The object's kind.
        public var kind: ObjectKind
        /// The object's name.
        public var name: String
        /// The content hash that identifies its version.
        public var contentHash: String
    }

    /// Whether the repository has no mistakes.
    public var valid: Bool
    /// The workspace named in `larder.yaml` (empty when it could not be read).
    public var workspace: String
    /// The files read, relative to the repository root.
    public var files: [String]
    /// The objects and their content hashes (empty when invalid).
    public var objects: [ObjectSummary]
    /// Every mistake, in file order.
    public var diagnostics: [RepositoryDiagnostic]

    /// Builds the report of a loaded repository.
    public init(_ loaded: LoadedRepository) {
        valid = loaded.isValid
        workspace = loaded.repository.config.workspace
        files = loaded.files
        diagnostics = loaded.diagnostics
        objects = loaded.isValid
            ? DefinitionCanonicalizer.canonicalize(loaded.repository).map {
                ObjectSummary(kind: $0.key.kind, name: $0.key.name, contentHash: $0.contentHash)
            }
            : []
    }

    /// The report for a terminal: one line per mistake and a count, or a
    /// summary of the objects with short version hashes. File names are shown
    /// under `pathPrefix` (the repository folder as the user named it).
    public func text(pathPrefix: String = "") -> String {
        if !valid {
            let lines = diagnostics.map { diagnostic in
                var shown = diagnostic
                if !pathPrefix.isEmpty, pathPrefix != "." {
                    shown.location.file = (pathPrefix.hasSuffix("/") ? pathPrefix : pathPrefix + "/") + diagnostic.location.file
                }
                return shown.description
            }
            let noun = diagnostics.count == 1 ? "error" : "errors"
            return (lines + ["\(diagnostics.count) \(noun) in repository '\(workspace)'"]).joined(separator: "\n")
        }
        var lines = ["repository '\(workspace)' is valid: \(files.count) files, \(objects.count) objects"]
        let kindWidth = objects.map(\.kind.rawValue.count).max() ?? 0
        let nameWidth = objects.map(\.name.count).max() ?? 0
        for object in objects {
            let kind = object.kind.rawValue.padding(toLength: kindWidth, withPad: " ", startingAt: 0)
            let name = object.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0)
            lines.append("  \(kind)  \(name)  \(object.contentHash.prefix(12))")
        }
        return lines.joined(separator: "\n")
    }
}

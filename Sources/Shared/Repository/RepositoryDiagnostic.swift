/// A position in a feature-repository file: the file's path relative to the
/// repository root, and a 1-based line and column.
public struct SourceLocation: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
    /// Path of the file, relative to the repository root.
    public var file: String
    /// Line number, starting at 1.
    public var line: Int
    /// Column number, starting at 1.
    public var column: Int

    /// Creates a location.
    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }

    public static func < (lhs: SourceLocation, rhs: SourceLocation) -> Bool {
        (lhs.file, lhs.line, lhs.column) < (rhs.file, rhs.line, rhs.column)
    }
}

/// One mistake found in a feature repository, with where it is and what to do.
///
/// Diagnostics are collected, never thrown one by one: `larder validate` reports
/// every mistake of a repository in one run.
public struct RepositoryDiagnostic: Sendable, Hashable, Codable, CustomStringConvertible {
    /// A stable, machine-readable class of mistake. The raw values are part of
    /// the CLI's `--json` output and never change meaning.
    public enum Code: String, Sendable, Hashable, Codable, CaseIterable {
        case missingConfig = "missing-config"
        case unreadableFile = "unreadable-file"
        case yamlSyntax = "yaml-syntax"
        case notAMapping = "not-a-mapping"
        case missingKind = "missing-kind"
        case unknownKind = "unknown-kind"
        case unknownField = "unknown-field"
        case missingField = "missing-field"
        case duplicateField = "duplicate-field"
        case wrongShape = "wrong-shape"
        case conflictingFields = "conflicting-fields"
        case invalidIdentifier = "invalid-identifier"
        case duplicateName = "duplicate-name"
        case unknownReference = "unknown-reference"
        case unknownFeature = "unknown-feature"
        case unknownType = "unknown-type"
        /// A type Larder knows but cannot yet materialize, store and serve (the array types).
        case unsupportedType = "unsupported-type"
        case typeMismatch = "type-mismatch"
        case invalidDuration = "invalid-duration"
        case invalidWindow = "invalid-window"
        case invalidTTL = "invalid-ttl"
        case invalidSchedule = "invalid-schedule"
        case invalidTimestamp = "invalid-timestamp"
        case invalidValue = "invalid-value"
        case dependencyCycle = "dependency-cycle"
        case invalidExpression = "invalid-expression"
    }

    /// What kind of mistake this is.
    public var code: Code
    /// Where the offending text starts.
    public var location: SourceLocation
    /// The object the mistake belongs to, as `Kind name` (for example
    /// `FeatureView driver_hourly_stats`), when it is known.
    public var object: String?
    /// The path of the offending field inside the object, such as
    /// `features[1].type`; empty when the whole document is at fault.
    public var fieldPath: String
    /// What is wrong, for a person.
    public var message: String
    /// What probably fixes it, when there is a good guess.
    public var hint: String?

    /// Creates a diagnostic.
    public init(
        code: Code, location: SourceLocation, object: String? = nil, fieldPath: String = "",
        message: String, hint: String? = nil
    ) {
        self.code = code
        self.location = location
        self.object = object
        self.fieldPath = fieldPath
        self.message = message
        self.hint = hint
    }

    /// `file:line:column: error[code] Object › field: message (hint: …)`.
    public var description: String {
        var text = "\(location): error[\(code.rawValue)] "
        if let object { text += object }
        if !fieldPath.isEmpty { text += (object == nil ? "" : " › ") + fieldPath }
        if object != nil || !fieldPath.isEmpty { text += ": " }
        text += message
        if let hint { text += " (hint: \(hint))" }
        return text
    }
}

extension RepositoryDiagnostic: Comparable {
    public static func < (lhs: RepositoryDiagnostic, rhs: RepositoryDiagnostic) -> Bool {
        if lhs.location != rhs.location { return lhs.location < rhs.location }
        return (lhs.code.rawValue, lhs.fieldPath) < (rhs.code.rawValue, rhs.fieldPath)
    }
}

/// Suggests the known word closest to a misspelt one ("did you mean …?").
enum SpellingSuggestion {
    /// The candidate within a small edit distance of `word`, if any.
    static func closest(to word: String, among candidates: some Sequence<String>) -> String? {
        let lowered = word.lowercased()
        var best: (candidate: String, distance: Int)?
        for candidate in candidates {
            let distance = editDistance(lowered, candidate.lowercased())
            let limit = max(1, min(3, candidate.count / 3))
            guard distance <= limit else { continue }
            if best == nil || distance < best!.distance { best = (candidate, distance) }
        }
        return best?.candidate
    }

    /// Levenshtein distance between two strings, by characters.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }

    /// A hint naming the closest candidate, or listing the candidates when few.
    static func hint(for word: String, among candidates: [String]) -> String? {
        if let match = closest(to: word, among: candidates) { return "did you mean '\(match)'?" }
        if candidates.count <= 8, !candidates.isEmpty {
            return "expected one of: " + candidates.joined(separator: ", ")
        }
        return nil
    }
}

import Foundation
import Yams

/// Collects diagnostics and field locations while one YAML document is read.
///
/// Reading never stops at the first mistake: each accessor reports what is
/// wrong and returns nil, so the caller carries on with the next field.
final class DocumentReadingContext {
    /// The file's path relative to the repository root.
    let file: String
    /// The object being read, as `Kind name`, once its name is known.
    var object: String?
    /// Every mistake found so far.
    private(set) var diagnostics: [RepositoryDiagnostic] = []
    /// Where each field path was written.
    private(set) var fieldLocations: [String: SourceLocation] = [:]

    init(file: String) { self.file = file }

    func location(of node: Node) -> SourceLocation {
        let mark = node.mark
        return SourceLocation(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1)
    }

    func record(_ path: String, at node: Node) {
        if fieldLocations[path] == nil { fieldLocations[path] = location(of: node) }
    }

    func report(
        _ code: RepositoryDiagnostic.Code, at location: SourceLocation, path: String, _ message: String, hint: String? = nil
    ) {
        diagnostics.append(RepositoryDiagnostic(
            code: code, location: location, object: object, fieldPath: path, message: message, hint: hint))
    }

    func report(_ code: RepositoryDiagnostic.Code, at node: Node, path: String, _ message: String, hint: String? = nil) {
        report(code, at: location(of: node), path: path, message, hint: hint)
    }

    /// The origin of the object read so far, for later semantic checks.
    func origin(of node: Node) -> DefinitionOrigin {
        DefinitionOrigin(location: location(of: node), fields: fieldLocations)
    }
}

/// Joins a field path and a key: `features[1]` + `type` → `features[1].type`.
func joinPath(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

/// Reads the fields of one YAML mapping, reporting unknown, duplicate, missing
/// and mistyped fields against a declared set of allowed keys.
struct YAMLFieldReader {
    let node: Node
    let path: String
    let context: DocumentReadingContext
    private let entries: [String: (key: Node, value: Node)]

    /// Reads `node` as a mapping whose keys must be among `allowed`; nil (with
    /// a diagnostic) when it is not a mapping.
    init?(_ node: Node, path: String, allowed: [String], context: DocumentReadingContext) {
        guard case .mapping(let mapping) = node else {
            context.report(.wrongShape, at: node, path: path, "expected a mapping of fields, found \(Self.describe(node))")
            return nil
        }
        self.node = node
        self.path = path
        self.context = context
        var entries: [String: (key: Node, value: Node)] = [:]
        for (key, value) in mapping {
            guard let name = key.scalar?.string else {
                context.report(.wrongShape, at: key, path: path, "field names must be plain text")
                continue
            }
            guard allowed.contains(name) else {
                context.report(
                    .unknownField, at: key, path: joinPath(path, name), "unknown field '\(name)'",
                    hint: SpellingSuggestion.hint(for: name, among: allowed))
                continue
            }
            entries[name] = (key, value)
        }
        self.entries = entries
    }

    /// A short description of a node's shape for messages.
    static func describe(_ node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .scalar(let scalar): return isNull(node) ? "nothing" : "'\(scalar.string)'"
        case .alias: return "an alias"
        }
    }

    /// Whether a node is YAML null (`~`, `null`, or nothing at all).
    static func isNull(_ node: Node) -> Bool {
        guard case .scalar(let scalar) = node, scalar.style == .plain else { return false }
        return ["", "~", "null", "Null", "NULL"].contains(scalar.string)
    }

    /// Whether the field is present (and not null).
    func has(_ key: String) -> Bool {
        guard let value = entries[key]?.value else { return false }
        return !Self.isNull(value)
    }

    /// The raw value node of a present, non-null field, recording its location.
    func value(_ key: String, required: Bool = false) -> Node? {
        guard let value = entries[key]?.value, !Self.isNull(value) else {
            if required {
                context.report(.missingField, at: node, path: joinPath(path, key), "missing required field '\(key)'")
            }
            return nil
        }
        context.record(joinPath(path, key), at: value)
        return value
    }

    /// The location where a field's value was written, or the mapping's.
    func location(of key: String) -> SourceLocation {
        context.location(of: entries[key]?.value ?? node)
    }

    /// A text field.
    func string(_ key: String, required: Bool = false) -> String? {
        guard let value = value(key, required: required) else { return nil }
        return Self.scalarText(value, path: joinPath(path, key), context: context)
    }

    /// The text of a scalar node, or nil with a `wrong-shape` diagnostic.
    static func scalarText(_ node: Node, path: String, context: DocumentReadingContext) -> String? {
        guard case .scalar(let scalar) = node else {
            context.report(.wrongShape, at: node, path: path, "expected a single value, found \(describe(node))")
            return nil
        }
        return scalar.string
    }

    /// A name field, checked against the identifier rules.
    func identifier(_ key: String, required: Bool = false) -> String? {
        guard let text = string(key, required: required) else { return nil }
        return Self.checkedIdentifier(text, at: entries[key]!.value, path: joinPath(path, key), context: context)
    }

    /// `text` if it is a valid identifier; otherwise nil with a diagnostic.
    static func checkedIdentifier(_ text: String, at node: Node, path: String, context: DocumentReadingContext) -> String? {
        guard Identifier.isValid(text) else {
            context.report(
                .invalidIdentifier, at: node, path: path, "'\(text)' is not a valid name",
                hint: Identifier.repairHint(for: text))
            return nil
        }
        return text
    }

    /// A `true`/`false` field.
    func bool(_ key: String) -> Bool? {
        guard let value = value(key) else { return nil }
        guard case .scalar(let scalar) = value, ["true", "false"].contains(scalar.string.lowercased()) else {
            context.report(.wrongShape, at: value, path: joinPath(path, key), "expected true or false, found \(Self.describe(value))")
            return nil
        }
        return scalar.string.lowercased() == "true"
    }

    /// A whole-number field.
    func integer(_ key: String) -> Int? {
        guard let value = value(key), let text = string(key) else { return nil }
        guard let number = Int(text) else {
            context.report(.wrongShape, at: value, path: joinPath(path, key), "expected a whole number, found '\(text)'")
            return nil
        }
        return number
    }

    /// A number field (whole or with a fraction).
    func number(_ key: String) -> Double? {
        guard let value = value(key), let text = string(key) else { return nil }
        guard let number = Double(text), number.isFinite else {
            context.report(.wrongShape, at: value, path: joinPath(path, key), "expected a number, found '\(text)'")
            return nil
        }
        return number
    }

    /// A duration field such as `1h` or `7d`.
    func timeSpan(_ key: String, code: RepositoryDiagnostic.Code = .invalidDuration, required: Bool = false) -> TimeSpan? {
        guard let value = value(key, required: required), let text = string(key) else { return nil }
        return Self.parseTimeSpan(text, at: value, path: joinPath(path, key), code: code, context: context)
    }

    static func parseTimeSpan(
        _ text: String, at node: Node, path: String, code: RepositoryDiagnostic.Code, context: DocumentReadingContext
    ) -> TimeSpan? {
        do {
            return try TimeSpan.parse(text)
        } catch .negative {
            context.report(code, at: node, path: path, "'\(text)' is negative; durations must be zero or more")
        } catch {
            context.report(
                code, at: node, path: path, "'\(text)' is not a duration",
                hint: "write a number and a unit (s, m, h, d, w), such as 30m, 1h, 7d or 1h30m")
        }
        return nil
    }

    /// An RFC 3339 timestamp field with an explicit offset, such as `2025-01-01T00:00:00Z`.
    func timestamp(_ key: String) -> Date? {
        guard let value = value(key), let text = string(key) else { return nil }
        if let date = RFC3339.parse(text) { return date }
        context.report(
            .invalidTimestamp, at: value, path: joinPath(path, key), "'\(text)' is not an RFC 3339 timestamp",
            hint: "write a UTC time such as 2025-01-01T00:00:00Z")
        return nil
    }

    /// A type field such as `float64` or `array<float32>`.
    func valueType(_ key: String, required: Bool = false) -> ValueType? {
        guard let value = value(key, required: required), let text = string(key) else { return nil }
        return Self.parseType(text, at: value, path: joinPath(path, key), context: context)
    }

    static func parseType(_ text: String, at node: Node, path: String, context: DocumentReadingContext) -> ValueType? {
        if let type = ValueType(spelling: text) {
            // What validate accepts, jobs run: lists are not materialized, stored or served yet.
            guard !type.isArray else {
                context.report(
                    .unsupportedType, at: node, path: path,
                    "\(type) is not supported yet: columns, keys and features are scalars (int64, int32, float64, float32, bool, string, bytes, timestamp)",
                    hint: "keep the list in a string column (its JSON text, say), or leave the column out")
                return nil
            }
            return type
        }
        context.report(
            .unknownType, at: node, path: path, "unknown type '\(text)'",
            hint: SpellingSuggestion.hint(for: text, among: ValueType.allCases.map(\.rawValue))
                ?? "types are " + ValueType.allCases.map(\.rawValue).joined(separator: ", "))
        return nil
    }

    /// The items of a list field, each with its path (`key[i]`). A single
    /// value where a list is expected counts as a list of one when
    /// `acceptsSingle` is set.
    func list(_ key: String, required: Bool = false, acceptsSingle: Bool = false) -> [(node: Node, path: String)]? {
        guard let value = value(key, required: required) else { return nil }
        let fieldPath = joinPath(path, key)
        switch value {
        case .sequence(let sequence):
            if sequence.isEmpty, required {
                context.report(.missingField, at: value, path: fieldPath, "'\(key)' must not be empty")
            }
            return sequence.enumerated().map { index, item in
                let itemPath = "\(fieldPath)[\(index)]"
                context.record(itemPath, at: item)
                return (item, itemPath)
            }
        case .scalar where acceptsSingle:
            return [(value, fieldPath)]
        default:
            context.report(.wrongShape, at: value, path: fieldPath, "expected a list, found \(Self.describe(value))")
            return nil
        }
    }

    /// The entries of a mapping field whose keys are user-chosen names (such as
    /// `columns: {driver_id: int64}`), each with its key node, value node and path.
    func namedEntries(_ key: String, required: Bool = false) -> [(name: String, key: Node, value: Node, path: String)]? {
        guard let value = value(key, required: required) else { return nil }
        let fieldPath = joinPath(path, key)
        guard case .mapping(let mapping) = value else {
            context.report(
                .wrongShape, at: value, path: fieldPath, "expected a mapping of names to types, found \(Self.describe(value))",
                hint: "write one 'name: type' per line")
            return nil
        }
        if mapping.isEmpty, required {
            context.report(.missingField, at: value, path: fieldPath, "'\(key)' must not be empty")
        }
        return mapping.compactMap { entryKey, entryValue in
            guard let name = entryKey.scalar?.string else {
                context.report(.wrongShape, at: entryKey, path: fieldPath, "names must be plain text")
                return nil
            }
            let entryPath = joinPath(fieldPath, name)
            context.record(entryPath, at: entryKey)
            return (name, entryKey, entryValue, entryPath)
        }
    }

    /// A `name: type` mapping field read as typed columns with valid names.
    func columns(_ key: String, required: Bool = false) -> [Column]? {
        guard let entries = namedEntries(key, required: required) else { return nil }
        var columns: [Column] = []
        for entry in entries {
            let name = Self.checkedIdentifier(entry.name, at: entry.key, path: entry.path, context: context)
            guard let text = Self.scalarText(entry.value, path: entry.path, context: context) else { continue }
            let type = Self.parseType(text, at: entry.value, path: entry.path, context: context)
            if let name, let type { columns.append(Column(name: name, type: type)) }
        }
        return columns
    }

    /// A mapping of text to text (tags).
    func stringMap(_ key: String) -> [String: String] {
        guard let entries = namedEntries(key) else { return [:] }
        var map: [String: String] = [:]
        for entry in entries {
            if let text = Self.scalarText(entry.value, path: entry.path, context: context) { map[entry.name] = text }
        }
        return map
    }

    /// The `description`, `owner` and `tags` fields.
    func metadata() -> DefinitionMetadata {
        DefinitionMetadata(description: string("description"), owner: string("owner"), tags: stringMap("tags"))
    }

    /// Reports that two fields exclude each other when both are present.
    func exclusive(_ first: String, _ second: String) -> Bool {
        guard has(first), has(second) else { return true }
        context.report(
            .conflictingFields, at: location(of: second), path: joinPath(path, second),
            "'\(first)' and '\(second)' cannot both be set", hint: "keep one of them")
        return false
    }
}

/// RFC 3339 timestamps with an explicit offset (`Z` or `±hh:mm`).
public enum RFC3339 {
    /// Parses a timestamp with optional fractional seconds; nil without an offset.
    public static func parse(_ text: String) -> Date? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard trimmed.count >= 20 else { return nil }
        let plain = Date.ISO8601FormatStyle(includingFractionalSeconds: false)
        let fractional = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        return (try? plain.parse(trimmed)) ?? (try? fractional.parse(trimmed))
    }

    /// Formats a date in UTC as `2025-01-01T00:00:00Z`.
    public static func format(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: false))
    }
}

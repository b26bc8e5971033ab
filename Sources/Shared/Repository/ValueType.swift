/// The type of a column, join key or feature value.
///
/// Spelt in YAML as `int64`, `int32`, `float64`, `float32`, `bool`, `string`,
/// `bytes`, `timestamp`, or `array<int64>`, `array<float32>`, `array<float64>`,
/// `array<string>` (embeddings and lists).
public enum ValueType: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    case int64
    case int32
    case float64
    case float32
    case bool
    case string
    case bytes
    case timestamp
    case int64Array = "array<int64>"
    case float32Array = "array<float32>"
    case float64Array = "array<float64>"
    case stringArray = "array<string>"

    /// Parses the YAML spelling, tolerating spaces inside `array< … >`.
    public init?(spelling: String) {
        let compact = spelling.filter { !$0.isWhitespace }.lowercased()
        self.init(rawValue: compact)
    }

    public var description: String { rawValue }

    /// Integer and floating-point scalar types.
    public var isNumeric: Bool { isInteger || isFloatingPoint }
    /// `int64` and `int32`.
    public var isInteger: Bool { self == .int64 || self == .int32 }
    /// `float64` and `float32`.
    public var isFloatingPoint: Bool { self == .float64 || self == .float32 }
    /// The list types (`array<…>`), which jobs cannot materialize yet.
    public var isArray: Bool { rawValue.hasPrefix("array<") }
    /// Whether values of this type are totally ordered (so `min`/`max` apply).
    public var isOrdered: Bool { isNumeric || self == .timestamp || self == .string }
    /// Types that may serve as entity join keys: exact, hashable scalars.
    public var canBeJoinKey: Bool { [.int64, .int32, .string, .bytes].contains(self) }
}

/// Validates the names users give to objects, columns and features.
public enum Identifier {
    /// The longest name allowed: PostgreSQL's identifier limit, since names
    /// become parts of table and column names in the stores.
    public static let maximumLength = 63

    /// Whether `name` is a valid object, column or feature name: a lowercase
    /// letter or underscore, then lowercase letters, digits and underscores.
    public static func isValid(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.unicodeScalars.count <= maximumLength else { return false }
        guard first == "_" || ("a"..."z").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ("a"..."z").contains($0) || ("0"..."9").contains($0) }
    }

    /// Whether `name` is a valid workspace name: like an identifier, but
    /// hyphens are allowed after the first character.
    public static func isValidWorkspace(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.unicodeScalars.count <= maximumLength else { return false }
        guard ("a"..."z").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy {
            $0 == "_" || $0 == "-" || ("a"..."z").contains($0) || ("0"..."9").contains($0)
        }
    }

    /// A suggestion for turning an invalid name into a valid one.
    static func repairHint(for name: String) -> String {
        var repaired = ""
        for scalar in name.lowercased().unicodeScalars {
            if ("a"..."z").contains(scalar) || ("0"..."9").contains(scalar) || scalar == "_" {
                repaired.unicodeScalars.append(scalar)
            } else {
                repaired += "_"
            }
        }
        if let first = repaired.unicodeScalars.first, ("0"..."9").contains(first) { repaired = "_" + repaired }
        if repaired.isEmpty || repaired == name {
            return "names use lowercase letters, digits and '_', start with a letter or '_', at most \(maximumLength) characters"
        }
        return "names use lowercase letters, digits and '_'; try '\(repaired.prefix(maximumLength))'"
    }
}

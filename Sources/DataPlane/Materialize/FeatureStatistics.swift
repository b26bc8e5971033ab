import Shared

/// The declared per-feature metrics of a job: how many values, how many
/// nulls, for numbers their min, max and mean, and for features with
/// allowed values how many were not allowed. Nothing else of the values
/// leaves the agent.
struct FeatureStatistics {
    private var names: [String]
    private var counts: [Int64]
    private var nulls: [Int64]
    private var minimums: [Double?]
    private var maximums: [Double?]
    private var sums: [Double]
    /// Per feature: the values it may take, when its expectations list them.
    private let allowed: [AllowedValues?]
    private var disallowed: [Int64]

    /// Statistics of `features`; `allowedValues` maps a feature to the values
    /// it may take, each counted as disallowed otherwise.
    init(features: [String], allowedValues: [String: [String]] = [:]) {
        names = features
        counts = Array(repeating: 0, count: features.count)
        nulls = counts
        disallowed = counts
        minimums = Array(repeating: nil, count: features.count)
        maximums = minimums
        sums = Array(repeating: 0, count: features.count)
        allowed = features.map { allowedValues[$0].map(AllowedValues.init) }
    }

    /// Adds the values of one batch (one column per feature).
    mutating func add(_ columns: [ColumnValues]) {
        for (feature, column) in columns.enumerated() {
            var count: Int64 = 0, missing: Int64 = 0, sum = 0.0
            var low = minimums[feature], high = maximums[feature]
            func numbers<T>(_ values: [T?], _ number: (T) -> Double) {
                for value in values {
                    guard let value else { missing += 1; continue }
                    let x = number(value)
                    count += 1
                    sum += x
                    if low.map({ x < $0 }) ?? true { low = x }
                    if high.map({ x > $0 }) ?? true { high = x }
                }
            }
            switch column {
            case .int64(let values): numbers(values) { Double($0) }
            case .float64(let values): numbers(values) { $0 }
            case .timestamp(let values): numbers(values) { Double($0) / 1_000_000 }
            case .bool(let values):
                for value in values { if value == nil { missing += 1 } else { count += 1 } }
            case .string(let values):
                for value in values { if value == nil { missing += 1 } else { count += 1 } }
            }
            if let allowed = allowed[feature] { disallowed[feature] += Self.countDisallowed(column, allowed: allowed) }
            counts[feature] += count
            nulls[feature] += missing
            sums[feature] += sum
            minimums[feature] = low
            maximums[feature] = high
        }
    }

    /// A feature's allowed values, read once from their text: strings as
    /// written, integers in decimal, bools as `true`/`false` in any case.
    struct AllowedValues {
        let strings: Set<String>
        let integers: Set<Int64>
        let bools: Set<Bool>

        init(_ texts: [String]) {
            strings = Set(texts)
            integers = Set(texts.compactMap { Int64($0) })
            bools = Set(texts.compactMap { Bool($0.lowercased()) })
        }
    }

    /// The non-null values of `column` not among `allowed`.
    static func countDisallowed(_ column: ColumnValues, allowed: AllowedValues) -> Int64 {
        var outside: Int64 = 0
        switch column {
        case .string(let values):
            for case let value? in values where !allowed.strings.contains(value) { outside += 1 }
        case .int64(let values):
            for case let value? in values where !allowed.integers.contains(value) { outside += 1 }
        case .bool(let values):
            for case let value? in values where !allowed.bools.contains(value) { outside += 1 }
        case .float64(let values):
            for case _? in values { outside += 1 }
        case .timestamp(let values):
            for case _? in values { outside += 1 }
        }
        return outside
    }

    /// The summaries, one per feature.
    var summaries: [FeatureSummary] {
        names.indices.map { feature in
            FeatureSummary(
                feature: names[feature], count: counts[feature], nullCount: nulls[feature], min: minimums[feature], max: maximums[feature],
                mean: minimums[feature] == nil || counts[feature] == 0 ? nil : sums[feature] / Double(counts[feature]),
                disallowedCount: allowed[feature] == nil ? nil : disallowed[feature])
        }
    }
}

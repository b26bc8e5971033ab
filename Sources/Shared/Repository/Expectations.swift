import Foundation

/// What a job does when its data breaks one of its view's expectations.
public enum ViolationPolicy: String, Sendable, Hashable, Codable, CaseIterable {
    /// The job fails and writes nothing: the online store and the offline
    /// interval keep what they held before it.
    case fail
    /// The job writes as usual; the violation is reported and alerted on.
    case warn
}

/// The checks declared for one feature of a view.
public struct FeatureExpectation: Sendable, Hashable, Codable {
    /// The feature's name (for aggregation views, the generated name such as `trips_count_1d`).
    public var feature: String
    /// The greatest share of null values a job may write, from 0 to 1.
    public var maxNullFraction: Double?
    /// No value may be below this.
    public var min: Double?
    /// No value may be above this.
    public var max: Double?
    /// Every non-null value must be one of these (string, int64 and bool features).
    public var allowedValues: [String]?

    /// Creates the checks of a feature.
    public init(feature: String, maxNullFraction: Double? = nil, min: Double? = nil, max: Double? = nil, allowedValues: [String]? = nil) {
        self.feature = feature
        self.maxNullFraction = maxNullFraction
        self.min = min
        self.max = max
        self.allowedValues = allowedValues
    }
}

/// A view's data-quality expectations: per-feature checks, a range for the
/// rows each job writes, and what a violation does. Operational: changing
/// them does not make a new version of the view.
public struct ViewExpectations: Sendable, Hashable, Codable {
    /// What a violation does.
    public var policy: ViolationPolicy
    /// The fewest rows a job may write.
    public var minRows: Int64?
    /// The most rows a job may write.
    public var maxRows: Int64?
    /// The per-feature checks, ordered by feature name.
    public var features: [FeatureExpectation]

    /// Creates expectations.
    public init(policy: ViolationPolicy = .warn, minRows: Int64? = nil, maxRows: Int64? = nil, features: [FeatureExpectation] = []) {
        self.policy = policy
        self.minRows = minRows
        self.maxRows = maxRows
        self.features = features.sorted { $0.feature < $1.feature }
    }

    /// Evaluates the expectations on a job's metrics: the rows it wrote and
    /// its per-feature summaries (which carry, for features with allowed
    /// values, how many values were not allowed). Only counts and bounds are
    /// compared; no value is needed.
    public func evaluate(rowsWritten: Int64, summaries: [FeatureSummary]) -> ExpectationReport {
        var results: [ExpectationResult] = []
        if minRows != nil || maxRows != nil {
            let inRange = rowsWritten >= (minRows ?? 0) && rowsWritten <= (maxRows ?? Int64.max)
            results.append(ExpectationResult(
                feature: nil, check: .rowsPerJob, observed: Double(rowsWritten), lowerLimit: minRows.map(Double.init),
                upperLimit: maxRows.map(Double.init), passed: inRange))
        }
        let byName = Dictionary(summaries.map { ($0.feature, $0) }, uniquingKeysWith: { first, _ in first })
        for expectation in features {
            let summary = byName[expectation.feature]
            let total = summary.map { $0.count + $0.nullCount } ?? 0
            if let limit = expectation.maxNullFraction {
                // A job that wrote no rows has no null fraction: it passes (the row range catches empty jobs).
                let fraction = total == 0 ? nil : Double(summary?.nullCount ?? 0) / Double(total)
                results.append(ExpectationResult(
                    feature: expectation.feature, check: .maxNullFraction, observed: fraction, upperLimit: limit,
                    passed: fraction.map { $0 <= limit } ?? true))
            }
            if let limit = expectation.min {
                let observed = summary?.min
                results.append(ExpectationResult(
                    feature: expectation.feature, check: .min, observed: observed, lowerLimit: limit, passed: observed.map { $0 >= limit } ?? true))
            }
            if let limit = expectation.max {
                let observed = summary?.max
                results.append(ExpectationResult(
                    feature: expectation.feature, check: .max, observed: observed, upperLimit: limit, passed: observed.map { $0 <= limit } ?? true))
            }
            if expectation.allowedValues != nil {
                let outside = summary?.disallowedCount ?? 0
                results.append(ExpectationResult(
                    feature: expectation.feature, check: .allowedValues, observed: Double(outside), upperLimit: 0, passed: outside == 0))
            }
        }
        return ExpectationReport(policy: policy, results: results)
    }
}

/// One evaluated check.
public struct ExpectationResult: Sendable, Hashable, Codable {
    /// Which check.
    public enum Check: String, Sendable, Hashable, Codable, CaseIterable {
        case maxNullFraction = "max_null_fraction"
        case min
        case max
        case allowedValues = "allowed_values"
        case rowsPerJob = "rows_per_job"
    }

    /// The feature checked; nil for the job's row count.
    public var feature: String?
    /// The check.
    public var check: Check
    /// What the job showed: the null fraction, the smallest or greatest value,
    /// the count of values not allowed, or the rows written. Nil when there was
    /// nothing to measure (no rows, or only nulls).
    public var observed: Double?
    /// The least allowed observation, if the check has one.
    public var lowerLimit: Double?
    /// The greatest allowed observation, if the check has one.
    public var upperLimit: Double?
    /// Whether the observation is within the limits.
    public var passed: Bool

    /// Creates a result.
    public init(feature: String?, check: Check, observed: Double?, lowerLimit: Double? = nil, upperLimit: Double? = nil, passed: Bool) {
        self.feature = feature
        self.check = check
        self.observed = observed
        self.lowerLimit = lowerLimit
        self.upperLimit = upperLimit
        self.passed = passed
    }

    /// One line for people, such as `conv_rate: null fraction 0.31 > 0.05`.
    public var summary: String {
        func number(_ value: Double?) -> String {
            guard let value else { return "none" }
            if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
            return String(format: "%.6g", value)
        }
        let subject = feature.map { "\($0): " } ?? ""
        switch check {
        case .maxNullFraction:
            return "\(subject)null fraction \(number(observed)) \(passed ? "≤" : ">") \(number(upperLimit))"
        case .min:
            return "\(subject)smallest value \(number(observed)) \(passed ? "≥" : "<") \(number(lowerLimit))"
        case .max:
            return "\(subject)greatest value \(number(observed)) \(passed ? "≤" : ">") \(number(upperLimit))"
        case .allowedValues:
            return "\(subject)\(number(observed)) value(s) outside the allowed values"
        case .rowsPerJob:
            let range = "[\(lowerLimit.map { number($0) } ?? "0"), \(upperLimit.map { number($0) } ?? "∞")]"
            return "\(subject)\(number(observed)) rows written, \(passed ? "within" : "outside") \(range)"
        }
    }
}

/// The expectations of a job's view, evaluated on its metrics.
public struct ExpectationReport: Sendable, Hashable, Codable {
    /// The view's policy when the job ran.
    public var policy: ViolationPolicy
    /// Each check's result.
    public var results: [ExpectationResult]

    /// Creates a report.
    public init(policy: ViolationPolicy, results: [ExpectationResult]) {
        self.policy = policy
        self.results = results
    }

    /// The checks that did not pass.
    public var violations: [ExpectationResult] { results.filter { !$0.passed } }
}

import Shared

/// The latest value seen, ordered by event time, then created time, then value,
/// so merging partial aggregates in any order picks the same one.
public struct LatestValue: Sendable, Hashable, Comparable {
    /// Event time, seconds since the epoch.
    public var time: Int64
    /// Created (ingestion) time, seconds since the epoch: breaks ties of event time.
    public var created: Int64
    /// The value.
    public var value: Double

    /// Creates a latest value.
    public init(time: Int64, created: Int64, value: Double) {
        self.time = time
        self.created = created
        self.value = value
    }

    public static func < (lhs: LatestValue, rhs: LatestValue) -> Bool {
        (lhs.time, lhs.created, lhs.value) < (rhs.time, rhs.created, rhs.value)
    }
}

/// A partial aggregate of one numeric column over some events: enough to
/// produce count, sum, mean, min, max, last and stddev, and to be merged with
/// another partial aggregate (merging is associative and commutative).
///
/// Tiles of a sliding window are partial aggregates; a window's value is the
/// merge of its tiles, so no window is recomputed from raw events.
public struct PartialAggregate: Sendable, Hashable {
    /// Non-null values.
    public private(set) var count: Int64 = 0
    /// Their sum, for floating-point columns.
    public private(set) var sum: Double = 0
    /// Their sum, for integer columns (exact; nil once it overflowed).
    public private(set) var integerSum: Int64? = 0
    /// Their mean (Welford), for a numerically stable stddev.
    public private(set) var mean: Double = 0
    /// The sum of squared deviations from the mean.
    public private(set) var squaredDeviations: Double = 0
    /// The smallest value.
    public private(set) var minimum: Double?
    /// The largest value.
    public private(set) var maximum: Double?
    /// The latest value.
    public private(set) var latest: LatestValue?

    /// An empty aggregate.
    public init() {}

    /// An aggregate from its parts (as `TileStore` keeps them).
    init(
        count: Int64, sum: Double, integerSum: Int64?, mean: Double, squaredDeviations: Double,
        minimum: Double?, maximum: Double?, latest: LatestValue?
    ) {
        self.count = count
        self.sum = sum
        self.integerSum = integerSum
        self.mean = mean
        self.squaredDeviations = squaredDeviations
        self.minimum = minimum
        self.maximum = maximum
        self.latest = latest
    }

    /// Whether no value was added.
    public var isEmpty: Bool { count == 0 }

    /// Adds one event's value (nil: the column is null, and counts for nothing).
    public mutating func add(_ value: Double?, time: Int64, created: Int64) {
        guard let value else { return }
        count += 1
        sum += value
        if let integer = integerSum {
            if let exact = Int64(exactly: value) {
                let (total, overflow) = integer.addingReportingOverflow(exact)
                integerSum = overflow ? nil : total
            } else {
                integerSum = nil
            }
        }
        let delta = value - mean
        mean += delta / Double(count)
        squaredDeviations += delta * (value - mean)
        minimum = Swift.min(minimum ?? value, value)
        maximum = Swift.max(maximum ?? value, value)
        let candidate = LatestValue(time: time, created: created, value: value)
        if latest.map({ $0 < candidate }) ?? true { latest = candidate }
    }

    /// The aggregate of both sets of events.
    public func merged(with other: PartialAggregate) -> PartialAggregate {
        if other.count == 0 { return self }
        if count == 0 { return other }
        var result = PartialAggregate()
        result.count = count + other.count
        result.sum = sum + other.sum
        if let left = integerSum, let right = other.integerSum {
            let (total, overflow) = left.addingReportingOverflow(right)
            result.integerSum = overflow ? nil : total
        } else {
            result.integerSum = nil
        }
        // Chan et al.: combine means and squared deviations of two parts.
        let total = Double(result.count)
        let delta = other.mean - mean
        result.mean = mean + delta * Double(other.count) / total
        result.squaredDeviations = squaredDeviations + other.squaredDeviations + delta * delta * Double(count) * Double(other.count) / total
        result.minimum = Swift.min(minimum!, other.minimum!)
        result.maximum = Swift.max(maximum!, other.maximum!)
        result.latest = Swift.max(latest!, other.latest!)
        return result
    }

    /// The value of `function` over the events: `count` is 0 without events;
    /// every other function is nil without a value, and `stddev` (the sample
    /// standard deviation) needs two.
    public func value(of function: AggregationFunction) -> Double? {
        switch function {
        case .count: return Double(count)
        case .sum: return count == 0 ? nil : sum
        case .mean: return count == 0 ? nil : mean
        case .min: return minimum
        case .max: return maximum
        case .last: return latest?.value
        case .stddev: return count < 2 ? nil : (Swift.max(squaredDeviations, 0) / Double(count - 1)).squareRoot()
        }
    }
}

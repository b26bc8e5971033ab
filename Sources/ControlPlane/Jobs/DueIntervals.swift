import Foundation
import Shared

/// A half-open interval of event time `[start, end)` that one materialization covers.
public struct MaterializationInterval: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
    /// The first instant covered.
    public var start: Date
    /// The first instant not covered.
    public var end: Date

    /// Creates an interval.
    public init(start: Date, end: Date) {
        self.start = start
        self.end = end
    }

    public static func < (lhs: MaterializationInterval, rhs: MaterializationInterval) -> Bool { lhs.start < rhs.start }

    public var description: String { "[\(RFC3339.format(start)), \(RFC3339.format(end)))" }
}

/// Which intervals a scheduled feature view is due to materialize: pure
/// logic, so the scheduler's catch-up after downtime is tested without waiting.
public enum DueIntervals {
    /// The intervals that have ended by `now`, after the view's watermark
    /// (the end of what was materialized) or, with none, from its start time.
    ///
    /// - An interval schedule (`1h`) cuts time into epoch-aligned slots of its
    ///   length; the first slot is clipped to start at the start point.
    /// - A cron schedule cuts time at its firing times; each interval runs from
    ///   one firing to the next (the first from the start point).
    ///
    /// The intervals are contiguous, do not overlap, begin at the start point
    /// and end at or before `now`; at most `limit` are returned (the oldest),
    /// so a long outage is caught up in bounded steps.
    public static func due(
        schedule: BatchSchedule, watermark: Date?, featureStartTime: Date?, now: Date, limit: Int = 1_000
    ) -> [MaterializationInterval] {
        guard let from = watermark ?? featureStartTime ?? firstBoundary(schedule, before: now) else { return [] }
        var intervals: [MaterializationInterval] = []
        var start = from
        while intervals.count < limit, let end = nextBoundary(schedule, after: start), end <= now {
            intervals.append(MaterializationInterval(start: start, end: end))
            start = end
        }
        return intervals
    }

    /// The intervals a view's `recompute` re-runs when a run starts at `start`: those of the
    /// `span` before it (cut at the schedule's boundaries, the first clipped to `start - span`,
    /// none before `notBefore`), oldest first; none for a zero span; at most the `limit` latest
    /// (validation refuses a longer recompute, but a run never queues more whatever it is given).
    public static func recomputed(
        schedule: BatchSchedule, before start: Date, span: TimeInterval, notBefore: Date?,
        limit: Int = FeatureViewDefinition.maximumRecomputedIntervals
    ) -> [MaterializationInterval] {
        guard span > 0 else { return [] }
        var from = start.addingTimeInterval(-span)
        if let notBefore, notBefore > from { from = notBefore }
        guard from < start else { return [] }
        return Array(due(schedule: schedule, watermark: from, featureStartTime: nil, now: start, limit: 100_000).suffix(limit))
    }

    /// The first boundary strictly after `date`.
    static func nextBoundary(_ schedule: BatchSchedule, after date: Date) -> Date? {
        switch schedule {
        case .interval(let span):
            guard span.seconds > 0 else { return nil }
            let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
            let slot = Int64((Double(seconds) / Double(span.seconds)).rounded(.down)) + 1
            return Date(timeIntervalSince1970: TimeInterval(slot * span.seconds))
        case .cron(let cron):
            return cron.nextFire(after: date)
        }
    }

    /// With neither watermark nor start time, scheduling starts at the last
    /// boundary before `now`: the view begins with the current period.
    static func firstBoundary(_ schedule: BatchSchedule, before now: Date) -> Date? {
        switch schedule {
        case .interval(let span):
            guard span.seconds > 0 else { return nil }
            let seconds = Int64(now.timeIntervalSince1970.rounded(.down))
            return Date(timeIntervalSince1970: TimeInterval((seconds / span.seconds) * span.seconds))
        case .cron(let cron):
            // The last firing at or before now: step back a day at a time until one is found.
            var probe = now.addingTimeInterval(-86_400)
            for _ in 0..<400 {
                if let next = cron.nextFire(after: probe), next <= now {
                    var last = next
                    while let following = cron.nextFire(after: last), following <= now { last = following }
                    return last
                }
                probe = probe.addingTimeInterval(-86_400)
            }
            return nil
        }
    }
}

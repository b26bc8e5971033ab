import Foundation
import Testing
import TestSupport
@testable import ControlPlane
@testable import Shared

@Suite("Due materialization intervals")
struct DueIntervalsTests {
    static let hourly = BatchSchedule.interval(TimeSpan(seconds: 3_600))
    static func date(_ text: String) -> Date { RFC3339.parse(text)! }

    @Test("after 6 hours of downtime an hourly view has exactly the 6 missing intervals")
    func catchUp() {
        let watermark = Self.date("2025-03-01T10:00:00Z")
        let now = Self.date("2025-03-01T16:20:00Z")
        let due = DueIntervals.due(schedule: Self.hourly, watermark: watermark, featureStartTime: nil, now: now)
        #expect(due.map(\.description) == (10..<16).map {
            "[2025-03-01T\(String(format: "%02d", $0)):00:00Z, 2025-03-01T\(String(format: "%02d", $0 + 1)):00:00Z)"
        })
        let next = DueIntervals.due(schedule: Self.hourly, watermark: due.last!.end, featureStartTime: nil, now: now)
        #expect(next.isEmpty, "nothing is due twice")
    }

    @Test("a backfill starts at the feature start time, clipped to the first slot")
    func backfillStart() {
        let due = DueIntervals.due(
            schedule: Self.hourly, watermark: nil, featureStartTime: Self.date("2025-01-01T00:30:00Z"), now: Self.date("2025-01-01T03:00:00Z"))
        #expect(due.map(\.description) == [
            "[2025-01-01T00:30:00Z, 2025-01-01T01:00:00Z)", "[2025-01-01T01:00:00Z, 2025-01-01T02:00:00Z)",
            "[2025-01-01T02:00:00Z, 2025-01-01T03:00:00Z)",
        ])
    }

    @Test("cron schedules cut time at their firings")
    func cron() throws {
        let nightly = BatchSchedule.cron(try CronSchedule(parsing: "0 2 * * *"))
        let due = DueIntervals.due(
            schedule: nightly, watermark: Self.date("2025-03-01T02:00:00Z"), featureStartTime: nil, now: Self.date("2025-03-03T05:00:00Z"))
        #expect(due.map(\.description) == [
            "[2025-03-01T02:00:00Z, 2025-03-02T02:00:00Z)", "[2025-03-02T02:00:00Z, 2025-03-03T02:00:00Z)",
        ])
        let fresh = DueIntervals.due(schedule: nightly, watermark: nil, featureStartTime: nil, now: Self.date("2025-03-03T05:00:00Z"))
        #expect(fresh.isEmpty, "a view with no start begins with the current period")
    }

    @Test("for random schedules, watermarks and outages: contiguous, no overlap, nothing past now, bounded", arguments: Array(UInt64(1)...100))
    func properties(seed: UInt64) throws {
        var generator = SeededGenerator(seed: seed)
        let spans: [Int64] = [60, 300, 900, 3_600, 7_200, 86_400]
        let crons = ["*/15 * * * *", "0 * * * *", "30 6 * * MON-FRI", "0 0 1 * *"]
        let schedule: BatchSchedule = Bool.random(using: &generator)
            ? .interval(TimeSpan(seconds: spans.randomElement(using: &generator)!))
            : .cron(try CronSchedule(parsing: crons.randomElement(using: &generator)!))
        let start = Date(timeIntervalSince1970: 1_735_689_600 + Double(Int.random(in: 0..<86_400 * 30, using: &generator)))
        let now = start.addingTimeInterval(Double(Int.random(in: 0..<86_400 * 10, using: &generator)))
        let limit = Int.random(in: 1...400, using: &generator)
        let due = DueIntervals.due(schedule: schedule, watermark: start, featureStartTime: nil, now: now, limit: limit)
        #expect(due.count <= limit)
        if let first = due.first { #expect(first.start == start) }
        for (previous, next) in zip(due, due.dropFirst()) { #expect(previous.end == next.start) }
        #expect(due.allSatisfy { $0.start < $0.end && $0.end <= now })
        // Catching up in steps covers the same time as in one go.
        if due.count == limit, let last = due.last {
            let rest = DueIntervals.due(schedule: schedule, watermark: last.end, featureStartTime: nil, now: now, limit: 100_000)
            let all = DueIntervals.due(schedule: schedule, watermark: start, featureStartTime: nil, now: now, limit: 100_000)
            #expect(due + rest == all)
        } else if let after = DueIntervals.nextBoundary(schedule, after: due.last?.end ?? start) {
            #expect(after > now, "every interval that ended by now is due")
        }
    }

    @Test("recompute re-runs the hours before a run, never before the start time, and at most the latest 1,000 whatever it is given")
    func recomputedIsBounded() {
        let start = Self.date("2025-03-01T10:00:00Z")
        let three = DueIntervals.recomputed(schedule: Self.hourly, before: start, span: 3 * 3_600, notBefore: nil)
        #expect(three.map(\.start) == [7, 8, 9].map { Self.date("2025-03-01T0\($0):00:00Z") })
        let clipped = DueIntervals.recomputed(schedule: Self.hourly, before: start, span: 3 * 3_600, notBefore: Self.date("2025-03-01T08:30:00Z"))
        #expect(clipped.first?.start == Self.date("2025-03-01T08:30:00Z") && clipped.count == 2)
        let many = DueIntervals.recomputed(schedule: Self.hourly, before: start, span: 5_000 * 3_600, notBefore: nil)
        #expect(many.count == FeatureViewDefinition.maximumRecomputedIntervals)
        #expect(many.last?.end == start && many.first?.start == start.addingTimeInterval(-1_000 * 3_600))
    }
}

import Foundation

/// A five-field cron expression (`minute hour day-of-month month day-of-week`),
/// evaluated in UTC.
///
/// Fields take `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, and lists
/// `a,b,c`; months and weekdays also take three-letter names (`JAN`, `MON`), and
/// weekday 7 is Sunday like 0. `@hourly`, `@daily`, `@weekly`, `@monthly` and
/// `@yearly` are shorthands. As in classic cron, when both day-of-month and
/// day-of-week are restricted a day matches if either does.
public struct CronSchedule: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The expression as written (macros expanded, whitespace normalized).
    public let expression: String
    let minutes: Set<Int>
    let hours: Set<Int>
    let daysOfMonth: Set<Int>
    let months: Set<Int>
    let daysOfWeek: Set<Int>
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool

    /// Why an expression is not valid, for a person.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        /// What is wrong.
        public let description: String
    }

    private static let macros = [
        "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
        "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
    ]
    private static let monthNames = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    private static let dayNames = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]

    /// Parses an expression.
    public init(parsing text: String) throws(ParseError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let expanded = Self.macros[trimmed.lowercased()] ?? trimmed
        let fields = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw ParseError(description: "a cron expression has 5 fields (minute hour day-of-month month day-of-week), found \(fields.count)")
        }
        minutes = try Self.parseField(fields[0], name: "minute", range: 0...59, names: [])
        hours = try Self.parseField(fields[1], name: "hour", range: 0...23, names: [])
        daysOfMonth = try Self.parseField(fields[2], name: "day-of-month", range: 1...31, names: [])
        months = try Self.parseField(fields[3], name: "month", range: 1...12, names: Self.monthNames, namesStartAt: 1)
        let weekdays = try Self.parseField(fields[4], name: "day-of-week", range: 0...7, names: Self.dayNames)
        daysOfWeek = Set(weekdays.map { $0 % 7 })
        dayOfMonthRestricted = fields[2] != "*" && fields[2] != "?"
        dayOfWeekRestricted = fields[4] != "*" && fields[4] != "?"
        expression = fields.joined(separator: " ")
    }

    private static func parseField(
        _ field: String, name: String, range: ClosedRange<Int>, names: [String], namesStartAt: Int = 0
    ) throws(ParseError) -> Set<Int> {
        func value(_ token: String) throws(ParseError) -> Int {
            if let number = Int(token), range.contains(number) { return number }
            if let index = names.firstIndex(of: token.uppercased()) { return index + namesStartAt }
            throw ParseError(description: "\(name) field: '\(token)' is not in \(range.lowerBound)-\(range.upperBound)")
        }
        var result = Set<Int>()
        for part in field.split(separator: ",", omittingEmptySubsequences: false).map(String.init) {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard pieces.count <= 2, !part.isEmpty else {
                throw ParseError(description: "\(name) field: '\(part)' is malformed")
            }
            var step = 1
            if pieces.count == 2 {
                guard let parsed = Int(pieces[1]), parsed > 0 else {
                    throw ParseError(description: "\(name) field: step '\(pieces[1])' must be a positive number")
                }
                step = parsed
            }
            let bounds: ClosedRange<Int>
            if pieces[0] == "*" || pieces[0] == "?" {
                bounds = range
            } else if let dash = pieces[0].firstIndex(of: "-") {
                let low = try value(String(pieces[0][..<dash]))
                let high = try value(String(pieces[0][pieces[0].index(after: dash)...]))
                guard low <= high else {
                    throw ParseError(description: "\(name) field: range '\(pieces[0])' runs backwards")
                }
                bounds = low...high
            } else {
                let single = try value(pieces[0])
                bounds = single...(pieces.count == 2 ? range.upperBound : single)
            }
            result.formUnion(stride(from: bounds.lowerBound, through: bounds.upperBound, by: step))
        }
        return result
    }

    public var description: String { expression }

    private static let utcCalendar: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }()

    /// The first time strictly after `date` at which the schedule fires, or nil
    /// when it never fires (such as `0 0 31 2 *`) within the next eight years.
    public func nextFire(after date: Date) -> Date? {
        let calendar = Self.utcCalendar
        var components = calendar.dateComponents([.year, .month, .day, .hour, .minute], from: date)
        components.second = 0
        guard var candidate = calendar.date(from: components)?.addingTimeInterval(60) else { return nil }
        let horizon = date.addingTimeInterval(8 * 366 * 86_400)
        while candidate <= horizon {
            let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .weekday], from: candidate)
            if !months.contains(parts.month!) {
                let startOfMonth = calendar.date(from: DateComponents(year: parts.year, month: parts.month, day: 1))!
                candidate = calendar.date(byAdding: .month, value: 1, to: startOfMonth)!
                continue
            }
            if !dayMatches(day: parts.day!, weekday: parts.weekday! - 1) {
                let startOfDay = calendar.date(from: DateComponents(year: parts.year, month: parts.month, day: parts.day))!
                candidate = startOfDay.addingTimeInterval(86_400)
                continue
            }
            if !hours.contains(parts.hour!) {
                let startOfHour = calendar.date(
                    from: DateComponents(year: parts.year, month: parts.month, day: parts.day, hour: parts.hour))!
                candidate = startOfHour.addingTimeInterval(3_600)
                continue
            }
            if !minutes.contains(parts.minute!) {
                candidate = candidate.addingTimeInterval(60)
                continue
            }
            return candidate
        }
        return nil
    }

    private func dayMatches(day: Int, weekday: Int) -> Bool {
        switch (dayOfMonthRestricted, dayOfWeekRestricted) {
        case (true, true): return daysOfMonth.contains(day) || daysOfWeek.contains(weekday)
        case (true, false): return daysOfMonth.contains(day)
        case (false, true): return daysOfWeek.contains(weekday)
        case (false, false): return true
        }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do {
            try self.init(parsing: text)
        } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(expression)
    }

    public static func == (lhs: CronSchedule, rhs: CronSchedule) -> Bool { lhs.expression == rhs.expression }
    public func hash(into hasher: inout Hasher) { hasher.combine(expression) }
}

/// When a feature view is materialized: every fixed interval, or on a cron schedule.
public enum BatchSchedule: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Every `TimeSpan`, aligned to the Unix epoch (so `1h` fires on the hour).
    case interval(TimeSpan)
    /// At each time a cron expression names, in UTC.
    case cron(CronSchedule)

    public var description: String {
        switch self {
        case .interval(let span): return "every \(span)"
        case .cron(let cron): return "cron \(cron.expression)"
        }
    }

    /// How many runs fall within `span` (a cron schedule's counted from a fixed Monday, 2025-01-06
    /// 00:00 UTC, so the answer does not depend on when it is asked), at most `limit`.
    public func runs(within span: TimeSpan, limit: Int) -> Int {
        switch self {
        case .interval(let every):
            guard every.seconds > 0 else { return 0 }
            return Int(min(Int64(limit), span.seconds / every.seconds))
        case .cron(let cron):
            let start = Date(timeIntervalSince1970: 1_736_121_600), end = start.addingTimeInterval(TimeInterval(span.seconds))
            var count = 0
            var fire = cron.nextFire(after: start)
            while count < limit, let at = fire, at <= end {
                count += 1
                fire = cron.nextFire(after: at)
            }
            return count
        }
    }

    /// The longest gap between two runs, in seconds (a cron schedule's over
    /// the next 30 runs from `date`).
    public func longestGap(after date: Date = Date()) -> Int64 {
        switch self {
        case .interval(let span): return span.seconds
        case .cron(let cron):
            var longest: Int64 = 0
            var previous = cron.nextFire(after: date)
            for _ in 0..<30 {
                guard let last = previous, let next = cron.nextFire(after: last) else { break }
                longest = max(longest, Int64(next.timeIntervalSince(last)))
                previous = next
            }
            return longest
        }
    }
}

extension FeatureViewDefinition {
    /// The freshness SLO in seconds: the declared one, or twice the longest
    /// gap between scheduled runs; nil without either. A view's `lateness`
    /// is added: its intervals are queued that much later on purpose.
    public var expectedFreshness: Int64? {
        let lateness = self.lateness?.seconds ?? 0
        if let freshness { return freshness.seconds + lateness }
        return schedule.map { 2 * $0.longestGap() + lateness }
    }
}

import Foundation
import Testing
@testable import Shared

@Suite("Durations and schedules")
struct ScheduleTests {
    @Test("durations parse to seconds and print in their shortest form", arguments: [
        ("30s", 30, "30s"), ("15m", 900, "15m"), ("1h", 3_600, "1h"), ("1d", 86_400, "1d"), ("7d", 604_800, "7d"),
        ("2w", 1_209_600, "14d"), ("1h30m", 5_400, "1h30m"), ("90m", 5_400, "1h30m"), ("0", 0, "0s"),
    ])
    func parsesDurations(text: String, seconds: Int64, printed: String) throws {
        let span = try TimeSpan.parse(text)
        #expect(span.seconds == seconds)
        #expect(span.description == printed)
        #expect(try TimeSpan.parse(span.description) == span)
    }

    @Test("malformed and negative durations are rejected", arguments: ["", "h", "1", "1x", "1.5h", "h1", "-1h", "1h-", "99999999999999999999d"])
    func rejectsDurations(text: String) {
        #expect(throws: TimeSpan.ParseError.self) { try TimeSpan.parse(text) }
    }

    static func date(_ text: String) -> Date { RFC3339.parse(text)! }

    @Test("cron finds the next firing time in UTC", arguments: [
        ("0 * * * *", "2025-03-01T10:15:00Z", "2025-03-01T11:00:00Z"),
        ("*/15 * * * *", "2025-03-01T10:15:00Z", "2025-03-01T10:30:00Z"),
        ("0 2 * * *", "2025-03-01T02:00:00Z", "2025-03-02T02:00:00Z"),
        ("30 6 * * MON-FRI", "2025-03-01T00:00:00Z", "2025-03-03T06:30:00Z"),  // 1 March 2025 is a Saturday
        ("0 0 1 * *", "2025-01-31T12:00:00Z", "2025-02-01T00:00:00Z"),
        ("0 0 29 2 *", "2025-01-01T00:00:00Z", "2028-02-29T00:00:00Z"),
        ("0 12 13 * 5", "2025-03-01T00:00:00Z", "2025-03-07T12:00:00Z"),     // day-of-month OR day-of-week
        ("@daily", "2025-12-31T23:59:00Z", "2026-01-01T00:00:00Z"),
        ("0 0 * * 7", "2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z"),       // 7 is Sunday too
    ])
    func cronNextFire(expression: String, after: String, expected: String) throws {
        let cron = try CronSchedule(parsing: expression)
        #expect(cron.nextFire(after: Self.date(after)) == Self.date(expected))
    }

    @Test("a cron schedule that never fires has no next time")
    func cronNever() throws {
        #expect(try CronSchedule(parsing: "0 0 31 2 *").nextFire(after: Self.date("2025-01-01T00:00:00Z")) == nil)
    }

    @Test("malformed cron expressions are rejected with a reason", arguments: [
        "* * * *", "61 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8", "*/0 * * * *", "5-1 * * * *", "a * * * *",
        "1,,2 * * * *",
    ])
    func cronRejects(expression: String) {
        #expect(throws: CronSchedule.ParseError.self) { try CronSchedule(parsing: expression) }
    }

    @Test("cron firing times are strictly increasing and match the expression", arguments: ["*/7 3-5 * * *", "0 0 1,15 * *", "45 23 * * SAT"])
    func cronSequence(expression: String) throws {
        let cron = try CronSchedule(parsing: expression)
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        var current = Self.date("2025-01-01T00:00:00Z")
        for _ in 0..<50 {
            let next = try #require(cron.nextFire(after: current))
            #expect(next > current)
            let parts = calendar.dateComponents([.minute, .hour, .day, .weekday], from: next)
            #expect(cron.minutes.contains(parts.minute!) && cron.hours.contains(parts.hour!))
            current = next
        }
    }
}

@Suite("PostgreSQL URLs")
struct PostgresURLTests {
    @Test("a full URL splits into its parts and hides the password")
    func parsesFullURL() throws {
        let url = try PostgresURL(parsing: "postgres://larder:s3cret@db.internal:6543/registry?sslmode=require")
        #expect(url.host == "db.internal")
        #expect(url.port == 6543)
        #expect(url.username == "larder")
        #expect(url.password == "s3cret")
        #expect(url.database == "registry")
        #expect(url.tls == .require)
        #expect(!url.description.contains("s3cret"))
        #expect(try PostgresURL(parsing: url.urlString) == url)
    }

    @Test("defaults fill the missing parts")
    func defaults() throws {
        let url = try PostgresURL(parsing: "postgresql://127.0.0.1")
        #expect(url.port == 5432)
        #expect(url.username == "postgres")
        #expect(url.database == "postgres")
        #expect(url.tls == .prefer)
    }

    @Test("non-postgres URLs are rejected", arguments: ["mysql://x/y", "not a url", "postgres:///nohost", "postgres://h/d?sslmode=weird"])
    func rejects(text: String) {
        #expect(throws: PostgresURL.ParseError.self) { try PostgresURL(parsing: text) }
    }
}

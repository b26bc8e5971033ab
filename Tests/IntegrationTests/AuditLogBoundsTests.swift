@testable import ControlPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

@Suite("The audit log cannot be flooded")
struct AuditLogBoundsTests {
    static func rows(_ url: PostgresURL, _ sql: String) async throws -> [(String, Int, Int)] {
        try await TestDatabase.withClient(url) { client in
            var rows: [(String, Int, Int)] = []
            for try await row in try await client.query(PostgresQuery(unsafeSQL: sql), logger: Logger(label: "test")).decode((String, Int, Int).self) {
                rows.append(row)
            }
            return rows
        }
    }

    @Test("300 bad tokens and 50 bad logins with made-up names from one address: a few records per source and minute whose counts add up to every attempt; made-up paths cut to 1,024 characters")
    func floodIsCounted() async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            try await TestControlPlane.withControlPlane(database: url) { server in
                for index in 0..<300 {
                    _ = try await RawResponse.send(.GET, "\(server.baseURL)/v1/whoami", headers: ["Authorization": "Bearer lrd_\(String(format: "%012d", index))_\(String(repeating: "z", count: 43))"])
                }
                for index in 0..<50 {
                    let name = String(repeating: "n", count: 250) + "\(index)"
                    _ = try await RawResponse.send(
                        .POST, "\(server.baseURL)/v1/login", body: #"{"name":"\#(name)","password":"whatever it is"}"#, headers: ["Content-Type": "application/json"])
                }
                // A made-up path of 5,000 characters: recorded cut to 1,024.
                _ = try await RawResponse.send(.GET, "\(server.baseURL)/v1/workspaces/\(String(repeating: "w", count: 5_000))/jobs", headers: ["Authorization": "Bearer nonsense"])
                // Written at once: the first failure of each kind (401, 429) per source and minute, not one per attempt.
                let now = try await Self.rows(url, "SELECT action, status, count FROM audit_log WHERE outcome = 'denied'")
                #expect(now.count <= 12, "\(now.count) records for 350 failures")
            }
            // At shutdown the counts of the minute are written: they add up to every attempt.
            let all = try await Self.rows(url, "SELECT action, status, count FROM audit_log WHERE outcome = 'denied'")
            let tokens = all.filter { $0.0 == "GET /v1/whoami" }.map(\.2).reduce(0, +)
            let longest = try await Self.rows(url, "SELECT resource, length(resource), count FROM audit_log ORDER BY length(resource) DESC LIMIT 1")
            #expect((longest.first?.1 ?? 0) <= 1_024 && (longest.first?.1 ?? 0) > 1_000, "\(longest.first?.1 ?? 0)")
            let logins = all.filter { $0.0 == "POST /v1/login" }.map(\.2).reduce(0, +)
            #expect(tokens == 300 && logins == 50, "tokens \(tokens), logins \(logins) in \(all.count) records: \(all)")
            #expect(all.count <= 16, "\(all.count) records")
        }
    }

    @Test("counted failures are written exactly once however they interleave with the flush of an ended minute")
    func countsWrittenOnce() async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            try await TestDatabase.withClient(url) { client in
                let logger = Logger(label: "test")
                try await MigrationRunner().run(on: client, logger: logger)
                let audit = FailedAttemptAudit(store: PostgresAccessStore(client: client, logger: logger), logger: logger)
                let minute = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 / 60).rounded(.down) * 60)
                func record(_ count: Int, at date: Date) async {
                    await withTaskGroup(of: Void.self) { attempts in
                        for index in 0..<count {
                            attempts.addTask {
                                await audit.record(AuditRecord(
                                    principal: "anonymous", action: "GET /v1/whoami", resource: "/v1/whoami", workspace: nil, outcome: "denied",
                                    status: index % 2 == 0 ? 401 : 429, requestID: "r", clientAddress: "10.0.0.\(index % 3)"), at: date)
                            }
                        }
                    }
                }
                await record(600, at: minute.addingTimeInterval(-30))
                // The next minute's attempts arrive while the last minute's counts are being written.
                await record(600, at: minute.addingTimeInterval(30))
                await audit.flushAll()
                var total = 0, rows = 0
                for try await (count, records) in try await client.query(
                    "SELECT coalesce(sum(count), 0)::int, count(*)::int FROM audit_log", logger: logger).decode((Int, Int).self) {
                    total = count
                    rows = records
                }
                #expect(total == 1_200, "\(total) attempts counted in \(rows) records")
                #expect(rows <= 24)
            }
        }
    }

    @Test("monthly partitions: next month made ahead, months past the retention dropped whole and the drop audited; records stay append-only")
    func retention() async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            try await TestDatabase.withClient(url) { client in
                let logger = Logger(label: "test")
                try await MigrationRunner().run(on: client, logger: logger)
                let now = Date()
                // Records in a month two years ago, one last year, and now.
                for monthsAgo in [24, 12, 0] {
                    let at = now.addingTimeInterval(-Double(monthsAgo) * 30.5 * 86_400)
                    try await AuditPartitions.maintain(now: at, retention: 10 * 365 * 86_400, client: client, logger: logger)
                    try await client.query(
                        "INSERT INTO audit_log (at, principal, action, resource, outcome, status, request_id) VALUES (\(at), 'p', 'a', 'r', 'success', 200, 'x')",
                        logger: logger)
                }
                let dropped = try await AuditPartitions.maintain(now: now, retention: 400 * 86_400, client: client, logger: logger)
                #expect(dropped.count >= 1 && dropped.allSatisfy { $0.hasPrefix("audit_log_") })
                var kept: [Date] = []
                for try await at in try await client.query("SELECT at FROM audit_log WHERE principal = 'p' ORDER BY at", logger: logger).decode(Date.self) {
                    kept.append(at)
                }
                #expect(kept.count == 2, "the record of two years ago went with its month, the others stayed: \(kept)")
                var drops = 0
                for try await count in try await client.query(
                    "SELECT count(*)::int FROM audit_log WHERE action = 'DROP audit partition'", logger: logger).decode(Int.self) { drops = count }
                #expect(drops == dropped.count)
                // Next month exists ahead of time.
                let next = Calendar(identifier: .gregorian).date(byAdding: .month, value: 1, to: now)!
                try await client.query(
                    "INSERT INTO audit_log (at, principal, action, resource, outcome, status, request_id) VALUES (\(next), 'q', 'a', 'r', 'success', 200, 'x')",
                    logger: logger)
                // Still append-only.
                await #expect(throws: (any Error).self) { try await client.query("DELETE FROM audit_log WHERE principal = 'p'", logger: logger) }
                await #expect(throws: (any Error).self) { try await client.query("UPDATE audit_log SET principal = 'x'", logger: logger) }
            }
        }
    }
}

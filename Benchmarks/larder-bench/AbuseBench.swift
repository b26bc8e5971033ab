import AsyncHTTPClient
import ControlPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import Synchronization
import TestSupport

/// A stranger attacking the control plane from the address its own users
/// and agents use: made-up bearer tokens at a fixed rate and connections
/// that send their request head a line at a time, while an agent claims and
/// completes jobs and a client makes authenticated API calls. Reported: the
/// valid calls' success rate and latency, against a run of the same length
/// without the attack in the same process, and how much the audit log grew.
extension LarderBench {
    struct AbusePhase {
        var calls = 0, callFailures = 0
        var latencies: [Duration] = []
        var jobsDone = 0, claimFailures = 0
        var badTokensSent = 0, badTokenAnswers: [Int: Int] = [:]
        var loginsSent = 0, loginAnswers: [Int: Int] = [:]
        var slowReconnects = 0
    }

    static func abuse(seconds: Int, rate: Int, slowConnections: Int) async throws {
        print("\n## abuse: \(seconds) s with and without \(rate) made-up tokens/s and \(slowConnections) slow connections, all from 127.0.0.1")
        let settings = JobSettings(leaseDuration: .seconds(60), maxClaimWait: .seconds(2), schedulerEnabled: false)
        try await TestDatabase.withIsolatedDatabase { database in
        var marks: [Int64] = []
        var phases: [AbusePhase] = []
        try await TestControlPlane.withControlPlane(database: database, jobs: settings) { server in
            let workspace = "bench"
            _ = try await server.client.createWorkspace(workspace)
            try await RepositoryFixture.example(workspace: workspace).unscheduled().apply(to: workspace, with: server.client)
            _ = try await server.client.createAgent(name: "agent", environment: "bench", workspace: workspace)
            var configuration = HTTPClient.Configuration()
            configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 256
            let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            let agent = ControlPlaneClient(baseURL: server.baseURL, token: try await server.client.createToken(for: "agent").token, httpClient: http)
            _ = try await agent.hello(AgentHello(instanceId: "bench", version: LarderVersion.number, hostname: "bench", capabilities: [.materialize]))
            let port = Int(server.baseURL.split(separator: ":").last!)!
            marks.append(try await auditMark(server.database))
            phases.append(try await abusePhase(
                server: server, agent: agent, http: http, port: port, seconds: seconds, rate: 0, slowConnections: 0, offset: 0))
            marks.append(try await auditMark(server.database))
            phases.append(try await abusePhase(
                server: server, agent: agent, http: http, port: port, seconds: seconds, rate: rate, slowConnections: slowConnections, offset: 10_000))
            marks.append(try await auditMark(server.database))
            // Wrong passwords for one user from 40 tasks at once: bounded password work, other routes unaffected.
            _ = try await server.client.createPrincipal(CreatePrincipalRequest(name: "victim", kind: .user, password: "the victim's own passphrase"))
            phases.append(try await abusePhase(
                server: server, agent: agent, http: http, port: port, seconds: seconds, rate: 0, slowConnections: 0, offset: 20_000, logins: 40))
            marks.append(try await auditMark(server.database))
            try await http.shutdown()
        }
        // Once the control plane has stopped, the counts of the last minute are written too. Counts are written
        // when their minute ends, so they are added up per kind of request over the whole run, not per phase.
        let growth = try await TestDatabase.withClient(database) { client in
            var rows: [(String, Int, Int, Int)] = []
            for try await row in try await client.query(
                """
                SELECT action, status, count(*)::int, sum(count)::int FROM audit_log WHERE id > \(marks[0])
                GROUP BY action, status ORDER BY 4 DESC
                """, logger: Logger(label: "bench")).decode((String, Int, Int, Int).self) { rows.append(row) }
            return rows
        }
        do {
            func percentile(_ phase: AbusePhase, _ p: Double) -> String {
                let sorted = phase.latencies.sorted()
                return sorted.isEmpty ? "-" : Samples.format(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))])
            }
            func success(_ phase: AbusePhase) -> String {
                String(format: "%.2f%%", phase.calls == 0 ? 0 : 100 * Double(phase.calls - phase.callFailures) / Double(phase.calls))
            }
            print("| run | valid API calls | succeeded | p50 | p99 | jobs claimed and completed | claims refused | attack requests sent (answers) | slow connections reopened |")
            print("|---|---|---|---|---|---|---|---|---|")
            let names = ["without the attack", "\(rate) bad tokens/s + \(slowConnections) slow connections", "40 parallel wrong passwords for one user"]
            for (name, phase) in zip(names, phases) {
                let sent = phase.badTokensSent + phase.loginsSent
                let answers = phase.badTokenAnswers.merging(phase.loginAnswers, uniquingKeysWith: +).sorted { $0.key < $1.key }
                    .map { "\($0.key): \($0.value)" }.joined(separator: ", ")
                print("| \(name) | \(phase.calls) | \(success(phase)) | \(percentile(phase, 0.5)) | \(percentile(phase, 0.99)) | \(phase.jobsDone) | \(phase.claimFailures) | \(sent)\(answers.isEmpty ? "" : " (\(answers))") | \(phase.slowReconnects) |")
            }
            print("\n| audit log growth over the whole run: action | status | records | attempts they count |\n|---|---|---|---|")
            for (action, status, rows, attempts) in growth { print("| \(action) | \(status) | \(rows) | \(attempts) |") }
        }
        }
    }

    /// The newest audit record's id.
    static func auditMark(_ database: PostgresURL) async throws -> Int64 {
        try await TestDatabase.withClient(database) { client in
            for try await id in try await client.query("SELECT coalesce(max(id), 0)::bigint FROM audit_log", logger: Logger(label: "bench")).decode(Int64.self) {
                return id
            }
            return 0
        }
    }

    /// One phase: `seconds` of an agent's claims and a client's calls, with the attack when `rate` > 0.
    static func abusePhase(
        server: RunningControlPlane, agent: ControlPlaneClient, http: HTTPClient, port: Int, seconds: Int, rate: Int, slowConnections: Int,
        offset: Int, logins: Int = 0
    ) async throws -> AbusePhase {
        let deadline = ContinuousClock.now + .seconds(seconds)
        let stop = Atomic<Bool>(false)
        // The slow connections: a thread of their own (blocking sockets), a header line to each every second.
        let reconnects = Atomic<Int>(0)
        let slowThread = Thread {
            var sockets = (0..<slowConnections).compactMap { _ in try? RawSocket(port: port, timeout: 1) }
            for socket in sockets { socket.send("GET /v1/whoami HTTP/1.1\r\nHost: x\r\n") }
            var line = 0
            while !stop.load(ordering: .relaxed) {
                line += 1
                for index in sockets.indices where !sockets[index].send("X-Slow-\(line): y\r\n") {
                    reconnects.add(1, ordering: .relaxed)
                    if let fresh = try? RawSocket(port: port, timeout: 1) {
                        fresh.send("GET /v1/whoami HTTP/1.1\r\nHost: x\r\n")
                        sockets[index] = fresh
                    }
                }
                Thread.sleep(forTimeInterval: 1)
            }
        }
        if slowConnections > 0 { slowThread.start() }
        var phase = AbusePhase()
        let hours = offset
        try await withThrowingTaskGroup(of: AbusePhase.self) { group in
            // The agent: claims (waiting up to a second) and completes what it gets.
            group.addTask {
                var result = AbusePhase()
                let metrics = JobMetrics(rowsRead: 1, rowsWritten: 1)
                while ContinuousClock.now < deadline {
                    do {
                        guard let job = try await agent.claim(ClaimRequest(instanceId: "bench", kinds: [.materialize], waitSeconds: 1)) else { continue }
                        _ = try await agent.complete(job: job.id, JobCompletion(
                            leaseToken: job.leaseToken, outcome: .succeeded, startedAt: Date(), finishedAt: Date(), metrics: metrics))
                        result.jobsDone += 1
                    } catch {
                        result.claimFailures += 1
                        try await Task.sleep(for: .milliseconds(100))
                    }
                }
                return result
            }
            // The client: a job queued, then whoami and a job listing, over and over (about 20 calls a second).
            group.addTask {
                var result = AbusePhase()
                var hour = hours
                while ContinuousClock.now < deadline {
                    for call in 0..<3 {
                        let began = ContinuousClock.now
                        do {
                            switch call {
                            case 0:
                                let start = RFC3339.parse("2025-01-01T00:00:00Z")!.addingTimeInterval(Double(hour) * 3_600)
                                hour += 1
                                _ = try await server.client.materialize(
                                    MaterializeRequest(featureView: "driver_hourly_stats", start: start, end: start.addingTimeInterval(3_600), chunk: "1h"),
                                    workspace: "bench")
                            case 1: _ = try await server.client.whoami()
                            default: _ = try await server.client.jobs(workspace: "bench", limit: 20)
                            }
                        } catch {
                            result.callFailures += 1
                        }
                        result.calls += 1
                        result.latencies.append(ContinuousClock.now - began)
                    }
                    try await Task.sleep(for: .milliseconds(150))
                }
                return result
            }
            // The stranger: made-up tokens at `rate` a second, from 32 tasks.
            let tasks = rate > 0 ? 32 : 0
            for worker in 0..<tasks {
                group.addTask {
                    var result = AbusePhase()
                    let interval = Duration.seconds(Double(tasks) / Double(rate))
                    var next = ContinuousClock.now
                    var counter = 0
                    while ContinuousClock.now < deadline {
                        counter += 1
                        let id = String(format: "%02d%010d", worker, counter)
                            .map { "abcdefghijkmnpqrstuvwxyz23456789".map { $0 }[Int($0.asciiValue! - 48) % 32] }
                        var request = HTTPClientRequest(url: server.baseURL + "/v1/whoami")
                        request.headers.add(name: "Authorization", value: "Bearer lrd_\(String(id))_\(String(repeating: "x", count: 43))")
                        if let response = try? await http.execute(request, timeout: .seconds(10)) {
                            _ = try? await response.body.collect(upTo: 1 << 16)
                            result.badTokenAnswers[Int(response.status.code), default: 0] += 1
                        } else {
                            result.badTokenAnswers[0, default: 0] += 1
                        }
                        result.badTokensSent += 1
                        next += interval
                        if next > .now { try await Task.sleep(until: next) }
                    }
                    return result
                }
            }
            for worker in 0..<logins {
                group.addTask {
                    var result = AbusePhase()
                    var counter = 0
                    while ContinuousClock.now < deadline {
                        counter += 1
                        var request = HTTPClientRequest(url: server.baseURL + "/v1/login")
                        request.method = .POST
                        request.headers.add(name: "Content-Type", value: "application/json")
                        request.body = .bytes(ByteBuffer(string: #"{"name":"victim","password":"guess \#(worker) \#(counter)"}"#))
                        if let response = try? await http.execute(request, timeout: .seconds(10)) {
                            _ = try? await response.body.collect(upTo: 1 << 16)
                            result.loginAnswers[Int(response.status.code), default: 0] += 1
                        } else {
                            result.loginAnswers[0, default: 0] += 1
                        }
                        result.loginsSent += 1
                    }
                    return result
                }
            }
            for try await part in group {
                phase.calls += part.calls
                phase.callFailures += part.callFailures
                phase.latencies += part.latencies
                phase.jobsDone += part.jobsDone
                phase.claimFailures += part.claimFailures
                phase.badTokensSent += part.badTokensSent
                phase.badTokenAnswers.merge(part.badTokenAnswers, uniquingKeysWith: +)
                phase.loginsSent += part.loginsSent
                phase.loginAnswers.merge(part.loginAnswers, uniquingKeysWith: +)
            }
        }
        stop.store(true, ordering: .relaxed)
        phase.slowReconnects = reconnects.load(ordering: .relaxed)
        return phase
    }

    /// The audit records with ids in (`mark`, `end`] and the attempts they count.
    static func auditSize(_ database: PostgresURL, after mark: Int64, upTo end: Int64) async throws -> (rows: Int, attempts: Int) {
        try await TestDatabase.withClient(database) { client in
            for try await (rows, attempts) in try await client.query(
                "SELECT count(*)::int, coalesce(sum(count), 0)::int FROM audit_log WHERE id > \(mark) AND id <= \(end)",
                logger: Logger(label: "bench")).decode((Int, Int).self) {
                return (rows, attempts)
            }
            return (0, 0)
        }
    }
}

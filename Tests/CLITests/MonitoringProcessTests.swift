import DataPlane
import Foundation
import Shared
import Testing
import TestSupport

/// Monitoring with a real control plane and a real agent: expectations the
/// agent evaluates on its own jobs, and the alerts the control plane opens
/// and resolves from what the agent reports (or stops reporting).
@Suite("Monitoring with real processes: expectations and agent alerts", .serialized)
struct MonitoringProcessTests {
    /// The example repository, with `driver_hourly_stats`'s expectations set to
    /// `policy`, conv_rate's null limit to `nulls`, and avg_daily_trips allowed 0–29.
    static func repository(policy: ViolationPolicy, nulls: String) -> RepositoryFixture {
        RepositoryFixture.example(workspace: JobsWorld.workspace).unscheduled()
            .replacing("on_violation: warn", with: "on_violation: \(policy.rawValue)", in: "features.yaml")
            .replacing("max_null_fraction: 0.1,", with: "max_null_fraction: \(nulls),", in: "features.yaml")
            .replacing(
                "acc_rate: {min: 0, max: 1}",
                with: "acc_rate: {min: 0, max: 1}\n    avg_daily_trips: {allowed_values: [\((0..<30).map(String.init).joined(separator: ", "))]}",
                in: "features.yaml")
    }

    /// Waits until an alert of `kind` about `subject` is in the state asked (open, or resolved).
    static func waitForAlert(
        _ world: MaterializationWorld, kind: String, subject: String, resolved: Bool, timeout: TimeInterval = 30
    ) async throws -> AlertResource? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let alerts = try await world.jobs.admin.alerts(workspace: JobsWorld.workspace, all: true)
            if let alert = alerts.first(where: { $0.kind == kind && $0.subject == subject && ($0.resolvedAt != nil) == resolved }) { return alert }
            try await Task.sleep(for: .milliseconds(200))
        }
        return nil
    }

    /// Each driver's online row, read from the running agent's store.
    static func onlineRows(_ world: MaterializationWorld, drivers: Int) throws -> [OnlineLookup] {
        let store = try OnlineStore(directory: world.dataDirectory.appendingPathComponent("online").path, readOnly: true)
        guard let table = store.table(view: "driver_hourly_stats", version: 1) else { return [] }
        return (0..<drivers).map { table.lookup(.int(Int64(1_000 + $0)), now: 0) }
    }

    @Test("expectations: warn writes and alerts; fail writes nothing (offline and online unchanged) and reports the results; relaxed, the job passes and the alert resolves")
    func expectations() async throws {
        let drivers = 40
        try await MaterializationProcessTests.withWorld(drivers: drivers, hours: 48, trips: 200) { world in
            // conv_rate is null where (driver + hour) % 17 == 0: about 6% of a day's rows.
            func nullCount(_ hours: Range<Int>) -> Int64 {
                Int64((0..<drivers).flatMap { driver in hours.filter { (driver + $0) % 17 == 0 } }.count)
            }
            func outsideAllowed(_ hours: Range<Int>) -> Int64 {
                Int64((0..<drivers).flatMap { driver in hours.filter { (driver + $0) % 40 >= 30 } }.count)
            }
            let agent = try world.startAgent()
            try await withCleanup({ _ = await agent.stop() }) {
                let environment = ["LARDER_URL": world.jobs.server.baseURL, "LARDER_TOKEN": world.jobs.admin.token!, "LARDER_WORKSPACE": JobsWorld.workspace]

                // 1. Policy warn, limit 1%: the job writes its rows and reports the violation.
                _ = try await Self.repository(policy: .warn, nulls: "0.01").apply(to: JobsWorld.workspace, with: world.jobs.admin)
                let warned = try await world.materialize("driver_hourly_stats", hours: 0..<24)
                #expect(warned.job.state == .succeeded, "\(agent.log.suffix(3_000))")
                let warnedJob = try #require(try await world.jobs.chunks(of: warned.job.id).first)
                let report = try #require(warnedJob.metrics?.expectations)
                #expect(report.policy == .warn)
                let nullResult = try #require(report.results.first { $0.feature == "conv_rate" && $0.check == .maxNullFraction })
                #expect(!nullResult.passed)
                #expect(nullResult.observed == Double(nullCount(0..<24)) / Double(drivers * 24))
                let allowed = try #require(report.results.first { $0.feature == "avg_daily_trips" && $0.check == .allowedValues })
                #expect(allowed.observed == Double(outsideAllowed(0..<24)) && !allowed.passed)
                #expect(warnedJob.metrics?.features.first { $0.feature == "avg_daily_trips" }?.disallowedCount == outsideAllowed(0..<24))
                let accRate = report.results.filter { $0.feature == "acc_rate" }
                #expect(accRate.count == 2 && accRate.filter { !$0.passed }.isEmpty)
                #expect(try await world.offline("rides__driver_hourly_stats__v1").count == drivers * 24)
                let afterWarn = try Self.onlineRows(world, drivers: drivers)
                #expect(afterWarn.allSatisfy { if case .present(let record) = $0 { record.eventTime == Self.micros(hour: 23) } else { false } })
                let opened = try #require(try await Self.waitForAlert(world, kind: "expectation-violated", subject: "driver_hourly_stats", resolved: false))
                #expect(opened.detail.contains("policy warn") && opened.detail.contains("conv_rate: null fraction"), "\(opened.detail)")

                // 2. Policy fail: the next day's job fails for good, writing nothing anywhere.
                _ = try await Self.repository(policy: .fail, nulls: "0.01").apply(to: JobsWorld.workspace, with: world.jobs.admin)
                let failed = try await world.materialize("driver_hourly_stats", hours: 24..<48)
                let failedJob = try #require(try await world.jobs.chunks(of: failed.job.id).first)
                #expect(failedJob.state == .failed && failedJob.attempts == 1, "\(failedJob)")
                let message = failedJob.failure?.message ?? ""
                #expect(message.contains("expectations violated, nothing written (policy fail)") && message.contains("conv_rate: null fraction"), "\(message)")
                #expect(failedJob.failure?.retryable == false)
                let failedReport = try #require(failedJob.metrics?.expectations)
                #expect(failedReport.policy == .fail)
                #expect(failedReport.results.first { $0.check == .maxNullFraction }?.observed == Double(nullCount(24..<48)) / Double(drivers * 24))
                #expect(try await world.offline("rides__driver_hourly_stats__v1").count == drivers * 24)
                #expect(try await world.count(
                    "SELECT count(*)::int FROM larder_offline.rides__driver_hourly_stats__v1 WHERE event_timestamp >= '2025-01-02T00:00:00Z'") == 0)
                #expect(try Self.onlineRows(world, drivers: drivers) == afterWarn)
                let staging = world.dataDirectory.appendingPathComponent("online/staging").path
                #expect(((try? FileManager.default.contentsOfDirectory(atPath: staging)) ?? []).isEmpty)

                // Results per job and per view, through the CLI.
                let perJob = try await LarderBinary.run(["jobs", "describe", String(failedJob.id)], environment: environment)
                #expect(perJob.standardOutput.contains("expectations: 2 of 6 violated (policy fail)"), "\(perJob.standardOutput)\(perJob.standardError)")
                #expect(perJob.standardOutput.contains("FAIL  conv_rate: null fraction"))
                let perView = try await LarderBinary.run(["expectations"], environment: environment)
                let row = perView.standardOutput.split(separator: "\n").first { $0.hasPrefix("driver_hourly_stats") }.map { $0.split(separator: " ").joined(separator: " ") }
                #expect(row?.hasPrefix("driver_hourly_stats v1 fail failed \(failedJob.id)") == true, "\(perView.standardOutput)\(perView.standardError)")
                #expect(row?.hasSuffix("2 of 6") == true)

                // 3. Relaxed to 20% (an operational change: still v1): the rerun passes, writes, and the alert resolves.
                _ = try await Self.repository(policy: .fail, nulls: "0.2")
                    .replacing("avg_daily_trips: {allowed_values: [0,", with: "avg_daily_trips: {max: 39, allowed_values: [0,", in: "features.yaml")
                    .replacing(", 29]}", with: ", 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39]}", in: "features.yaml")
                    .apply(to: JobsWorld.workspace, with: world.jobs.admin)
                let passed = try await world.materialize("driver_hourly_stats", hours: 24..<48)
                #expect(passed.job.state == .succeeded, "\(agent.log.suffix(3_000))")
                let passedJob = try #require(try await world.jobs.chunks(of: passed.job.id).first)
                #expect(passedJob.metrics?.expectations?.violations.isEmpty == true, "\(String(describing: passedJob.metrics?.expectations))")
                #expect(try await world.offline("rides__driver_hourly_stats__v1").count == drivers * 48)
                let afterPass = try Self.onlineRows(world, drivers: drivers)
                #expect(afterPass.allSatisfy { if case .present(let record) = $0 { record.eventTime == Self.micros(hour: 47) } else { false } })
                let resolved = try #require(try await Self.waitForAlert(world, kind: "expectation-violated", subject: "driver_hourly_stats", resolved: true))
                #expect(resolved.id == opened.id)
                #expect(resolved.resolvedDetail == "recovered: job \(passedJob.id) of driver_hourly_stats met every expectation")
                let quality = try await world.jobs.admin.expectations(workspace: JobsWorld.workspace)
                #expect(quality.map(\.view) == ["driver_hourly_stats"] && quality.first?.state == .passed && quality.first?.job == passedJob.id)
            }
        }
    }

    @Test("a real agent process stopped: agent-offline opens after three missed heartbeats; restarted, it resolves")
    func agentOffline() async throws {
        try await MaterializationProcessTests.withWorld(drivers: 2, hours: 2, trips: 10) { world in
            let agent = try world.startAgent()
            let deadline = Date().addingTimeInterval(20)
            while !(try await world.jobs.admin.agents(workspace: JobsWorld.workspace).contains { $0.lastSeenAt != nil }), Date() < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(try await Self.waitForAlert(world, kind: "agent-offline", subject: "agent-1", resolved: false, timeout: 2) == nil)
            #expect(await agent.stop() == 0)
            let stoppedAt = Date()
            let opened = try #require(try await Self.waitForAlert(world, kind: "agent-offline", subject: "agent-1", resolved: false))
            // Heartbeats every second: three missed, plus a scheduler tick or two.
            #expect(opened.openedAt.timeIntervalSince(stoppedAt) > 1.5, "\(opened.openedAt) vs stop at \(stoppedAt)")
            #expect(opened.openedAt.timeIntervalSince(stoppedAt) < 15)
            let restarted = try world.startAgent()
            try await withCleanup({ _ = await restarted.stop() }) {
                let resolved = try #require(try await Self.waitForAlert(world, kind: "agent-offline", subject: "agent-1", resolved: true))
                #expect(resolved.id == opened.id && resolved.resolvedDetail == "recovered: agent-1 heartbeats again")
            }
        }
    }

    static func micros(hour: Int) -> Int64 {
        Int64(MaterializationWorld.day0.addingTimeInterval(Double(hour) * 3_600).timeIntervalSince1970 * 1_000_000)
    }
}

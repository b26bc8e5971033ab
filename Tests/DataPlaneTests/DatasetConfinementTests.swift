@testable import DataPlane
import Foundation
import PostgresNIO
import Shared
import Testing
import TestSupport

/// Where dataset jobs may write, and what of their failures and statistics
/// may leave the customer's host.
@Suite("Dataset outputs confined, reports without values")
struct DatasetConfinementTests {
    /// A datasets folder with something inside (a file, a folder, links in
    /// and out) and a sibling folder that must never change.
    static func layout() throws -> (root: URL, datasets: URL, outside: URL) {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("larder-confinement-\(UUID().uuidString)")
        let datasets = root.appendingPathComponent("datasets"), outside = root.appendingPathComponent("outside")
        for folder in [datasets.appendingPathComponent("sub"), outside.appendingPathComponent("deep")] {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        }
        try "kept\n".write(to: datasets.appendingPathComponent("kept.csv"), atomically: true, encoding: .utf8)
        try "secret\n".write(to: outside.appendingPathComponent("secret.csv"), atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(at: datasets.appendingPathComponent("out"), withDestinationURL: outside)
        try FileManager.default.createSymbolicLink(atPath: datasets.appendingPathComponent("up").path, withDestinationPath: "..")
        try FileManager.default.createSymbolicLink(at: datasets.appendingPathComponent("in"), withDestinationURL: datasets.appendingPathComponent("sub"))
        try FileManager.default.createSymbolicLink(
            at: datasets.appendingPathComponent("dangling.csv"), withDestinationURL: outside.appendingPathComponent("new.csv"))
        return (root, datasets, outside)
    }

    /// Every entry below `folder` with its contents (or link target).
    static func snapshot(_ folder: URL) -> [String: String] {
        var entries: [String: String] = [:]
        let enumerator = FileManager.default.enumerator(atPath: folder.path)
        while let path = enumerator?.nextObject() as? String {
            let full = folder.appendingPathComponent(path).path
            entries[path] = (try? FileManager.default.destinationOfSymbolicLink(atPath: full)).map { "→ \($0)" }
                ?? FileManager.default.contents(atPath: full).map { String(decoding: $0, as: UTF8.self) } ?? "folder"
        }
        return entries
    }

    @Test("generated paths (.., absolute, links out, existing entries, dangling links): each is refused or lands new inside the folder, and nothing else changes")
    func generatedPaths() throws {
        let parts = ["a", "b", "sub", "in", "out", "up", "..", ".", "", "kept.csv", "dangling.csv", "x.csv", "deep", "secret.csv", "/"]
        for seed in 0..<40 {
            let (root, datasets, outside) = try Self.layout()
            defer { try? FileManager.default.removeItem(at: root) }
            var random = SeededGenerator(seed: UInt64(seed))
            let outsideBefore = Self.snapshot(outside)
            var written: [URL] = []
            for _ in 0..<60 {
                let path = (0..<Int.random(in: 1...4, using: &random)).map { _ in parts.randomElement(using: &random)! }.joined(separator: "/")
                    + (Bool.random(using: &random) ? ".csv" : "")
                let before = Self.snapshot(datasets)
                do {
                    let target = try DatasetFolder(datasets).newFile(path)
                    let partial = try DatasetFolder.createPartial(beside: target)
                    try Data("written \(path)\n".utf8).write(to: partial)
                    try DatasetFolder.publish(partial, as: target, path: path)
                    try FileManager.default.removeItem(at: partial)
                    // It landed inside the folder, as a new regular file holding what was written.
                    let resolved = SourceConnection.realPath(target.path), home = SourceConnection.realPath(datasets.path)
                    #expect(resolved.hasPrefix(home + "/"), "\(path) → \(resolved)")
                    #expect(before[String(resolved.dropFirst(home.count + 1))] == nil, "\(path) replaced an entry")
                    #expect(try String(contentsOf: target, encoding: .utf8) == "written \(path)\n")
                    written.append(target)
                } catch let refusal as DatasetFolder.Refusal {
                    // A refusal leaves the folder as it was (apart from folders made for a path that was then refused: none here).
                    #expect(!refusal.description.isEmpty)
                    let after = Self.snapshot(datasets)
                    #expect(after.filter { $0.value != "folder" } == before.filter { $0.value != "folder" }, "\(path)")
                }
            }
            #expect(Self.snapshot(outside) == outsideBefore, "seed \(seed): the folder outside changed")
            #expect(try String(contentsOf: datasets.appendingPathComponent("kept.csv"), encoding: .utf8) == "kept\n")
            _ = written
        }
    }

    @Test("a file appearing between the check and the publish is never replaced")
    func raceLosesNothing() throws {
        let (root, datasets, _) = try Self.layout()
        defer { try? FileManager.default.removeItem(at: root) }
        let target = try DatasetFolder(datasets).newFile("race.csv")
        let partial = try DatasetFolder.createPartial(beside: target)
        try "someone else's\n".write(to: target, atomically: false, encoding: .utf8)
        #expect(throws: JobExecutionError.self) { try DatasetFolder.publish(partial, as: target, path: "race.csv") }
        #expect(try String(contentsOf: target, encoding: .utf8) == "someone else's\n")
    }

    @Test("the agent's settings: datasets places per connection, never the offline store's schema nor a source folder; dataset bounds and statistics")
    func settings() throws {
        let folder = try AgentConfigurationTests.folder()
        let exports = folder.appendingPathComponent("exports")
        try FileManager.default.createDirectory(at: exports, withIntermediateDirectories: true)
        let base = """
            control_plane: https://larder.example.com
            public_key: \(AgentConfigurationTests.key)
            data_directory: \(folder.path)
            offline_store:
              connection: db
              schema: larder_offline

            """
        let configuration = try AgentConfigurationTests.load(base + """
            connections:
              db:
                postgres: postgres://u@db.internal/rides
                datasets: training
              files:
                directory: \(exports.path)
                datasets: out
              other:
                directory: \(exports.path)
            report_statistics: counts
            statistics_min_rows: 5
            datasets:
              max_concurrent_builds: 3
              max_upload_bytes: 2048
              entity_queries_on_offline_store: true
              lookup_indexes: false
            """, in: folder)
        #expect(configuration.datasetPlaces["db"] == .schema("training"))
        #expect(configuration.datasetPlaces["files"] == .folder(exports.appendingPathComponent("out", isDirectory: true).standardizedFileURL))
        #expect(configuration.datasetPlaces["other"] == nil)
        #expect(configuration.datasets == .init(entityQueriesOnOfflineStore: true, maxUploadBytes: 2048, maxConcurrentBuilds: 3, lookupIndexes: false))
        #expect(throws: AgentConfiguration.Invalid.self) { try AgentConfigurationTests.load(base + "datasets:\n  lookup_indexes: sometimes\n", in: folder) }
        #expect(configuration.statistics == .init(level: .counts, minimumRows: 5))
        // The offline store's schema, also under another connection name with the same database.
        for connections in [
            "connections:\n  db:\n    postgres: postgres://u@db.internal/rides\n    datasets: larder_offline\n",
            "connections:\n  db:\n    postgres: postgres://u@db.internal/rides\n  again:\n    postgres: postgres://v@db.internal/rides\n    datasets: larder_offline\n",
        ] {
            #expect(throws: AgentConfiguration.Invalid.self) { try AgentConfigurationTests.load(base + connections, in: folder) }
        }
        // A datasets folder that is, or holds, a folder connection's folder (where sources read): refused.
        for place in [".", exports.path, folder.path, exports.path + "/"] {
            #expect(throws: AgentConfiguration.Invalid.self, "\(place)") {
                try AgentConfigurationTests.load(base + "connections:\n  files:\n    directory: \(exports.path)\n    datasets: \(place)\n", in: folder)
            }
        }
        let defaults = try AgentConfigurationTests.load(base + "connections:\n  db:\n    postgres: postgres://u@db.internal/rides\n", in: folder)
        #expect(defaults.datasetPlaces.isEmpty && defaults.datasets == .init() && defaults.statistics == .init())
    }

    @Test("statistics: min/max/mean only from statistics_min_rows non-null values and at full; none sends nothing; expectation bounds follow")
    func statistics() {
        let summaries = [
            FeatureSummary(feature: "one_row", count: 1, nullCount: 30, min: 42.5, max: 42.5, mean: 42.5),
            FeatureSummary(feature: "many", count: 25, nullCount: 0, min: 1, max: 9, mean: 5),
        ]
        let full = AgentConfiguration.StatisticsPolicy()
        #expect(full.reported(summaries)[0].min == nil && full.reported(summaries)[0].mean == nil && full.reported(summaries)[0].count == 1)
        #expect(full.reported(summaries)[1] == summaries[1])
        #expect(AgentConfiguration.StatisticsPolicy(level: .counts).reported(summaries).allSatisfy { $0.min == nil && $0.max == nil && $0.mean == nil })
        #expect(AgentConfiguration.StatisticsPolicy(level: .none).reported(summaries).isEmpty)
        let expectations = ViewExpectations(policy: .warn, features: [
            FeatureExpectation(feature: "one_row", min: 50), FeatureExpectation(feature: "many", max: 8),
        ])
        let report = full.reported(expectations.evaluate(rowsWritten: 31, summaries: summaries), summaries: summaries)
        #expect(report.results.first { $0.feature == "one_row" }?.observed == nil)
        #expect(report.results.first { $0.feature == "one_row" }?.passed == false, "evaluated on the whole statistics")
        #expect(report.results.first { $0.feature == "many" }?.observed == 9)
        #expect(!report.violations.map(\.summary).joined().contains("42.5"))
    }

    @Test("a server error is reported by SQLSTATE and object names, never its message or detail")
    func serverErrors() {
        #expect(SQLState.reported("22008", fields: [:]) == "SQLSTATE 22008 (datetime_field_overflow)")
        #expect(
            SQLState.reported("23505", fields: ["schema": "public", "table": "labels", "constraint": "labels_pkey"])
                == "SQLSTATE 23505 (unique_violation) at table public.labels, constraint labels_pkey")
        // A name that is not a plain identifier is left out rather than risk a value.
        #expect(SQLState.reported("23502", fields: ["column": "x' OR 1=1"]) == "SQLSTATE 23502 (not_null_violation)")
        #expect(SQLState.reported("a value!", fields: [:]) == "SQLSTATE ?")
    }

    @Test("dataset builds through the API: at most max_concurrent_builds at once and spool_bytes spooled; a slot and its bytes come back when its upload goes, and the upload's file with it")
    func buildLimits() throws {
        let limits = DatasetBuildLimits(.init(maxUploadBytes: 1 << 20, maxConcurrentBuilds: 2, spoolBytes: 1_000))
        var first: DatasetBuildLimits.Slot? = limits.admit()
        let second = limits.admit()
        #expect(first != nil && second != nil && limits.admit() == nil)
        #expect(first!.reserve(600) && !second!.reserve(600) && second!.reserve(400) && !second!.reserve(1))
        #expect(limits.usage == (2, 1_000))
        // A build's upload owns its slot: both go when it does, on whatever path.
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("larder-upload-\(UUID().uuidString).csv")
        try Data("x".utf8).write(to: file)
        var upload: SpooledUpload? = SpooledUpload(file: file, slot: first!)
        first = nil
        #expect(limits.admit() == nil)
        upload = nil
        #expect(upload == nil && !FileManager.default.fileExists(atPath: file.path))
        #expect(limits.usage == (1, 400))
        let third = limits.admit()
        #expect(third != nil && third!.reserve(600))
    }
}

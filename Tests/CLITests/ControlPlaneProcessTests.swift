import Foundation
import Testing
import TestSupport

/// A `larder-control` process on a free port, with its own database.
final class ControlPlaneProcess {
    let process = Process()
    let baseURL: String
    private let errorPipe = Pipe()

    init(databaseURL: String) throws {
        process.executableURL = LarderBinary.directory.appendingPathComponent("larder-control")
        process.arguments = ["serve", "--listen", "127.0.0.1:0", "--database-url", databaseURL]
        process.standardError = errorPipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // The server logs its address once it listens: read lines until then.
        var buffered = ""
        let deadline = Date().addingTimeInterval(60)
        var found: String?
        while found == nil, Date() < deadline {
            let chunk = errorPipe.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            buffered += String(decoding: chunk, as: UTF8.self)
            if let range = buffered.range(of: #"larder\.address=(http://127\.0\.0\.1:\d+)"#, options: .regularExpression) {
                found = String(buffered[range].dropFirst("larder.address=".count))
            }
        }
        guard let found else {
            process.terminate()
            throw LarderBinary.Failure(description: "larder-control did not start:\n\(buffered)")
        }
        baseURL = found
    }

    /// Sends SIGTERM and waits; returns the exit status.
    func stop() -> Int32 {
        process.terminate()
        process.waitUntilExit()
        return process.terminationStatus
    }
}

extension LarderBinary {
    struct Failure: Error, CustomStringConvertible { let description: String }
}

@Suite("larder against a running larder-control")
struct ControlPlaneProcessTests {
    @Test("a new user's session: create a workspace, plan, apply, edit, apply, inspect")
    func endToEnd() async throws {
        try await TestDatabase.withIsolatedDatabase { database in
            let server = try ControlPlaneProcess(databaseURL: database.urlString)
            defer { _ = server.process.isRunning ? server.stop() : 0 }
            let folder = try LarderBinary.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: folder) }
            let environment = ["LARDER_URL": server.baseURL]
            func larder(_ arguments: String..., input: String? = nil) throws -> LarderBinary.Result {
                try LarderBinary.run(arguments, in: folder, environment: environment, input: input)
            }

            #expect(try larder("init", "repo").status == 0)
            let created = try larder("workspaces", "create", "driver-stats")
            #expect(created.status == 0, "\(created.standardError)")
            try "workspace: driver-stats\n".write(to: folder.appendingPathComponent("repo/larder.yaml"), atomically: true, encoding: .utf8)

            let plan = try larder("plan", "repo")
            #expect(plan.status == 0, "\(plan.standardError)")
            #expect(plan.standardOutput.contains("+ FeatureService driver_ranking"))
            #expect(plan.standardOutput.contains("Summary: 9 to create."))

            let declined = try larder("apply", "repo", input: "no\n")
            #expect(declined.status == 1 && declined.standardOutput.contains("not applied"))
            #expect(try larder("ls", "views", "-w", "driver-stats").standardOutput.split(separator: "\n").count == 1)

            let applied = try larder("apply", "repo", input: "yes\n")
            #expect(applied.status == 0, "\(applied.standardError)")
            #expect(applied.standardOutput.contains("is at revision 1"))
            let again = try larder("apply", "--yes", "repo")
            #expect(again.standardOutput.contains("No changes"))

            let features = folder.appendingPathComponent("repo/features.yaml")
            let text = try String(contentsOf: features, encoding: .utf8)
            try text.replacingOccurrences(of: "    windows: [7d]\n", with: "    windows: [7d, 30d]\n")
                .write(to: features, atomically: true, encoding: .utf8)
            let edited = try larder("plan", "repo")
            #expect(edited.standardOutput.contains("~ FeatureView driver_trip_aggregates"))
            #expect(edited.standardOutput.contains("new version v1 → v2"))
            #expect(edited.standardOutput.contains("spec.aggregations[2].windows[1]: (none) → 2592000"))
            #expect(edited.standardOutput.contains("impact: FeatureService driver_ranking, OnDemandFeatureView trip_quote"))
            #expect(try larder("apply", "-y", "repo").status == 0)

            let versions = try larder("versions", "feature-views", "driver_trip_aggregates", "--repo", "repo")
            #expect(versions.standardOutput.contains("v1 ") && versions.standardOutput.contains("v2 *"))
            let old = try larder("describe", "FeatureView", "driver_trip_aggregates", "--version", "1", "-w", "driver-stats")
            #expect(old.status == 0 && old.standardOutput.contains("FeatureView driver_trip_aggregates v1"))
            let lineage = try larder("lineage", "sources", "trips", "-w", "driver-stats")
            #expect(lineage.standardOutput.contains("FeatureView driver_trip_aggregates v2"))
            #expect(lineage.standardOutput.contains("FeatureView driver_trip_aggregates v1 (not current)"))
            let search = try larder("search", "fare", "-w", "driver-stats", "--json")
            #expect(search.standardOutput.contains("\"name\" : \"driver_trip_aggregates\""))
            let missing = try larder("describe", "views", "nope", "-w", "driver-stats")
            #expect(missing.status == 1 && missing.standardError.contains("no object named 'nope'"))

            #expect(server.stop() == 0, "graceful shutdown on SIGTERM exits 0")
            let down = try larder("ls", "views", "-w", "driver-stats")
            #expect(down.status == 1 && down.standardError.contains("cannot reach the control plane"))
        }
    }

    @Test("larder-control refuses to start without a database and says which setting is missing")
    func missingDatabase() throws {
        let process = Process()
        process.executableURL = LarderBinary.directory.appendingPathComponent("larder-control")
        process.arguments = ["serve"]
        process.environment = ["PATH": "/usr/bin:/bin"]
        let error = Pipe()
        process.standardError = error
        try process.run()
        let output = String(decoding: error.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus != 0)
        #expect(output.contains("LARDER_DATABASE_URL"))
    }
}

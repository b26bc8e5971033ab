import DataPlane
import Foundation
import Shared
import Testing
import TestSupport

/// What `larder validate` accepts, jobs run: every scalar type as a plain feature, and every
/// aggregation function over every type it admits, through validate → apply → materialize by a
/// real agent → serve → training dataset; and every combination validate refuses is refused there,
/// with the field named, not left for a job to fail on.
@Suite("Every type and aggregation that validates, runs")
struct TypeMatrixProcessTests {
    /// The scalar columns of the generated source, in order (the join key and event time aside).
    static let columns: [(name: String, type: ValueType)] = [
        ("i64", .int64), ("i32", .int32), ("f64", .float64), ("f32", .float32), ("flag", .bool), ("label", .string),
        ("blob", .bytes), ("seen_at", .timestamp),
    ]
    static let drivers = Array(1_000..<1_006)
    static let hours = 48

    /// One generated event: its driver, hour and each column's CSV text (nil: empty, a null).
    struct Event {
        var driver: Int
        var hour: Int
        var cells: [String?]
    }

    static var events: [Event] {
        var events: [Event] = []
        for hour in 0..<hours {
            for driver in drivers where (driver + hour) % 3 != 0 {
                let day0 = MaterializationWorld.day0
                let cells: [String] = [
                    "\(driver * 100 + hour)", "\(hour - 20)", "\(Double(driver - 1_000) + Double(hour) / 4)", "\(Double(hour % 8) / 4)",
                    (driver + hour) % 2 == 0 ? "true" : "false", "l\(hour % 5)", "b\(driver)x\(hour)",
                    RFC3339.format(day0.addingTimeInterval(Double(hour * 3_600 + 60))),
                ]
                events.append(Event(driver: driver, hour: hour, cells: cells.enumerated().map { index, text in
                    (driver + hour + index) % 7 == 0 ? nil : text
                }))
            }
        }
        return events
    }

    static var csv: String {
        let header = "driver_id,event_timestamp," + columns.map(\.name).joined(separator: ",")
        return ([header] + events.map { event in
            let time = RFC3339.format(MaterializationWorld.day0.addingTimeInterval(Double(event.hour * 3_600)))
            return "\(event.driver),\(time)," + event.cells.map { $0 ?? "" }.joined(separator: ",")
        }).joined(separator: "\n") + "\n"
    }

    /// Every function over every column, split by whether the language admits it.
    static var aggregations: (admitted: [(AggregationFunction, String)], refused: [(AggregationFunction, String)]) {
        var admitted: [(AggregationFunction, String)] = [], refused: [(AggregationFunction, String)] = []
        for function in AggregationFunction.allCases {
            for column in columns {
                if function.outputType(for: column.type) == nil { refused.append((function, column.name)) } else { admitted.append((function, column.name)) }
            }
        }
        return (admitted, refused)
    }

    static func repository(aggregations: [(AggregationFunction, String)]) -> String {
        """
        kind: FileSource
        name: typed_events
        connection: local_files
        paths: [typed_events.csv]
        timestamp_field: event_timestamp
        columns:
          driver_id: int64
        \(columns.map { "  \($0.name): \($0.type)" }.joined(separator: "\n"))
        ---
        kind: FeatureView
        name: typed_plain
        entities: [driver]
        source: typed_events
        features:
        \(columns.map { "  - name: \($0.name)\n    type: \($0.type)" }.joined(separator: "\n"))
        ---
        kind: FeatureView
        name: typed_windows
        entities: [driver]
        source: typed_events
        slide: 1h
        aggregations:
        \(aggregations.map { "  - function: \($0.0.rawValue)\n    column: \($0.1)\n    windows: [1d]\n    name: \($0.1)_\($0.0.rawValue)" }.joined(separator: "\n"))
        """
    }

    /// Whether a served value and a dataset's CSV cell are the same value.
    static func same(_ served: JSONCell, _ cell: String) -> Bool {
        switch served {
        case .null: return cell.isEmpty
        case .bool(let flag): return cell == (flag ? "true" : "false")
        case .number(let number):
            guard let value = Double(cell) else { return false }
            return value == number || abs(value - number) <= 1e-9 * max(1, abs(number))
        case .string(let text): return cell == text
        }
    }

    @Test("validate admits exactly the combinations jobs run: each refused one is a type-mismatch naming its function")
    func validateRefusesWhatJobsCannotRun() throws {
        let (admitted, refused) = Self.aggregations
        #expect(!refused.isEmpty && !admitted.isEmpty)
        let example = RepositoryScaffold.files.map { ($0.path, $0.contents) }
        let accepted = RepositoryLoader.load(files: example + [("typed.yaml", Self.repository(aggregations: admitted))])
        #expect(accepted.isValid, "\(accepted.diagnostics)")
        for (function, column) in refused {
            let loaded = RepositoryLoader.load(files: example + [("typed.yaml", Self.repository(aggregations: [(.count, "i64"), (function, column)]))])
            #expect(loaded.diagnostics.map(\.code) == [.typeMismatch], "\(function) over \(column): \(loaded.diagnostics)")
            #expect(loaded.diagnostics.first?.fieldPath == "aggregations[1].function", "\(loaded.diagnostics)")
        }
        // Lists are refused wherever a type is written, with the field named.
        for type in ValueType.allCases where type.isArray {
            let text = Self.repository(aggregations: admitted).replacingOccurrences(of: "  seen_at: timestamp", with: "  seen_at: \(type)")
            let loaded = RepositoryLoader.load(files: example + [("typed.yaml", text)])
            #expect(loaded.diagnostics.contains { $0.code == .unsupportedType && $0.fieldPath == "columns.seen_at" }, "\(type): \(loaded.diagnostics)")
        }
    }

    @Test("every scalar type as a plain feature and every admitted aggregation: materialized by a real agent, served as the newest values, and the same in a training dataset")
    func everyAdmittedCombinationRuns() async throws {
        try await MaterializationProcessTests.withWorld(drivers: 2, hours: Self.hours, trips: 10) { world in
            try Self.csv.write(to: world.files.appendingPathComponent("typed_events.csv"), atomically: true, encoding: .utf8)
            let admitted = Self.aggregations.admitted
            _ = try await RepositoryFixture.example(workspace: JobsWorld.workspace).unscheduled()
                .adding("typed.yaml", Self.repository(aggregations: admitted))
                .apply(to: JobsWorld.workspace, with: world.jobs.admin)
            let reader = try await DatasetProcessTests.member("rita", .consumer, in: world)
            let agent = try world.startAgent()
            for view in ["typed_plain", "typed_windows"] {
                let job = try await world.materialize(view, hours: 0..<Self.hours, chunk: "2d")
                #expect(job.job.state == .succeeded, "\(view): \(job.events.map(\.event)) \(agent.log.suffix(3_000))")
            }
            let server = try await FeatureServerCaller.waitForAddress(dataDirectory: world.dataDirectory)
            let keys = Self.drivers + [999]
            let request = #"{"features":["typed_plain","typed_windows"],"entities":[\#(keys.map { #"{"driver_id":\#($0)}"# }.joined(separator: ","))]}"#
            var served: ServedFeatures?
            let deadline = Date().addingTimeInterval(30)
            while served == nil, Date() < deadline {
                served = try? await server.features(request, token: reader)
                if served == nil { try await Task.sleep(for: .milliseconds(200)) }
            }
            let online = try #require(served)
            let windowFeatures = admitted.map { "typed_windows:\($0.1)_\($0.0.rawValue)_1d" }
            #expect(online.features.map(\.name) == Self.columns.map { "typed_plain:\($0.name)" } + windowFeatures)

            // Plain features: each driver's newest event, cell by cell, typed as declared.
            let events = Self.events
            for (row, driver) in Self.drivers.enumerated() {
                let newest = try #require(events.filter { $0.driver == driver }.max { $0.hour < $1.hour })
                for (index, column) in Self.columns.enumerated() {
                    let cell = try #require(online.cell(row, "typed_plain:\(column.name)"))
                    let expected = newest.cells[index]
                    #expect(cell.status == (expected == nil ? "null" : "present"), "driver \(driver) \(column.name)")
                    let matches: Bool
                    switch (column.type, cell.value) {
                    case (_, .null): matches = expected == nil
                    case (.bool, .bool(let flag)): matches = expected == "\(flag)"
                    case (.string, .string(let text)), (.bytes, .string(let text)): matches = expected == text
                    case (.timestamp, .string(let text)): matches = expected.flatMap(RFC3339.parse) == RFC3339.parse(text)
                    case (_, .number(let number)): matches = expected.flatMap(Double.init) == number
                    default: matches = false
                    }
                    #expect(matches, "driver \(driver) \(column.name) (\(column.type)): served \(cell.value), newest event has \(expected ?? "null")")
                }
                // Counts over the day before the last boundary (windows end there, exclusive).
                for (function, column) in admitted where function == .count {
                    let index = Self.columns.firstIndex { $0.name == column }!
                    let expected = events.filter { $0.driver == driver && $0.hour >= Self.hours - 24 && $0.cells[index] != nil }.count
                    #expect(online.cell(row, "typed_windows:\(column)_count_1d")?.value == .number(Double(expected)), "driver \(driver) count of \(column)")
                }
            }
            #expect(online.cell(Self.drivers.count, "typed_plain:i64")?.status == "not_found")

            // The training dataset at the last boundary gives the served values, every cell.
            let instant = RFC3339.format(MaterializationWorld.day0.addingTimeInterval(Double(Self.hours) * 3_600))
            let csv = "driver_id,event_timestamp\n" + Self.drivers.map { "\($0),\(instant)" }.joined(separator: "\n") + "\n"
            let built = try await DatasetProcessTests.build(server, query: "features=typed_plain,typed_windows", csv: csv, token: reader)
            #expect(built.status == 200, "\(built.body)")
            let lines = built.body.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
            let header = try #require(lines.first)
            // Dataset columns are named view__feature (a CSV header without colons).
            #expect(Array(header.dropFirst(2)) == online.features.map { $0.name.replacingOccurrences(of: ":", with: "__") }, "\(header)")
            #expect(lines.count == Self.drivers.count + 1)
            for (row, driver) in Self.drivers.enumerated() where row + 1 < lines.count {
                for (column, name) in online.features.map(\.name).enumerated() {
                    let served = online.cell(row, name)?.value ?? .null
                    let cell = lines[row + 1][column + 2]
                    #expect(Self.same(served, cell), "driver \(driver) \(name): dataset '\(cell)', served \(served)")
                }
            }
            #expect(await agent.stop() == 0)
        }
    }
}

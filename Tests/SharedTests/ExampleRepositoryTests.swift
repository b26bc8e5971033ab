import Foundation
import Testing
@testable import Shared

@Suite("The example repository")
struct ExampleRepositoryTests {
    @Test("examples/driver-stats validates without errors and declares every kind")
    func exampleValidates() throws {
        let loaded = RepositoryLoader.load(directory: RepositoryPaths.driverStatsExample)
        #expect(loaded.diagnostics.map(\.description) == [])
        let repository = loaded.repository
        #expect(repository.config.workspace == "driver-stats")
        #expect(repository.entities.map(\.name) == ["driver", "customer"])
        #expect(Set(repository.sources.map(\.kind)) == [.fileSource, .postgresSource])
        #expect(repository.featureViews.map(\.name) == ["driver_hourly_stats", "driver_trip_aggregates", "customer_trip_stats"])
        #expect(repository.featureViews.contains { $0.isAggregation && Set($0.aggregations.flatMap(\.windows).map(\.description)) == ["1h", "1d", "7d"] })
        #expect(repository.featureViews.contains { $0.schedule == .interval(TimeSpan(seconds: 3600)) })
        #expect(repository.onDemandFeatureViews.count == 1)
        #expect(repository.featureServices.map(\.name) == ["driver_ranking"])
    }

    @Test("larder init writes exactly the example repository")
    func scaffoldMatchesExample() throws {
        let exampleFiles = try FileManager.default.contentsOfDirectory(atPath: RepositoryPaths.driverStatsExample.path)
            .filter { $0.hasSuffix(".yaml") }.sorted()
        #expect(RepositoryScaffold.files.map(\.path).sorted() == exampleFiles, "run scripts/sync-scaffold")
        for file in RepositoryScaffold.files {
            let onDisk = try String(contentsOf: RepositoryPaths.driverStatsExample.appendingPathComponent(file.path), encoding: .utf8)
            #expect(file.contents == onDisk, "\(file.path) differs from the example; run scripts/sync-scaffold")
        }
        let loaded = RepositoryLoader.load(files: RepositoryScaffold.files)
        #expect(loaded.isValid)
    }

    @Test("aggregation features are named per function and window and typed from the source")
    func aggregationOutputs() throws {
        let repository = RepositoryLoader.load(directory: RepositoryPaths.driverStatsExample).repository
        let schemas = RepositoryValidator.viewSchemas(of: repository)
        let aggregates = try #require(schemas["driver_trip_aggregates"])
        #expect(aggregates.map(\.name) == [
            "trips_count_1h", "trips_count_1d", "trips_count_7d", "fare_mean_1d", "fare_mean_7d", "distance_km_sum_7d",
        ])
        #expect(aggregates.first { $0.name == "trips_count_1d" }?.type == .int64)
        #expect(aggregates.first { $0.name == "distance_km_sum_7d" }?.type == .float64)
    }
}

import DataPlane
import Foundation
import Shared
import Testing

/// Feature requests resolved against a registry snapshot of the example.
@Suite("Serving catalog: resolving feature requests")
struct ServingCatalogTests {
    static func catalog() throws -> ServingCatalog {
        let repository = RepositoryLoader.load(files: RepositoryScaffold.files.map { ($0.path, $0.contents) }).repository
        let definitions = DefinitionCanonicalizer.canonicalize(repository).map {
            JobSpec.Definition(kind: $0.key.kind.rawValue, name: $0.key.name, version: $0.key.name == "driver_hourly_stats" ? 3 : 1,
                               contentHash: $0.contentHash, definition: $0.spec)
        }
        return try ServingCatalog(snapshot: AgentRegistrySnapshot(workspace: "driver-stats", revision: 7, issuedAt: Date(), definitions: definitions))
    }

    @Test("a feature service: its views' features in order, the stored views at their current versions, the on-demand outputs with their request fields")
    func service() throws {
        let catalog = try Self.catalog()
        #expect(catalog.revision == 7)
        let request = try catalog.resolve(service: "driver_ranking")
        #expect(request.outputs.map(\.name) == [
            "driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate", "driver_hourly_stats:avg_daily_trips",
            "driver_trip_aggregates:trips_count_1d", "driver_trip_aggregates:trips_count_7d", "driver_trip_aggregates:fare_mean_7d",
            "trip_quote:expected_fare", "trip_quote:likely_to_convert",
        ])
        #expect(request.outputs[0].source == .stored(view: "driver_hourly_stats", version: 3, feature: "conv_rate"))
        #expect(request.outputs[6].source == .onDemand(view: "trip_quote", output: "expected_fare"))
        #expect(request.outputs[7].type == .bool)
        #expect(request.views.map(\.view) == ["driver_hourly_stats", "driver_trip_aggregates"])
        #expect(request.joinKeys == [Column(name: "driver_id", type: .int64)])
        #expect(request.requestFields == [Column(name: "trip_distance_km", type: .float64)])
        let fare = try #require(request.expressions["trip_quote:expected_fare"])
        let inputs = catalog.expressionInputs(of: "trip_quote")
        let values = inputs.map { input -> FeatureValue in
            switch input.name {
            case "trip_distance_km": return .double(3)
            case "fare_mean_7d": return .double(2.5)
            default: return .null
            }
        }
        #expect(fare.evaluate(values) == .double(7.5))
    }

    @Test("references: single features, whole views, and errors naming what does not exist")
    func references() throws {
        let catalog = try Self.catalog()
        let request = try catalog.resolve(references: ["customer_trip_stats:rating", "driver_hourly_stats"])
        #expect(request.outputs.map(\.name) == [
            "customer_trip_stats:rating", "driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate", "driver_hourly_stats:avg_daily_trips",
        ])
        #expect(request.joinKeys.map(\.name) == ["customer_id", "driver_id"])
        #expect(request.requestFields.isEmpty)
        #expect(throws: ServingError.unknownView("driver_stats")) { try catalog.resolve(references: ["driver_stats:conv_rate"]) }
        #expect(throws: ServingError.unknownFeature(view: "driver_hourly_stats", feature: "conv")) {
            try catalog.resolve(references: ["driver_hourly_stats:conv"])
        }
        #expect(throws: ServingError.malformedReference("a:b:c")) { try catalog.resolve(references: ["a:b:c"]) }
        #expect(throws: ServingError.unknownService("ranking")) { try catalog.resolve(service: "ranking") }
    }
}

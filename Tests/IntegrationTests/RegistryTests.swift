import Foundation
import Shared
import Testing
import TestSupport

@Suite("Registry over HTTP and PostgreSQL")
struct RegistryTests {
    /// Runs `body` against a control plane whose workspace `rides` holds the applied example repository.
    static func withExampleApplied(_ body: (ControlPlaneClient, RepositoryFixture) async throws -> Void) async throws {
        try await TestControlPlane.withControlPlane { server in
            _ = try await server.client.createWorkspace("rides")
            let repository = RepositoryFixture.example(workspace: "rides")
            try await repository.apply(to: "rides", with: server.client)
            try await body(server.client, repository)
        }
    }

    static func change(_ plan: PlanResource, _ kind: ObjectKind, _ name: String) throws -> PlannedChange {
        try #require(plan.changes.first { $0.kind == kind && $0.name == name }, "no change for \(kind) \(name)")
    }

    @Test("the first apply creates every object; applying the same repository again is a no-op")
    func applyTwice() async throws {
        try await TestControlPlane.withControlPlane { server in
            let client = server.client
            _ = try await client.createWorkspace("rides")
            let repository = RepositoryFixture.example(workspace: "rides")
            let first = try await client.plan(workspace: "rides", files: repository.apiFiles)
            #expect(first.baseRevision == 0)
            #expect(first.changes.count == 9)
            #expect(first.changes.allSatisfy { $0.action == .create && $0.toVersion == 1 })
            let applied = try await client.apply(workspace: "rides", planID: first.id)
            #expect(applied.changed && applied.revision == 1 && applied.changes.count == 9)

            let second = try await client.plan(workspace: "rides", files: repository.apiFiles)
            #expect(second.baseRevision == 1)
            #expect(second.changes.allSatisfy { $0.action == .unchanged })
            let noop = try await client.apply(workspace: "rides", planID: second.id)
            #expect(!noop.changed && noop.revision == 1 && noop.changes.isEmpty)
            #expect(try await client.workspace("rides").revision == 1)
            #expect(try await client.versions(workspace: "rides", collection: .featureViews, name: "driver_hourly_stats").count == 1)
            #expect(try await client.applies(workspace: "rides").items.map(\.changed) == [false, true])
        }
    }

    @Test("a description edit is a metadata-only update: no new version")
    func descriptionEdit() async throws {
        try await Self.withExampleApplied { client, repository in
            let edited = repository.replacing(
                "description: Hourly quality statistics of each driver.", with: "description: Hourly driver quality.", in: "features.yaml")
            let plan = try await client.plan(workspace: "rides", files: edited.apiFiles)
            let change = try Self.change(plan, .featureView, "driver_hourly_stats")
            #expect(change.action == .update)
            #expect(change.fromVersion == 1 && change.toVersion == 1)
            #expect(change.fieldChanges == [FieldChange(
                path: "metadata.description", before: .string("Hourly quality statistics of each driver."), after: .string("Hourly driver quality."))])
            #expect(plan.changes.filter { $0.action != .unchanged }.count == 1)
            _ = try await client.apply(workspace: "rides", planID: plan.id)
            let object = try await client.object(workspace: "rides", collection: .featureViews, name: "driver_hourly_stats")
            #expect(object.currentVersion == 1 && object.latestVersion == 1)
            #expect(object.description == "Hourly driver quality.")
        }
    }

    @Test("a SQL or window edit makes version 2 of the view and its consumers; version 1 stays readable")
    func semanticEdit() async throws {
        try await Self.withExampleApplied { client, repository in

            let windowEdit = repository.replacing("    windows: [7d]\n", with: "    windows: [7d, 30d]\n", in: "features.yaml")
            let plan = try await client.plan(workspace: "rides", files: windowEdit.apiFiles)
            let view = try Self.change(plan, .featureView, "driver_trip_aggregates")
            #expect(view.action == .newVersion && view.fromVersion == 1 && view.toVersion == 2)
            #expect(view.fieldChanges.contains { $0.path == "spec.aggregations[2].windows[1]" && $0.after == .integer(2_592_000) })
            #expect(view.impact == [
                ObjectKey(kind: .featureService, name: "driver_ranking"), ObjectKey(kind: .onDemandFeatureView, name: "trip_quote"),
            ])
            #expect(try Self.change(plan, .onDemandFeatureView, "trip_quote").action == .newVersion)
            #expect(try Self.change(plan, .featureView, "driver_hourly_stats").action == .unchanged)
            _ = try await client.apply(workspace: "rides", planID: plan.id)

            let sqlEdit = windowEdit.replacing("rating\n  FROM {{ source }}", with: "rating\n  FROM {{ source }}\n  WHERE fare > 0", in: "features.yaml")
            let sqlPlan = try await client.plan(workspace: "rides", files: sqlEdit.apiFiles)
            let customer = try Self.change(sqlPlan, .featureView, "customer_trip_stats")
            #expect(customer.action == .newVersion && customer.toVersion == 2)
            #expect(customer.fieldChanges.map(\.path) == ["spec.sql"])
            _ = try await client.apply(workspace: "rides", planID: sqlPlan.id)

            let versions = try await client.versions(workspace: "rides", collection: .featureViews, name: "driver_trip_aggregates")
            #expect(versions.map(\.version) == [1, 2])
            #expect(versions.map(\.isCurrent) == [false, true])
            let one = try await client.version(1, workspace: "rides", collection: .featureViews, name: "driver_trip_aggregates")
            #expect(one.spec != versions[1].spec)
            #expect(one.upstream.map(\.name).sorted() == ["driver", "trips"])
            let service = try await client.object(workspace: "rides", collection: .featureServices, name: "driver_ranking")
            #expect(service.currentVersion == 2)
        }
    }

    @Test("two applies from the same base: exactly one succeeds, the other gets 409 and changes nothing")
    func concurrentApplies() async throws {
        try await Self.withExampleApplied { client, base in
            let left = base.replacing("ttl: 2d", with: "ttl: 3d", in: "features.yaml")
            let right = base.removingDocument(containing: "name: driver_ranking", in: "services.yaml")
            let leftPlan = try await client.plan(workspace: "rides", files: left.apiFiles)
            let rightPlan = try await client.plan(workspace: "rides", files: right.apiFiles)
            #expect(leftPlan.baseRevision == rightPlan.baseRevision)

            async let leftResult = Result(catching: { try await client.apply(workspace: "rides", planID: leftPlan.id) })
            async let rightResult = Result(catching: { try await client.apply(workspace: "rides", planID: rightPlan.id) })
            let results = await [leftResult, rightResult]
            let successes = results.compactMap { try? $0.get() }
            #expect(successes.count == 1)
            let failure = try #require(results.compactMap { result -> ProblemDetails? in
                if case .failure(let error) = result { return error as? ProblemDetails } else { return nil }
            }.first)
            #expect(failure.status == 409 && failure.code == "plan-conflict")

            let workspace = try await client.workspace("rides")
            #expect(workspace.revision == 2)
            let hourly = try await client.object(workspace: "rides", collection: .featureViews, name: "driver_hourly_stats")
            let services = try await client.objects(workspace: "rides", collection: .featureServices)
            if successes[0].planId == leftPlan.id {
                #expect(hourly.currentVersion == 2 && services.count == 1)
            } else {
                #expect(hourly.currentVersion == 1 && services.isEmpty)
            }
        }
    }

    @Test("a source change lists the on-demand views and services it reaches")
    func impactOfSourceChange() async throws {
        try await TestControlPlane.withControlPlane { server in
            let client = server.client
            _ = try await client.createWorkspace("rides")
            let base = RepositoryFixture.example(workspace: "rides")
                + ("more.yaml", """
                    kind: FeatureService
                    name: customer_model
                    features: [customer_trip_stats]
                    ---
                    kind: FeatureService
                    name: hourly_only
                    features: [driver_hourly_stats]
                    """)
            try await base.apply(to: "rides", with: client)
            let edited = base.replacing("table: public.trips", with: "table: public.completed_trips", in: "sources.yaml")
            let plan = try await client.plan(workspace: "rides", files: edited.apiFiles)
            let source = try Self.change(plan, .postgresSource, "trips")
            #expect(source.action == .newVersion)
            #expect(source.impact == [
                ObjectKey(kind: .featureService, name: "customer_model"), ObjectKey(kind: .featureService, name: "driver_ranking"),
                ObjectKey(kind: .onDemandFeatureView, name: "trip_quote"),
            ])
            #expect(!source.impact.contains(ObjectKey(kind: .featureService, name: "hourly_only")))
            let view = try Self.change(plan, .featureView, "driver_trip_aggregates")
            #expect(view.fieldChanges == [FieldChange(path: "upstream.PostgresSource.trips", before: .integer(1), after: .integer(2))])
        }
    }

    @Test("retiring keeps the versions; re-adding the same definition restores its version")
    func retireAndReAdd() async throws {
        try await Self.withExampleApplied { client, base in
            let without = base.removingDocument(containing: "name: driver_ranking", in: "services.yaml")
            let retirePlan = try await client.plan(workspace: "rides", files: without.apiFiles)
            let retire = try Self.change(retirePlan, .featureService, "driver_ranking")
            #expect(retire.action == .retire && retire.fromVersion == 1 && retire.toVersion == nil)
            _ = try await client.apply(workspace: "rides", planID: retirePlan.id)
            #expect(try await client.objects(workspace: "rides", collection: .featureServices).isEmpty)
            let retired = try await client.objects(workspace: "rides", collection: .featureServices, includeRetired: true)
            #expect(retired.map(\.name) == ["driver_ranking"] && retired[0].currentVersion == nil && retired[0].retiredAt != nil)
            #expect(try await client.version(1, workspace: "rides", collection: .featureServices, name: "driver_ranking").version == 1)

            let readd = try await client.plan(workspace: "rides", files: base.apiFiles)
            let create = try Self.change(readd, .featureService, "driver_ranking")
            #expect(create.action == .create && create.toVersion == 1)
            _ = try await client.apply(workspace: "rides", planID: readd.id)
            let restored = try await client.object(workspace: "rides", collection: .featureServices, name: "driver_ranking")
            #expect(restored.currentVersion == 1 && restored.retiredAt == nil)

            let changed = without + ("services.yaml", base.files["services.yaml"]!.replacingOccurrences(
                of: "  - trip_quote\n", with: ""))
            let another = try await client.plan(workspace: "rides", files: changed.apiFiles)
            #expect(try Self.change(another, .featureService, "driver_ranking").action == .newVersion)
        }
    }

    @Test("lineage walks versions up and down; search finds by name, description, tag and owner")
    func lineageAndSearch() async throws {
        try await Self.withExampleApplied { client, base in

            let down = try await client.lineage(workspace: "rides", collection: .sources, name: "trips", direction: .downstream, depth: 5)
            #expect(Set(down.nodes.map(\.name)) == ["trips", "driver_trip_aggregates", "customer_trip_stats", "trip_quote", "driver_ranking"])
            let shallow = try await client.lineage(workspace: "rides", collection: .sources, name: "trips", direction: .downstream, depth: 1)
            #expect(Set(shallow.nodes.map(\.name)) == ["trips", "driver_trip_aggregates", "customer_trip_stats"])
            let up = try await client.lineage(workspace: "rides", collection: .featureServices, name: "driver_ranking", direction: .upstream, depth: 5)
            #expect(Set(up.nodes.map(\.name)) == [
                "driver_ranking", "driver_hourly_stats", "driver_trip_aggregates", "trip_quote", "driver_stats_files", "trips", "driver",
            ])
            #expect(up.edges.contains { $0.downstream.name == "trip_quote" && $0.upstream.name == "driver_hourly_stats" })

            #expect(try await client.search(workspace: "rides", text: "fare").map(\.name).contains("driver_trip_aggregates"))
            #expect(Set(try await client.search(workspace: "rides", text: "quality").map(\.name)) == ["driver_hourly_stats", "driver_stats_files"])
            #expect(try await client.search(workspace: "rides", text: "quality", kind: "feature-views").map(\.name) == ["driver_hourly_stats"])
            #expect(try await client.search(workspace: "rides", text: "driv", kind: "Entity").map(\.name) == ["driver"])
            #expect(Set(try await client.search(workspace: "rides", text: "", tag: "team=ranking").map(\.name)) == [
                "driver_hourly_stats", "driver_trip_aggregates",
            ])
            #expect(try await client.search(workspace: "rides", text: "", owner: "rides-data@example.com").count == 2)
            #expect(try await client.search(workspace: "rides", text: "nothing-like-this").isEmpty)
        }
    }
}

extension RepositoryFixture {
    static func + (fixture: RepositoryFixture, file: (String, String)) -> RepositoryFixture {
        var copy = fixture
        copy.files[file.0] = file.1
        return copy
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

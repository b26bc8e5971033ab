import Foundation
import Testing
@testable import ControlPlane
@testable import Shared

/// A registry snapshot holding exactly what applying `definitions` as version 1 would leave.
func snapshotAfterApplying(_ definitions: [CanonicalDefinition], revision: Int64 = 1) -> RegistrySnapshot {
    var snapshot = RegistrySnapshot(revision: revision)
    for definition in definitions {
        snapshot.objects[definition.key] = .init(applied: definition)
        snapshot.currentUpstream[definition.key] = definition.upstream.map(\.key)
    }
    return snapshot
}

func canonicalExample(editing edit: (inout [String: String]) -> Void = { _ in }) throws -> [CanonicalDefinition] {
    var files = Dictionary(uniqueKeysWithValues: RepositoryScaffold.files.map { ($0.path, $0.contents) })
    edit(&files)
    let loaded = RepositoryLoader.load(files: files.map { ($0.key, $0.value) })
    try #require(loaded.isValid, "\(loaded.diagnostics)")
    return DefinitionCanonicalizer.canonicalize(loaded.repository)
}

@Suite("Planning")
struct PlanBuilderTests {
    @Test("against an empty registry everything is created as version 1")
    func allCreate() throws {
        let changes = try PlanBuilder.changes(applying: try canonicalExample(), to: RegistrySnapshot(revision: 0))
        #expect(changes.count == 9)
        #expect(changes.allSatisfy { $0.action == .create && $0.toVersion == 1 && $0.fromVersion == nil })
    }

    @Test("against its own state nothing changes")
    func noChanges() throws {
        let definitions = try canonicalExample()
        let changes = try PlanBuilder.changes(applying: definitions, to: snapshotAfterApplying(definitions))
        #expect(changes.allSatisfy { $0.action == .unchanged && $0.fieldChanges.isEmpty && $0.impact.isEmpty })
    }

    @Test("a schedule change is an in-place update with an operational field diff")
    func operationalUpdate() throws {
        let before = try canonicalExample()
        let after = try canonicalExample { $0["features.yaml"] = $0["features.yaml"]!.replacingOccurrences(of: "ttl: 2d\nschedule: 1h", with: "ttl: 2d\nschedule: 30m") }
        let changes = try PlanBuilder.changes(applying: after, to: snapshotAfterApplying(before))
        let hourly = try #require(changes.first { $0.name == "driver_hourly_stats" })
        #expect(hourly.action == .update && hourly.toVersion == 1)
        #expect(hourly.fieldChanges == [FieldChange(path: "operational.schedule.every", before: .integer(3600), after: .integer(1800))])
        #expect(changes.filter { $0.action != .unchanged }.count == 1)
    }

    @Test("returning to earlier content reuses that version's number")
    func revertReusesVersion() throws {
        let original = try canonicalExample()
        let edited = try canonicalExample { $0["features.yaml"] = $0["features.yaml"]!.replacingOccurrences(of: "ttl: 2d", with: "ttl: 3d") }
        var snapshot = snapshotAfterApplying(edited)
        let key = ObjectKey(kind: .featureView, name: "driver_hourly_stats")
        let originalHash = try #require(original.first { $0.key == key }).contentHash
        snapshot.objects[key]?.currentVersion = 2
        snapshot.objects[key]?.latestVersion = 2
        let editedHash = try #require(snapshot.objects[key]).contentHash
        snapshot.objects[key]?.versionsByHash = [originalHash: 1, editedHash: 2]
        let changes = try PlanBuilder.changes(applying: original, to: snapshot)
        let change = try #require(changes.first { $0.kind == key.kind && $0.name == key.name })
        #expect(change.action == .newVersion && change.fromVersion == 2 && change.toVersion == 1)
    }

    @Test("objects missing from the repository are retired, with the consumers they reached")
    func retirement() throws {
        let before = try canonicalExample()
        let after = before.filter { $0.key.kind == .entity }
        let changes = try PlanBuilder.changes(applying: after, to: snapshotAfterApplying(before))
        let retired = changes.filter { $0.action == .retire }
        #expect(retired.count == 7)
        let source = try #require(retired.first { $0.name == "trips" })
        #expect(source.impact.map(\.name) == ["driver_ranking", "trip_quote"])
    }

    @Test("a pin to a version that does not exist is refused")
    func unknownPin() throws {
        let definitions = try canonicalExample {
            $0["services.yaml"] = $0["services.yaml"]!.replacingOccurrences(
                of: "  - trip_quote\n", with: "  - view: trip_quote\n    version: 4\n")
        }
        #expect(throws: PlanningError.self) { try PlanBuilder.changes(applying: definitions, to: snapshotAfterApplying(definitions)) }
    }

    @Test("field diffs walk objects and arrays and name each leaf")
    func jsonDiff() {
        let before: JSONValue = .object(["a": .integer(1), "list": .array([.string("x"), .string("y")]), "gone": .bool(true)])
        let after: JSONValue = .object(["a": .integer(2), "list": .array([.string("x"), .string("z"), .string("w")]), "new": .null])
        #expect(JSONDiff.changes(from: before, to: after, at: "spec") == [
            FieldChange(path: "spec.a", before: .integer(1), after: .integer(2)),
            FieldChange(path: "spec.gone", before: .bool(true), after: nil),
            FieldChange(path: "spec.list[1]", before: .string("y"), after: .string("z")),
            FieldChange(path: "spec.list[2]", before: nil, after: .string("w")),
            FieldChange(path: "spec.new", before: nil, after: .null),
        ])
        #expect(JSONDiff.changes(from: before, to: before, at: "spec").isEmpty)
    }
}

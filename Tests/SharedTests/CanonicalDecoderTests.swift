import Foundation
import Shared
import Testing
import TestSupport

/// Canonical specs read back into definitions must canonicalize to the same
/// specs and hashes: what an agent resolves from its registry snapshot is
/// what was applied.
@Suite("Canonical specs read back")
struct CanonicalDecoderTests {
    static func roundTrip(_ repository: FeatureRepository) throws -> ([String: String], [String: String]) {
        let canonical = DefinitionCanonicalizer.canonicalize(repository)
        let definitions = canonical.map {
            JobSpec.Definition(kind: $0.key.kind.rawValue, name: $0.key.name, version: 1, contentHash: $0.contentHash, definition: $0.spec)
        }
        let decoded = try CanonicalDecoder.repository(workspace: repository.config.workspace, definitions: definitions)
        func specs(_ list: [CanonicalDefinition]) -> [String: String] {
            // Descriptions are not carried back: compare the semantic and operational parts.
            Dictionary(uniqueKeysWithValues: list.map { definition in
                guard case .object(let whole) = definition.spec else { return ("\(definition.key)", "") }
                return ("\(definition.key)", JSONValue.object(whole.filter { $0.key != "metadata" }).canonicalString)
            })
        }
        return (specs(canonical), specs(DefinitionCanonicalizer.canonicalize(decoded)))
    }

    @Test("the example repository: every object comes back with the same content hash and spec")
    func example() throws {
        let repository = RepositoryLoader.load(files: RepositoryScaffold.files.map { ($0.path, $0.contents) }).repository
        #expect(repository.objectCount >= 9)
        let (original, decoded) = try Self.roundTrip(repository)
        #expect(decoded == original)
        let hashes = DefinitionCanonicalizer.canonicalize(repository).map(\.contentHash).sorted()
        let definitions = DefinitionCanonicalizer.canonicalize(repository).map {
            JobSpec.Definition(kind: $0.key.kind.rawValue, name: $0.key.name, version: 1, contentHash: $0.contentHash, definition: $0.spec)
        }
        let back = try CanonicalDecoder.repository(workspace: "w", definitions: definitions)
        #expect(DefinitionCanonicalizer.canonicalize(back).map(\.contentHash).sorted() == hashes)
    }

    @Test("generated repositories (keys, sources, plain and aggregated views, ttls, services) round-trip", arguments: Array(1...60) as [UInt64])
    func generated(seed: UInt64) throws {
        var generator = SeededGenerator(seed: seed)
        let loaded = GeneratedRepository(using: &generator).load(shuffle: nil)
        try #require(loaded.isValid)
        let (original, decoded) = try Self.roundTrip(loaded.repository)
        #expect(decoded == original, "seed \(seed)")
    }
}

/// `EntityQuery`: the named SQL a dataset's entity rows may come from.
@Suite("Entity queries in the repository")
struct EntityQueryDefinitionTests {
    static func load(_ query: String) -> LoadedRepository {
        var files = RepositoryScaffold.files.map { ($0.path, $0.contents) }
        files.append(("queries.yaml", query))
        return RepositoryLoader.load(files: files)
    }

    @Test("read, checked against its entities, versioned by content, read back by agents with its columns in order")
    func entityQuery() throws {
        let loaded = Self.load("""
            kind: EntityQuery
            name: recent_trips
            description: trips of the last week, labelled
            connection: warehouse
            sql: SELECT driver_id, event_timestamp, label FROM trips WHERE event_timestamp > now() - interval '7 days'
            columns:
              event_timestamp: timestamp
              driver_id: int64
              label: int64
            entities: [driver]
            """)
        #expect(loaded.diagnostics.isEmpty, "\(loaded.diagnostics)")
        let query = try #require(loaded.repository.entityQueries.first)
        #expect(query.columns.map(\.name) == ["event_timestamp", "driver_id", "label"] && query.entities == ["driver"])
        let (original, decoded) = try CanonicalDecoderTests.roundTrip(loaded.repository)
        #expect(decoded == original)
        let canonical = try #require(DefinitionCanonicalizer.canonicalize(loaded.repository).first { $0.key.kind == .entityQuery })
        // Lineage: the query reads the entity; its SQL is part of its identity, its description is not.
        let edited = Self.load("""
            kind: EntityQuery
            name: recent_trips
            connection: warehouse
            sql: SELECT driver_id, event_timestamp, label FROM trips
            columns: {event_timestamp: timestamp, driver_id: int64, label: int64}
            entities: [driver]
            """)
        let changed = try #require(DefinitionCanonicalizer.canonicalize(edited.repository).first { $0.key.kind == .entityQuery })
        #expect(changed.contentHash != canonical.contentHash)
    }

    @Test("mistakes name the file, line and field: a join key missing or mistyped, no timestamp column, an unknown entity, no SQL, a name taken")
    func mistakes() {
        let cases: [(String, String, RepositoryDiagnostic.Code)] = [
            ("columns: {event_timestamp: timestamp}\nentities: [driver]", "columns", .typeMismatch),
            ("columns: {event_timestamp: timestamp, driver_id: string}\nentities: [driver]", "columns.driver_id", .typeMismatch),
            ("columns: {driver_id: int64}", "columns", .missingField),
            ("columns: {event_timestamp: timestamp}\nentities: [drivr]", "entities[0]", .unknownReference),
            ("columns: {event_timestamp: timestamp}\nsql: '  '", "sql", .invalidValue),
        ]
        for (fields, path, code) in cases {
            let sql = fields.contains("sql:") ? "" : "sql: SELECT 1\n"
            let loaded = Self.load("kind: EntityQuery\nname: q\nconnection: warehouse\n\(sql)\(fields)\n")
            #expect(loaded.diagnostics.contains { $0.fieldPath == path && $0.code == code && $0.location.file == "queries.yaml" && $0.location.line > 1 },
                    "\(fields): \(loaded.diagnostics)")
        }
        let twice = Self.load("kind: EntityQuery\nname: q\nconnection: w\nsql: SELECT 1\ncolumns: {t: timestamp}\n---\nkind: EntityQuery\nname: q\nconnection: w\nsql: SELECT 2\ncolumns: {t: timestamp}\n")
        #expect(twice.diagnostics.contains { $0.code == .duplicateName })
    }
}

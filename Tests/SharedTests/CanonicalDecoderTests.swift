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

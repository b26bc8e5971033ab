import Foundation
import Testing
import TestSupport
@testable import Shared

/// A YAML mapping written in a chosen key order, for generating repositories.
indirect enum YAMLTree {
    case scalar(String)
    case list([YAMLTree])
    case mapping([(String, YAMLTree)])

    /// Renders the tree, shuffling every mapping's keys with `generator` when given.
    func render(indent: Int = 0, shuffle generator: inout SeededGenerator?) -> String {
        let pad = String(repeating: " ", count: indent)
        switch self {
        case .scalar(let text): return text
        case .list(let items):
            return items.map { item -> String in
                let rendered = item.render(indent: indent + 2, shuffle: &generator)
                if case .mapping = item { return "\(pad)- " + rendered.dropFirst(indent + 2) }
                return "\(pad)- \(rendered)"
            }.joined(separator: "\n")
        case .mapping(var pairs):
            if var g = generator {
                pairs.shuffle(using: &g)
                generator = g
            }
            return pairs.map { key, value -> String in
                switch value {
                case .scalar(let text): return "\(pad)\(key): \(text)"
                case .list, .mapping: return "\(pad)\(key):\n" + value.render(indent: indent + 2, shuffle: &generator)
                }
            }.joined(separator: "\n")
        }
    }
}

/// The knobs of one generated repository: an entity, a source and a view.
struct GeneratedRepository {
    var joinKeys: [(String, ValueType)]
    var sourceIsQuery: Bool
    var table: String
    var columns: [(String, ValueType)]
    var aggregated: Bool
    var features: [(name: String, column: String, type: ValueType)]
    var aggregations: [(AggregationFunction, String, [String])]
    var ttl: String?
    var schedule: String?
    var online: Bool
    var description: String
    var owner: String
    var tags: [(String, String)]

    static let windowChoices = ["1h", "2h", "6h", "1d", "7d", "30d"]

    init(using generator: inout SeededGenerator) {
        let keyTypes: [ValueType] = [.int64, .int32, .string]
        joinKeys = (0..<Int.random(in: 1...2, using: &generator)).map { ("key_\($0)", keyTypes.randomElement(using: &generator)!) }
        sourceIsQuery = Bool.random(using: &generator)
        table = "public.events_\(Int.random(in: 0...99, using: &generator))"
        let valueTypes: [ValueType] = [.int64, .int32, .float64, .float32, .bool, .string, .timestamp]
        columns = (0..<Int.random(in: 1...5, using: &generator)).map { ("col_\($0)", valueTypes.randomElement(using: &generator)!) }
        aggregated = Bool.random(using: &generator)
        features = []
        aggregations = []
        for (name, type) in columns {
            if aggregated {
                let functions = AggregationFunction.allCases.filter { $0.outputType(for: type) != nil }
                let windows = Array(Self.windowChoices.shuffled(using: &generator).prefix(Int.random(in: 1...3, using: &generator)))
                aggregations.append((functions.randomElement(using: &generator)!, name, windows))
            } else if Bool.random(using: &generator) || features.isEmpty {
                let renamed = Bool.random(using: &generator) ? "f_\(name)" : name
                features.append((renamed, name, type))
            }
        }
        ttl = Bool.random(using: &generator) ? ["1h", "1d", "2d", "30d"].randomElement(using: &generator) : nil
        schedule = Bool.random(using: &generator) ? ["1h", "30m", "1d"].randomElement(using: &generator) : nil
        online = Bool.random(using: &generator)
        description = "generated \(Int.random(in: 0...9999, using: &generator))"
        owner = "team-\(Int.random(in: 0...9, using: &generator))@example.com"
        tags = [("tier", "\(Int.random(in: 1...3, using: &generator))")]
    }

    func documents() -> [YAMLTree] {
        let metadata: [(String, YAMLTree)] = [
            ("description", .scalar("\"\(description)\"")), ("owner", .scalar(owner)),
            ("tags", .mapping(tags.map { ($0.0, .scalar("\"\($0.1)\"")) })),
        ]
        let entity = YAMLTree.mapping([
            ("kind", .scalar("Entity")), ("name", .scalar("thing")),
            ("join_keys", .mapping(joinKeys.map { ($0.0, .scalar($0.1.rawValue)) })),
        ] + metadata)
        let relation: (String, YAMLTree) = sourceIsQuery ? ("query", .scalar("\"SELECT * FROM \(table)\"")) : ("table", .scalar(table))
        let source = YAMLTree.mapping([
            ("kind", .scalar("PostgresSource")), ("name", .scalar("events")), ("connection", .scalar("db")), relation,
            ("timestamp_field", .scalar("ts")),
            ("columns", .mapping((joinKeys + columns).map { ($0.0, .scalar($0.1.rawValue)) })),
        ] + metadata)
        var view: [(String, YAMLTree)] = [
            ("kind", .scalar("FeatureView")), ("name", .scalar("thing_features")),
            ("entities", .list([.scalar("thing")])), ("source", .scalar("events")), ("online", .scalar("\(online)")),
        ]
        if aggregated {
            view.append(("slide", .scalar("1h")))
            view.append(("aggregations", .list(aggregations.map { function, column, windows in
                .mapping([
                    ("function", .scalar(function.rawValue)), ("column", .scalar(column)),
                    ("windows", .list(windows.map(YAMLTree.scalar))),
                ])
            })))
        } else {
            view.append(("features", .list(features.map { feature in
                var pairs: [(String, YAMLTree)] = [("name", .scalar(feature.name)), ("type", .scalar(feature.type.rawValue))]
                if feature.column != feature.name { pairs.append(("column", .scalar(feature.column))) }
                return .mapping(pairs)
            })))
        }
        if let ttl { view.append(("ttl", .scalar(ttl))) }
        if let schedule { view.append(("schedule", .scalar(schedule))) }
        let service = YAMLTree.mapping([
            ("kind", .scalar("FeatureService")), ("name", .scalar("model")), ("features", .list([.scalar("thing_features")])),
        ] + metadata)
        return [entity, source, .mapping(view + metadata), service]
    }

    func load(shuffle seed: UInt64?) -> LoadedRepository {
        var generator = seed.map(SeededGenerator.init(seed:))
        let text = documents().map { $0.render(shuffle: &generator) }.joined(separator: "\n---\n") + "\n"
        return RepositoryLoader.load(files: [("larder.yaml", "workspace: generated\n"), ("repo.yaml", text)])
    }

    /// Loads the repository and returns each object's canonical definition by name.
    func canonical(shuffle seed: UInt64? = nil) throws -> [String: CanonicalDefinition] {
        let loaded = load(shuffle: seed)
        try #require(loaded.isValid, "generated repository is invalid: \(loaded.diagnostics.map(\.description))")
        return Dictionary(uniqueKeysWithValues: DefinitionCanonicalizer.canonicalize(loaded.repository).map { ($0.key.name, $0) })
    }
}

@Suite("Version identity (property-style over generated repositories)")
struct VersionHashPropertyTests {
    static let seeds: [UInt64] = Array(1...150)

    @Test("hashes do not change when YAML keys are reordered", arguments: seeds)
    func stableUnderKeyOrder(seed: UInt64) throws {
        var generator = SeededGenerator(seed: seed)
        let repository = GeneratedRepository(using: &generator)
        let plain = try repository.canonical()
        let shuffled = try repository.canonical(shuffle: seed &* 31)
        #expect(plain.mapValues(\.contentHash) == shuffled.mapValues(\.contentHash))
        #expect(plain.mapValues(\.spec) == shuffled.mapValues(\.spec))
    }

    @Test("metadata and operational edits keep every hash", arguments: seeds)
    func stableUnderMetadataEdits(seed: UInt64) throws {
        var generator = SeededGenerator(seed: seed)
        let original = GeneratedRepository(using: &generator)
        var edited = original
        edited.description += " (edited)"
        edited.owner = "someone-else@example.com"
        edited.tags.append(("extra", "yes"))
        edited.online.toggle()
        edited.schedule = edited.schedule == "1d" ? "1h" : "1d"
        let before = try original.canonical()
        let after = try edited.canonical()
        #expect(before.mapValues(\.contentHash) == after.mapValues(\.contentHash))
        #expect(before["thing_features"]?.descriptive != after["thing_features"]?.descriptive)
        #expect(before["thing_features"]?.operational != after["thing_features"]?.operational)
    }

    /// A semantic edit, the objects whose hash it must change, and the ones it must not.
    struct SemanticEdit: Sendable {
        let name: String
        let changed: Set<String>
        let apply: @Sendable (inout GeneratedRepository) -> Void
    }

    static let edits: [SemanticEdit] = [
        SemanticEdit(name: "source table or query", changed: ["events", "thing_features", "model"]) {
            $0.table += "_v2"
        },
        SemanticEdit(name: "table becomes query", changed: ["events", "thing_features", "model"]) {
            $0.sourceIsQuery.toggle()
        },
        SemanticEdit(name: "join key type", changed: ["thing", "events", "thing_features", "model"]) {
            $0.joinKeys[0].1 = $0.joinKeys[0].1 == .string ? .int64 : .string
        },
        SemanticEdit(name: "ttl", changed: ["thing_features", "model"]) {
            $0.ttl = $0.ttl == "2d" ? "3d" : "2d"
        },
        SemanticEdit(name: "window or feature", changed: ["thing_features", "model"]) {
            if $0.aggregated {
                $0.aggregations[0].2 = $0.aggregations[0].2 == ["2d"] ? ["3d"] : ["2d"]
            } else {
                $0.features[0].name += "_renamed"
            }
        },
        SemanticEdit(name: "column type", changed: ["events", "thing_features", "model"]) {
            let type: ValueType = $0.columns[0].1 == .float64 ? .int64 : .float64
            $0.columns[0].1 = type
            if $0.aggregated {
                $0.aggregations[0].0 = .count
            } else if let index = $0.features.firstIndex(where: { $0.column == "col_0" }) {
                $0.features[index].type = type
            }
        },
    ]

    @Test("semantic edits change the edited object's hash and its downstream, nothing else", arguments: seeds.prefix(60))
    func changedBySemanticEdits(seed: UInt64) throws {
        var generator = SeededGenerator(seed: seed)
        let original = GeneratedRepository(using: &generator)
        let before = try original.canonical()
        for edit in Self.edits {
            var edited = original
            edit.apply(&edited)
            let after = try edited.canonical()
            for (name, definition) in before {
                let changed = definition.contentHash != after[name]?.contentHash
                #expect(changed == edit.changed.contains(name), "edit '\(edit.name)' on \(name), seed \(seed)")
            }
        }
    }

    @Test("the content hash is SHA-256 hex and equal specs give equal hashes")
    func hashShape() throws {
        var generator = SeededGenerator(seed: 7)
        let definitions = try GeneratedRepository(using: &generator).canonical()
        for definition in definitions.values {
            #expect(definition.contentHash.count == 64)
            #expect(definition.contentHash.allSatisfy { $0.isHexDigit && !$0.isUppercase })
        }
        #expect(Set(definitions.values.map(\.contentHash)).count == definitions.count)
    }
}

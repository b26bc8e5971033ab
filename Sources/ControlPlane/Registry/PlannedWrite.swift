import Shared

/// What applying a plan writes for one object, rendered when the plan is made:
/// the plan stores these (and nothing for unchanged objects), so applying
/// it needs no re-reading or re-rendering of definitions.
public struct PlannedWrite: Sendable, Codable, Hashable {
    /// The object.
    public var key: ObjectKey
    /// Its content hash after the apply.
    public var contentHash: String
    /// The hash of its operational and descriptive parts.
    public var stateHash: String
    /// The full canonical spec, stored with a new version.
    public var spec: String
    /// The operational part, canonical JSON.
    public var operational: String
    /// The descriptive part, canonical JSON.
    public var metadata: String
    /// The description, for listings.
    public var description: String?
    /// The owner, for listings and search filters.
    public var owner: String?
    /// The tags, canonical JSON.
    public var tags: String
    /// The words catalog search matches.
    public var searchText: String
    /// What the object reads, for lineage.
    public var upstream: [UpstreamReference]

    /// Renders the write of `definition`.
    public init(_ definition: CanonicalDefinition) {
        let descriptive = Self.descriptiveFields(definition.descriptive)
        key = definition.key
        contentHash = definition.contentHash
        stateHash = definition.stateHash
        spec = definition.spec.canonicalString
        operational = definition.operational.canonicalString
        metadata = definition.descriptive.canonicalString
        description = descriptive.description
        owner = descriptive.owner
        tags = JSONValue.object(descriptive.tags.mapValues(JSONValue.string)).canonicalString
        searchText = Self.searchText(definition, descriptive: descriptive)
        upstream = definition.upstream
    }

    static func descriptiveFields(_ descriptive: JSONValue) -> DefinitionMetadata {
        guard case .object(let members) = descriptive else { return DefinitionMetadata() }
        var metadata = DefinitionMetadata()
        if case .string(let text)? = members["description"] { metadata.description = text }
        if case .string(let text)? = members["owner"] { metadata.owner = text }
        if case .object(let tags)? = members["tags"] {
            metadata.tags = tags.compactMapValues { if case .string(let text) = $0 { return text } else { return nil } }
        }
        return metadata
    }

    /// The words search matches: the name (also split at underscores), kind,
    /// description, owner, tags, and the names of features and outputs.
    static func searchText(_ definition: CanonicalDefinition, descriptive: DefinitionMetadata) -> String {
        var words = [definition.key.name, definition.key.name.replacingOccurrences(of: "_", with: " "), definition.key.kind.rawValue]
        words += [descriptive.description, descriptive.owner].compactMap { $0 }
        words += descriptive.tags.flatMap { [$0.key, $0.value] }
        if case .object(let spec) = definition.semantic {
            for key in ["features", "outputs", "aggregations"] {
                guard case .array(let items)? = spec[key] else { continue }
                for case .object(let item) in items {
                    if case .string(let name)? = item["name"] { words += [name, name.replacingOccurrences(of: "_", with: " ")] }
                }
            }
        }
        return words.joined(separator: " ")
    }
}

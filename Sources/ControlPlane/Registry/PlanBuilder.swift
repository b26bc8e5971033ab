import Shared

/// Why a valid repository still cannot be planned against the registry.
public struct PlanningError: Error, Sendable, Equatable {
    /// The object at fault.
    public var object: ObjectKey
    /// What is wrong.
    public var detail: String
}

/// Computes what applying a repository's canonical definitions would change.
///
/// Pure logic over a `RegistrySnapshot`: no database, so it is tested directly.
public enum PlanBuilder {
    /// The changes, in dependency order (retirements last), with field-level
    /// diffs and downstream impact.
    public static func changes(
        applying definitions: [CanonicalDefinition], to snapshot: RegistrySnapshot
    ) throws(PlanningError) -> [PlannedChange] {
        let defined = Dictionary(definitions.map { ($0.key, $0) }, uniquingKeysWith: { first, _ in first })
        try checkPinnedVersions(definitions, snapshot: snapshot)

        var changes: [PlannedChange] = definitions.map { definition in
            change(for: definition, state: snapshot.objects[definition.key])
        }
        for (key, state) in snapshot.objects.sorted(by: { $0.key < $1.key }) where state.currentVersion != nil && defined[key] == nil {
            changes.append(PlannedChange(
                kind: key.kind, name: key.name, action: .retire, fromVersion: state.currentVersion, toVersion: nil,
                contentHash: state.contentHash, fieldChanges: [], impact: []))
        }

        // A version change caused only upstream (the object's own spec is the
        // same) is explained by the upstream versions it now reads.
        let targetVersion = Dictionary(changes.map { (ObjectKey(kind: $0.kind, name: $0.name), $0) }, uniquingKeysWith: { a, _ in a })
        for index in changes.indices where changes[index].action == .newVersion {
            let key = ObjectKey(kind: changes[index].kind, name: changes[index].name)
            guard let definition = defined[key], definition.semantic == snapshot.objects[key]?.semantic else { continue }
            for reference in definition.upstream where reference.pinnedVersion == nil {
                guard let upstream = targetVersion[reference.key], [.newVersion, .create].contains(upstream.action) else { continue }
                changes[index].fieldChanges.append(FieldChange(
                    path: "upstream.\(reference.key.kind.rawValue).\(reference.key.name)",
                    before: upstream.fromVersion.map { .integer(Int64($0)) }, after: upstream.toVersion.map { .integer(Int64($0)) }))
            }
        }

        let downstream = downstreamGraph(definitions: definitions, snapshot: snapshot)
        // Impact is what existing consumers feel: only new versions and
        // retirements reach them (a created object has no consumers yet).
        for index in changes.indices where [.newVersion, .retire].contains(changes[index].action) {
            changes[index].impact = reachedConsumers(from: ObjectKey(kind: changes[index].kind, name: changes[index].name), in: downstream)
        }
        return changes
    }

    static func change(for definition: CanonicalDefinition, state: RegistrySnapshot.ObjectState?) -> PlannedChange {
        let key = definition.key
        guard let state else {
            return PlannedChange(
                kind: key.kind, name: key.name, action: .create, fromVersion: nil, toVersion: 1,
                contentHash: definition.contentHash, fieldChanges: [], impact: [])
        }
        let nextVersion = state.versionsByHash[definition.contentHash] ?? state.latestVersion + 1
        let contentChanged = state.contentHash != definition.contentHash
        let stateChanged = state.stateHash != definition.stateHash
        // Decode what is stored only where a hash says something differs.
        var fieldChanges: [FieldChange] = []
        if contentChanged { fieldChanges += JSONDiff.changes(from: state.semantic, to: definition.semantic, at: "spec") }
        if stateChanged {
            fieldChanges += JSONDiff.changes(from: state.operational, to: definition.operational, at: "operational")
                + JSONDiff.changes(from: state.descriptive, to: definition.descriptive, at: "metadata")
        }
        let action: PlanAction
        if state.currentVersion == nil {
            action = .create
        } else if contentChanged {
            action = .newVersion
        } else {
            action = fieldChanges.isEmpty ? .unchanged : .update
        }
        return PlannedChange(
            kind: key.kind, name: key.name, action: action, fromVersion: state.currentVersion,
            toVersion: state.contentHash == definition.contentHash && state.currentVersion != nil ? state.currentVersion : nextVersion,
            contentHash: definition.contentHash, fieldChanges: fieldChanges, impact: [])
    }

    static func checkPinnedVersions(_ definitions: [CanonicalDefinition], snapshot: RegistrySnapshot) throws(PlanningError) {
        for definition in definitions {
            for reference in definition.upstream {
                guard let pinned = reference.pinnedVersion else { continue }
                let known = snapshot.objects[reference.key]?.versionsByHash.values.contains(pinned) ?? false
                if !known {
                    throw PlanningError(
                        object: definition.key,
                        detail: "\(definition.key) pins \(reference.key) to version \(pinned), which does not exist")
                }
            }
        }
    }

    /// For each object, the objects that read it, in the repository being
    /// planned and in the registry's current lineage (for objects it retires).
    static func downstreamGraph(definitions: [CanonicalDefinition], snapshot: RegistrySnapshot) -> [ObjectKey: Set<ObjectKey>] {
        var graph: [ObjectKey: Set<ObjectKey>] = [:]
        for definition in definitions {
            for reference in definition.upstream { graph[reference.key, default: []].insert(definition.key) }
        }
        for (downstream, upstreams) in snapshot.currentUpstream {
            for upstream in upstreams { graph[upstream, default: []].insert(downstream) }
        }
        return graph
    }

    /// The on-demand views and feature services reachable downstream of `start`.
    static func reachedConsumers(from start: ObjectKey, in graph: [ObjectKey: Set<ObjectKey>]) -> [ObjectKey] {
        var seen: Set<ObjectKey> = [start]
        var queue = [start]
        while let next = queue.popLast() {
            for reader in graph[next] ?? [] where seen.insert(reader).inserted { queue.append(reader) }
        }
        seen.remove(start)
        return seen.filter { $0.kind == .onDemandFeatureView || $0.kind == .featureService }.sorted()
    }
}

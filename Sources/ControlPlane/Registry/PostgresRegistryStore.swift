import Foundation
import Logging
import PostgresNIO
import Shared

/// The registry in PostgreSQL (schema in `Database/Migrations`).
///
/// Every multi-row change runs in one transaction; applies lock the
/// workspace row, so concurrent applies of plans from the same base revision
/// serialize and all but the first fail with `planConflict`.
public struct PostgresRegistryStore: RegistryStore {
    let client: PostgresClient
    let logger: Logger

    /// Creates a store over a running client pool.
    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    static let encoder = APICoding.makeEncoder()
    static let decoder = APICoding.makeDecoder()

    static func json<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try decoder.decode(type, from: Data(text.utf8))
    }

    // MARK: Workspaces

    public func createWorkspace(_ request: CreateWorkspaceRequest, by principal: String) async throws -> WorkspaceResource {
        guard Identifier.isValidWorkspace(request.name) else {
            throw RegistryError.invalidArgument(
                field: "name", detail: "'\(request.name)' is not a valid workspace name: lowercase letters, digits, '_' and '-', starting with a letter")
        }
        let rows = try await client.query(
            """
            INSERT INTO workspaces (name, description, created_by) VALUES (\(request.name), \(request.description), \(principal))
            ON CONFLICT (name) DO NOTHING
            RETURNING revision, created_at
            """, logger: logger)
        for try await (revision, createdAt) in rows.decode((Int64, Date).self) {
            return WorkspaceResource(
                name: request.name, description: request.description, revision: revision, objectCount: 0, createdAt: createdAt,
                createdBy: principal)
        }
        throw RegistryError.workspaceExists(request.name)
    }

    static let workspaceColumns = """
        w.name, w.description, w.revision, w.created_at, w.created_by,
        (SELECT count(*)::int FROM registry_objects o WHERE o.workspace_id = w.id AND o.current_version IS NOT NULL)
        """

    public func listWorkspaces(after cursor: String?, limit: Int, visibleTo: Set<String>?) async throws -> Page<WorkspaceResource> {
        let after = try cursor.map { try PageCursor.decode($0, parts: 1)[0] } ?? ""
        let visible = visibleTo.map { Array($0) } ?? []
        let rows = try await client.query(
            """
            SELECT \(unescaped: Self.workspaceColumns) FROM workspaces w
            WHERE w.name > \(after) AND (\(visibleTo == nil) OR w.name = ANY(\(visible)))
            ORDER BY w.name LIMIT \(limit + 1)
            """, logger: logger)
        var items: [WorkspaceResource] = []
        for try await row in rows.decode((String, String?, Int64, Date, String, Int).self) {
            items.append(WorkspaceResource(name: row.0, description: row.1, revision: row.2, objectCount: row.5, createdAt: row.3, createdBy: row.4))
        }
        return Self.page(items, limit: limit) { [$0.name] }
    }

    public func workspace(named name: String) async throws -> WorkspaceResource {
        let rows = try await client.query(
            "SELECT \(unescaped: Self.workspaceColumns) FROM workspaces w WHERE w.name = \(name)", logger: logger)
        for try await row in rows.decode((String, String?, Int64, Date, String, Int).self) {
            return WorkspaceResource(name: row.0, description: row.1, revision: row.2, objectCount: row.5, createdAt: row.3, createdBy: row.4)
        }
        throw RegistryError.workspaceNotFound(name)
    }

    public func deleteWorkspace(named name: String) async throws {
        try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                let workspaceID = try await Self.lockWorkspace(name, connection: connection, logger: logger).id
                let counts = try await connection.query(
                    "SELECT count(*)::int FROM registry_objects WHERE workspace_id = \(workspaceID) AND current_version IS NOT NULL",
                    logger: logger)
                for try await count in counts.decode(Int.self) where count > 0 {
                    throw RegistryError.workspaceNotEmpty(name, objects: count)
                }
                try await connection.query("DELETE FROM workspaces WHERE id = \(workspaceID)", logger: logger)
            }
        }
    }

    /// Locks a workspace row for the rest of the transaction.
    static func lockWorkspace(
        _ name: String, connection: PostgresConnection, logger: Logger
    ) async throws -> (id: Int64, revision: Int64) {
        let rows = try await connection.query("SELECT id, revision FROM workspaces WHERE name = \(name) FOR UPDATE", logger: logger)
        for try await (id, revision) in rows.decode((Int64, Int64).self) { return (id, revision) }
        throw RegistryError.workspaceNotFound(name)
    }

    static func workspaceID(_ name: String, connection: PostgresConnection, logger: Logger) async throws -> (id: Int64, revision: Int64) {
        let rows = try await connection.query("SELECT id, revision FROM workspaces WHERE name = \(name)", logger: logger)
        for try await (id, revision) in rows.decode((Int64, Int64).self) { return (id, revision) }
        throw RegistryError.workspaceNotFound(name)
    }

    // MARK: Planning

    public func snapshot(of workspace: String) async throws -> RegistrySnapshot {
        try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger, begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { connection in
            let (workspaceID, revision) = try await Self.workspaceID(workspace, connection: connection, logger: logger)
            var snapshot = RegistrySnapshot(revision: revision)
            let objects = try await connection.query(
                """
                SELECT o.kind, o.name, o.current_version, o.latest_version, o.operational::text, o.metadata::text,
                       v.content_hash, (v.spec -> 'spec')::text, o.state_hash
                FROM registry_objects o
                JOIN object_versions v ON v.object_id = o.id AND v.version = COALESCE(o.current_version, o.latest_version)
                WHERE o.workspace_id = \(workspaceID)
                """, logger: logger)
            for try await row in objects.decode((String, String, Int?, Int, String, String, String, String, String).self) {
                guard let kind = ObjectKind(rawValue: row.0) else { continue }
                snapshot.objects[ObjectKey(kind: kind, name: row.1)] = RegistrySnapshot.ObjectState(
                    currentVersion: row.2, latestVersion: row.3, contentHash: row.6, stateHash: row.8, semanticJSON: row.7,
                    operationalJSON: row.4, descriptiveJSON: row.5, versionsByHash: [:])
            }
            let versions = try await connection.query(
                """
                SELECT o.kind, o.name, v.version, v.content_hash
                FROM object_versions v JOIN registry_objects o ON o.id = v.object_id
                WHERE o.workspace_id = \(workspaceID)
                """, logger: logger)
            for try await (kind, name, version, hash) in versions.decode((String, String, Int, String).self) {
                guard let kind = ObjectKind(rawValue: kind) else { continue }
                snapshot.objects[ObjectKey(kind: kind, name: name)]?.versionsByHash[hash] = version
            }
            let edges = try await connection.query(
                """
                SELECT d.kind, d.name, u.kind, u.name
                FROM lineage_edges e
                JOIN object_versions dv ON dv.id = e.downstream_id
                JOIN registry_objects d ON d.id = dv.object_id AND d.current_version = dv.version
                JOIN object_versions uv ON uv.id = e.upstream_id
                JOIN registry_objects u ON u.id = uv.object_id
                WHERE d.workspace_id = \(workspaceID)
                """, logger: logger)
            for try await (downKind, downName, upKind, upName) in edges.decode((String, String, String, String).self) {
                guard let downKind = ObjectKind(rawValue: downKind), let upKind = ObjectKind(rawValue: upKind) else { continue }
                snapshot.currentUpstream[ObjectKey(kind: downKind, name: downName), default: []].append(ObjectKey(kind: upKind, name: upName))
            }
            return snapshot
            }
        }
    }

    public func savePlan(_ plan: PlanResource, writes: [PlannedWrite]) async throws {
        let writesJSON = try Self.json(writes)
        let changesJSON = try Self.json(plan.changes)
        try await client.withConnection { connection in
            let (workspaceID, _) = try await Self.workspaceID(plan.workspace, connection: connection, logger: logger)
            try await connection.query(
                """
                INSERT INTO plans (id, workspace_id, base_revision, writes, changes, created_at, created_by)
                VALUES (\(plan.id), \(workspaceID), \(plan.baseRevision), \(writesJSON)::jsonb, \(changesJSON)::jsonb,
                        \(plan.createdAt), \(plan.createdBy))
                """, logger: logger)
        }
    }

    public func plan(_ id: UUID, in workspace: String) async throws -> PlanResource {
        let rows = try await client.query(
            """
            SELECT p.base_revision, p.changes::text, p.created_at, p.created_by, p.applied_at
            FROM plans p JOIN workspaces w ON w.id = p.workspace_id
            WHERE p.id = \(id) AND w.name = \(workspace)
            """, logger: logger)
        for try await (base, changes, createdAt, createdBy, appliedAt) in rows.decode((Int64, String, Date, String, Date?).self) {
            return PlanResource(
                id: id, workspace: workspace, baseRevision: base, changes: try Self.decode([PlannedChange].self, changes),
                createdAt: createdAt, createdBy: createdBy, appliedAt: appliedAt)
        }
        throw RegistryError.planNotFound(id)
    }

    // MARK: Applying

    public func apply(plan id: UUID, in workspace: String, by principal: String) async throws -> ApplyResource {
        try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                try await applyLocked(plan: id, workspace: workspace, principal: principal, connection: connection)
            }
        }
    }

    private func applyLocked(plan id: UUID, workspace: String, principal: String, connection: PostgresConnection) async throws -> ApplyResource {
        let (workspaceID, revision) = try await Self.lockWorkspace(workspace, connection: connection, logger: logger)
        let rows = try await connection.query(
            """
            SELECT base_revision, writes::text, changes::text, applied_at FROM plans
            WHERE id = \(id) AND workspace_id = \(workspaceID) FOR UPDATE
            """, logger: logger)
        var stored: (base: Int64, writes: String, changes: String, appliedAt: Date?)?
        for try await row in rows.decode((Int64, String, String, Date?).self) { stored = row }
        guard let stored else { throw RegistryError.planNotFound(id) }
        if stored.appliedAt != nil { throw RegistryError.planAlreadyApplied(id) }
        if stored.base != revision { throw RegistryError.planConflict(planRevision: stored.base, currentRevision: revision) }

        let changes = try Self.decode([PlannedChange].self, stored.changes)
        let writes = Dictionary(
            try Self.decode([PlannedWrite].self, stored.writes).map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        let effective = changes.filter { $0.action != .unchanged }
        let newRevision = effective.isEmpty ? revision : revision + 1
        let changesJSON = try Self.json(effective)
        var applyID: Int64 = 0
        var appliedAt = Date()
        let inserted = try await connection.query(
            """
            INSERT INTO applies (workspace_id, plan_id, revision, changed, changes, applied_by)
            VALUES (\(workspaceID), \(id), \(newRevision), \(!effective.isEmpty), \(changesJSON)::jsonb, \(principal))
            RETURNING id, applied_at
            """, logger: logger)
        for try await (applyRow, at) in inserted.decode((Int64, Date).self) { (applyID, appliedAt) = (applyRow, at) }

        if !effective.isEmpty {
            try await writeObjects(effective, writes: writes, workspaceID: workspaceID, applyID: applyID,
                                   principal: principal, connection: connection)
            try await writeLineage(changes, writes: writes, workspaceID: workspaceID, connection: connection)
            let retired = effective.filter { $0.action == .retire }
            if !retired.isEmpty {
                try await connection.query(
                    """
                    UPDATE registry_objects SET current_version = NULL, retired_at = now(), updated_at = now()
                    WHERE workspace_id = \(workspaceID)
                      AND (kind, name) IN (SELECT * FROM unnest(\(retired.map(\.kind.rawValue))::text[], \(retired.map(\.name))::text[]))
                    """, logger: logger)
            }
            try await connection.query("UPDATE workspaces SET revision = \(newRevision) WHERE id = \(workspaceID)", logger: logger)
        }
        try await connection.query("UPDATE plans SET applied_at = \(appliedAt) WHERE id = \(id)", logger: logger)
        return ApplyResource(
            id: applyID, planId: id, workspace: workspace, revision: newRevision, changed: !effective.isEmpty, changes: effective,
            appliedBy: principal, appliedAt: appliedAt)
    }

    /// Upserts the objects of creates, new versions and updates, and inserts
    /// their new versions, each kind of row in one statement.
    private func writeObjects(
        _ changes: [PlannedChange], writes: [ObjectKey: PlannedWrite], workspaceID: Int64, applyID: Int64,
        principal: String, connection: PostgresConnection
    ) async throws {
        var upserts: (kinds: [String], names: [String], versions: [Int], operational: [String], metadata: [String],
                      descriptions: [String], owners: [String], tags: [String], search: [String], stateHashes: [String])
            = ([], [], [], [], [], [], [], [], [], [])
        var versions: (kinds: [String], names: [String], numbers: [Int], hashes: [String], specs: [String]) = ([], [], [], [], [])
        for change in changes where change.action != .retire {
            guard let write = writes[ObjectKey(kind: change.kind, name: change.name)], let version = change.toVersion else { continue }
            upserts.kinds.append(change.kind.rawValue)
            upserts.names.append(change.name)
            upserts.versions.append(version)
            upserts.operational.append(write.operational)
            upserts.metadata.append(write.metadata)
            upserts.descriptions.append(write.description ?? "")
            upserts.owners.append(write.owner ?? "")
            upserts.tags.append(write.tags)
            upserts.search.append(write.searchText)
            upserts.stateHashes.append(write.stateHash)
            if change.action == .create || change.action == .newVersion {
                versions.kinds.append(change.kind.rawValue)
                versions.names.append(change.name)
                versions.numbers.append(version)
                versions.hashes.append(write.contentHash)
                versions.specs.append(write.spec)
            }
        }
        guard !upserts.kinds.isEmpty else { return }
        try await connection.query(
            """
            INSERT INTO registry_objects (workspace_id, kind, name, current_version, latest_version, operational, metadata,
                                          description, owner, tags, search_document, state_hash)
            SELECT \(workspaceID), x.k, x.n, x.v, x.v, x.op::jsonb, x.md::jsonb, NULLIF(x.d, ''), NULLIF(x.o, ''), x.t::jsonb,
                   to_tsvector('simple', x.s), x.sh
            FROM unnest(\(upserts.kinds)::text[], \(upserts.names)::text[], \(upserts.versions)::int[], \(upserts.operational)::text[],
                        \(upserts.metadata)::text[], \(upserts.descriptions)::text[], \(upserts.owners)::text[], \(upserts.tags)::text[],
                        \(upserts.search)::text[], \(upserts.stateHashes)::text[]) AS x(k, n, v, op, md, d, o, t, s, sh)
            ON CONFLICT (workspace_id, kind, name) DO UPDATE SET
                current_version = EXCLUDED.current_version,
                latest_version = GREATEST(registry_objects.latest_version, EXCLUDED.latest_version),
                operational = EXCLUDED.operational, metadata = EXCLUDED.metadata, description = EXCLUDED.description,
                owner = EXCLUDED.owner, tags = EXCLUDED.tags, search_document = EXCLUDED.search_document,
                state_hash = EXCLUDED.state_hash, retired_at = NULL, updated_at = now()
            """, logger: logger)
        guard !versions.kinds.isEmpty else { return }
        try await connection.query(
            """
            INSERT INTO object_versions (object_id, version, content_hash, spec, apply_id, created_by)
            SELECT o.id, x.v, x.h, x.s::jsonb, \(applyID), \(principal)
            FROM unnest(\(versions.kinds)::text[], \(versions.names)::text[], \(versions.numbers)::int[], \(versions.hashes)::text[],
                        \(versions.specs)::text[]) AS x(k, n, v, h, s)
            JOIN registry_objects o ON o.workspace_id = \(workspaceID) AND o.kind = x.k AND o.name = x.n
            ON CONFLICT DO NOTHING
            """, logger: logger)
    }

    /// Records, for each version created, the versions of what it reads.
    private func writeLineage(
        _ changes: [PlannedChange], writes: [ObjectKey: PlannedWrite], workspaceID: Int64, connection: PostgresConnection
    ) async throws {
        let versionAfter = Dictionary(
            changes.compactMap { change in change.toVersion.map { (ObjectKey(kind: change.kind, name: change.name), $0) } },
            uniquingKeysWith: { a, _ in a })
        var edges: (dk: [String], dn: [String], dv: [Int], uk: [String], un: [String], uv: [Int]) = ([], [], [], [], [], [])
        for change in changes where change.action == .create || change.action == .newVersion {
            let key = ObjectKey(kind: change.kind, name: change.name)
            guard let write = writes[key], let version = change.toVersion else { continue }
            for reference in write.upstream {
                guard let upstreamVersion = reference.pinnedVersion ?? versionAfter[reference.key] else { continue }
                edges.dk.append(key.kind.rawValue)
                edges.dn.append(key.name)
                edges.dv.append(version)
                edges.uk.append(reference.key.kind.rawValue)
                edges.un.append(reference.key.name)
                edges.uv.append(upstreamVersion)
            }
        }
        guard !edges.dk.isEmpty else { return }
        try await connection.query(
            """
            INSERT INTO lineage_edges (downstream_id, upstream_id)
            SELECT dv.id, uv.id
            FROM unnest(\(edges.dk)::text[], \(edges.dn)::text[], \(edges.dv)::int[], \(edges.uk)::text[], \(edges.un)::text[],
                        \(edges.uv)::int[]) AS e(dk, dn, dv, uk, un, uv)
            JOIN registry_objects d ON d.workspace_id = \(workspaceID) AND d.kind = e.dk AND d.name = e.dn
            JOIN object_versions dv ON dv.object_id = d.id AND dv.version = e.dv
            JOIN registry_objects u ON u.workspace_id = \(workspaceID) AND u.kind = e.uk AND u.name = e.un
            JOIN object_versions uv ON uv.object_id = u.id AND uv.version = e.uv
            ON CONFLICT DO NOTHING
            """, logger: logger)
    }

    public func applies(in workspace: String, after cursor: String?, limit: Int) async throws -> Page<ApplyResource> {
        let before = try cursor.map { cursor throws(RegistryError) -> Int64 in
            guard let id = Int64(try PageCursor.decode(cursor, parts: 1)[0]) else {
                throw .invalidArgument(field: "cursor", detail: "the cursor is not one this server issued")
            }
            return id
        } ?? Int64.max
        let rows = try await client.query(
            """
            SELECT a.id, a.plan_id, a.revision, a.changed, a.changes::text, a.applied_by, a.applied_at
            FROM applies a JOIN workspaces w ON w.id = a.workspace_id
            WHERE w.name = \(workspace) AND a.id < \(before)
            ORDER BY a.id DESC LIMIT \(limit + 1)
            """, logger: logger)
        var items: [ApplyResource] = []
        for try await row in rows.decode((Int64, UUID, Int64, Bool, String, String, Date).self) {
            items.append(ApplyResource(
                id: row.0, planId: row.1, workspace: workspace, revision: row.2, changed: row.3,
                changes: try Self.decode([PlannedChange].self, row.4), appliedBy: row.5, appliedAt: row.6))
        }
        if items.isEmpty { _ = try await self.workspace(named: workspace) }
        return Self.page(items, limit: limit) { ["\($0.id)"] }
    }

    // MARK: Reading objects

    /// The columns of `ObjectRow`, from an object joined with its workspace
    /// and its current version (its latest, when retired).
    static let selectObjects = """
        SELECT o.kind, o.name, o.current_version, o.latest_version, v.content_hash, o.description, o.owner, o.tags::text,
               (v.spec -> 'spec')::text, o.operational::text, o.metadata::text, o.retired_at, o.created_at, o.updated_at
        FROM registry_objects o
        JOIN workspaces w ON w.id = o.workspace_id
        JOIN object_versions v ON v.object_id = o.id AND v.version = COALESCE(o.current_version, o.latest_version)
        """
    typealias ObjectRow = (String, String, Int?, Int, String, String?, String?, String, String, String, String, Date?, Date, Date)

    static func objectResource(_ row: ObjectRow) throws -> ObjectResource {
        let tags = try decode([String: String].self, row.7)
        let spec = JSONValue.object([
            "kind": .string(row.0), "name": .string(row.1), "spec": try decode(JSONValue.self, row.8),
            "operational": try decode(JSONValue.self, row.9), "metadata": try decode(JSONValue.self, row.10),
        ])
        return ObjectResource(
            kind: ObjectKind(rawValue: row.0) ?? .entity, name: row.1, currentVersion: row.2, latestVersion: row.3, contentHash: row.4,
            description: row.5, owner: row.6, tags: tags, spec: spec, retiredAt: row.11, createdAt: row.12, updatedAt: row.13)
    }

    public func objects(
        in workspace: String, collection: ObjectCollection, includeRetired: Bool, after cursor: String?, limit: Int
    ) async throws -> Page<ObjectResource> {
        let after = try cursor.map { try PageCursor.decode($0, parts: 2) } ?? ["", ""]
        let kinds = collection.kinds.map(\.rawValue)
        let rows = try await client.query(
            """
            \(unescaped: Self.selectObjects)
            WHERE w.name = \(workspace) AND o.kind = ANY(\(kinds)) AND (\(includeRetired) OR o.current_version IS NOT NULL)
              AND (o.name, o.kind) > (\(after[1]), \(after[0]))
            ORDER BY o.name, o.kind LIMIT \(limit + 1)
            """, logger: logger)
        var items: [ObjectResource] = []
        for try await row in rows.decode(ObjectRow.self) { items.append(try Self.objectResource(row)) }
        if items.isEmpty { _ = try await self.workspace(named: workspace) }
        return Self.page(items, limit: limit) { [$0.kind.rawValue, $0.name] }
    }

    public func object(in workspace: String, collection: ObjectCollection, name: String) async throws -> ObjectResource {
        let kinds = collection.kinds.map(\.rawValue)
        let rows = try await client.query(
            """
            \(unescaped: Self.selectObjects)
            WHERE w.name = \(workspace) AND o.kind = ANY(\(kinds)) AND o.name = \(name)
            ORDER BY o.current_version IS NULL, o.updated_at DESC LIMIT 1
            """, logger: logger)
        for try await row in rows.decode(ObjectRow.self) { return try Self.objectResource(row) }
        _ = try await self.workspace(named: workspace)
        throw RegistryError.objectNotFound(collection, name)
    }

    public func versions(in workspace: String, collection: ObjectCollection, name: String) async throws -> [VersionResource] {
        try await loadVersions(workspace: workspace, collection: collection, name: name, number: nil)
    }

    public func version(_ number: Int, in workspace: String, collection: ObjectCollection, name: String) async throws -> VersionResource {
        let found = try await loadVersions(workspace: workspace, collection: collection, name: name, number: number)
        guard let version = found.first else {
            let object = try await self.object(in: workspace, collection: collection, name: name)
            throw RegistryError.versionNotFound(ObjectKey(kind: object.kind, name: name), number)
        }
        return version
    }

    private func loadVersions(workspace: String, collection: ObjectCollection, name: String, number: Int?) async throws -> [VersionResource] {
        let object = try await self.object(in: workspace, collection: collection, name: name)
        let rows = try await client.query(
            """
            SELECT v.id, v.version, v.content_hash, v.spec::text, v.created_at, v.created_by, o.current_version
            FROM object_versions v
            JOIN registry_objects o ON o.id = v.object_id
            JOIN workspaces w ON w.id = o.workspace_id
            WHERE w.name = \(workspace) AND o.kind = \(object.kind.rawValue) AND o.name = \(name)
              AND (\(number ?? 0) = 0 OR v.version = \(number ?? 0))
            ORDER BY v.version
            """, logger: logger)
        var versions: [(id: Int64, resource: VersionResource)] = []
        for try await row in rows.decode((Int64, Int, String, String, Date, String, Int?).self) {
            versions.append((row.0, VersionResource(
                kind: object.kind, name: name, version: row.1, contentHash: row.2, spec: try Self.decode(JSONValue.self, row.3),
                upstream: [], createdAt: row.4, createdBy: row.5, isCurrent: row.6 == row.1)))
        }
        guard !versions.isEmpty else { return [] }
        let upstream = try await client.query(
            """
            SELECT e.downstream_id, u.kind, u.name, uv.version, u.current_version
            FROM lineage_edges e
            JOIN object_versions uv ON uv.id = e.upstream_id
            JOIN registry_objects u ON u.id = uv.object_id
            WHERE e.downstream_id = ANY(\(versions.map(\.id)))
            """, logger: logger)
        var byVersion: [Int64: [LineageNode]] = [:]
        for try await (downstream, kind, upName, version, current) in upstream.decode((Int64, String, String, Int, Int?).self) {
            guard let kind = ObjectKind(rawValue: kind) else { continue }
            byVersion[downstream, default: []].append(LineageNode(kind: kind, name: upName, version: version, isCurrent: current == version))
        }
        return versions.map { entry in
            var resource = entry.resource
            resource.upstream = (byVersion[entry.id] ?? []).sorted()
            return resource
        }
    }

    // MARK: Lineage and search

    public func lineage(
        in workspace: String, collection: ObjectCollection, name: String, direction: LineageDirection, depth: Int
    ) async throws -> LineageGraph {
        let object = try await self.object(in: workspace, collection: collection, name: name)
        let version = object.currentVersion ?? object.latestVersion
        let (from, to) = direction == .upstream ? ("downstream_id", "upstream_id") : ("upstream_id", "downstream_id")
        let rows = try await client.query(
            """
            WITH RECURSIVE root AS (
                SELECT v.id FROM object_versions v
                JOIN registry_objects o ON o.id = v.object_id JOIN workspaces w ON w.id = o.workspace_id
                WHERE w.name = \(workspace) AND o.kind = \(object.kind.rawValue) AND o.name = \(name) AND v.version = \(version)
            ), walk(id, depth) AS (
                SELECT id, 0 FROM root
                UNION
                SELECT e.\(unescaped: to), walk.depth + 1 FROM walk JOIN lineage_edges e ON e.\(unescaped: from) = walk.id
                WHERE walk.depth < \(depth)
            )
            SELECT v.id, o.kind, o.name, v.version, o.current_version
            FROM (SELECT DISTINCT id FROM walk) reached
            JOIN object_versions v ON v.id = reached.id JOIN registry_objects o ON o.id = v.object_id
            """, logger: logger)
        var nodes: [Int64: LineageNode] = [:]
        for try await (id, kind, nodeName, nodeVersion, current) in rows.decode((Int64, String, String, Int, Int?).self) {
            guard let kind = ObjectKind(rawValue: kind) else { continue }
            nodes[id] = LineageNode(kind: kind, name: nodeName, version: nodeVersion, isCurrent: current == nodeVersion)
        }
        let ids = Array(nodes.keys)
        let edgeRows = try await client.query(
            "SELECT downstream_id, upstream_id FROM lineage_edges WHERE downstream_id = ANY(\(ids)) AND upstream_id = ANY(\(ids))",
            logger: logger)
        var edges: [LineageEdge] = []
        for try await (down, up) in edgeRows.decode((Int64, Int64).self) {
            if let downstream = nodes[down], let upstream = nodes[up] { edges.append(LineageEdge(downstream: downstream, upstream: upstream)) }
        }
        let root = LineageNode(kind: object.kind, name: name, version: version, isCurrent: object.currentVersion == version)
        return LineageGraph(root: root, direction: direction, depth: depth, nodes: nodes.values.sorted(), edges: edges.sorted())
    }

    public func search(in workspace: String, query: SearchQuery) async throws -> [SearchResult] {
        let terms = query.text.lowercased().split(whereSeparator: { !($0.isLetter || $0.isNumber) }).map { "\($0):*" }
        let tsquery = terms.joined(separator: " & ")
        let kinds = (query.kinds ?? ObjectKind.allCases).map(\.rawValue)
        var tagFilter = "{}"
        var tagKey = ""
        if let tag = query.tag {
            if let equals = tag.firstIndex(of: "=") {
                tagFilter = JSONValue.object([String(tag[..<equals]): .string(String(tag[tag.index(after: equals)...]))]).canonicalString
            } else {
                tagKey = tag
            }
        }
        let rows = try await client.query(
            """
            SELECT o.kind, o.name, o.current_version, o.description, o.owner, o.tags::text,
                   CASE WHEN \(tsquery) = '' THEN 0 ELSE ts_rank(o.search_document, to_tsquery('simple', \(tsquery))) END::float8
            FROM registry_objects o JOIN workspaces w ON w.id = o.workspace_id
            WHERE w.name = \(workspace) AND o.current_version IS NOT NULL AND o.kind = ANY(\(kinds))
              AND (\(tsquery) = '' OR o.search_document @@ to_tsquery('simple', \(tsquery)))
              AND o.tags @> \(tagFilter)::jsonb AND (\(tagKey) = '' OR o.tags ? \(tagKey))
              AND (\(query.owner ?? "") = '' OR o.owner = \(query.owner ?? ""))
            ORDER BY 7 DESC, o.name LIMIT \(query.limit)
            """, logger: logger)
        var results: [SearchResult] = []
        for try await row in rows.decode((String, String, Int, String?, String?, String, Double).self) {
            guard let kind = ObjectKind(rawValue: row.0) else { continue }
            results.append(SearchResult(
                kind: kind, name: row.1, currentVersion: row.2, description: row.3, owner: row.4,
                tags: try Self.decode([String: String].self, row.5), rank: row.6))
        }
        if results.isEmpty { _ = try await self.workspace(named: workspace) }
        return results
    }

    // MARK: Helpers

    static func page<Item: Sendable & Codable>(_ items: [Item], limit: Int, key: (Item) -> [String]) -> Page<Item> {
        guard items.count > limit else { return Page(items: items, nextCursor: nil) }
        let kept = Array(items.prefix(limit))
        return Page(items: kept, nextCursor: kept.last.map { PageCursor.encode(key($0)) })
    }
}

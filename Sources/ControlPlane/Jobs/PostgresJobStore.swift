import Foundation
import Logging
import PostgresNIO
import Shared

/// The jobs ledger in PostgreSQL (schema: `0005_jobs.sql`): enqueueing,
/// claiming with `FOR UPDATE SKIP LOCKED`, leases fenced by token, completion,
/// retries with backoff, cancellation, and the reads behind the API.
///
/// Lease times use the database's clock, so replicas agree on them.
public struct PostgresJobStore: Sendable {
    let client: PostgresClient
    let logger: Logger
    let keys: SigningKeys
    let settings: JobSettings

    /// Creates a store.
    public init(client: PostgresClient, logger: Logger, keys: SigningKeys, settings: JobSettings) {
        self.client = client
        self.logger = logger
        self.keys = keys
        self.settings = settings
    }

    // MARK: Enqueueing

    /// A feature-view version to materialize, as enqueueing needs it.
    struct ViewVersion: Sendable {
        var workspaceID: Int64
        var workspace: String
        var versionID: Int64
        var view: String
        var version: Int
    }

    /// Queues one materialization per interval of `view` (those already queued,
    /// running or done are skipped), each with its signed spec; with a
    /// `parent`, under that backfill. Runs on the caller's transaction.
    func enqueue(
        _ view: ViewVersion, intervals: [MaterializationInterval], parent: Int64?, environment: String?, trigger: String,
        by principal: String, on connection: PostgresConnection
    ) async throws -> [Int64] {
        guard !intervals.isEmpty else { return [] }
        let rows = try await connection.query(
            """
            INSERT INTO jobs (workspace_id, kind, state, version_id, interval_start, interval_end, parent_id, environment, trigger,
                              max_attempts, created_by)
            SELECT \(view.workspaceID), 'materialize', 'queued', \(view.versionID), x.s, x.e, \(parent), \(environment), \(trigger),
                   \(settings.maxAttempts), \(principal)
            FROM unnest(\(intervals.map(\.start))::timestamptz[], \(intervals.map(\.end))::timestamptz[]) AS x(s, e)
            ON CONFLICT DO NOTHING
            RETURNING id, interval_start, interval_end
            """, logger: logger)
        var created: [(Int64, Date, Date)] = []
        for try await row in rows.decode((Int64, Date, Date).self) { created.append(row) }
        guard !created.isEmpty else { return [] }
        let (definitions, targets) = try await snapshot(versionID: view.versionID, on: connection)
        let signing = try await keys.current()
        let now = Date()
        var payloads: [String] = [], signatures: [String] = []
        for (id, start, end) in created {
            let spec = JobSpec(
                jobId: id, kind: .materialize, workspace: view.workspace, featureView: view.view, version: view.version,
                start: start, end: end, definitions: definitions, targets: targets, issuedAt: now)
            let signed = try signing.sign(try spec.jsonValue())
            payloads.append(signed.payload)
            signatures.append(signed.signature)
        }
        let ids = created.map(\.0)
        try await connection.execute(
            """
            UPDATE jobs j SET spec_payload = x.p, spec_signature = x.s, spec_key = \(signing.publicKey.fingerprint)
            FROM unnest(\(ids)::bigint[], \(payloads)::text[], \(signatures)::text[]) AS x(id, p, s) WHERE j.id = x.id
            """, logger: logger)
        try await connection.execute(
            "INSERT INTO job_events (job_id, event, detail) SELECT id, 'queued', \(trigger) FROM unnest(\(ids)::bigint[]) AS id",
            logger: logger)
        return ids
    }

    /// The definitions a job on `versionID` reads (the view and everything
    /// upstream, with their current operational settings) and its target stores.
    func snapshot(versionID: Int64, on connection: PostgresConnection) async throws -> ([JobSpec.Definition], JobSpec.Targets) {
        let rows = try await connection.query(
            """
            WITH RECURSIVE upstream(id) AS (
                SELECT \(versionID)::bigint
                UNION SELECT e.upstream_id FROM lineage_edges e JOIN upstream u ON e.downstream_id = u.id)
            SELECT o.kind, o.name, v.version, v.content_hash, jsonb_set(v.spec, '{operational}', o.operational)::text, v.id = \(versionID)
            FROM upstream u JOIN object_versions v ON v.id = u.id JOIN registry_objects o ON o.id = v.object_id
            ORDER BY v.id = \(versionID) DESC, o.kind, o.name
            """, logger: logger)
        var definitions: [JobSpec.Definition] = []
        var targets = JobSpec.Targets(offline: true, online: true)
        for try await (kind, name, version, hash, text, isView) in rows.decode((String, String, Int, String, String, Bool).self) {
            let definition = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
            if isView, case .object(let spec) = definition, case .object(let operational)? = spec["operational"] {
                if case .bool(let online)? = operational["online"] { targets.online = online }
                if case .bool(let offline)? = operational["offline"] { targets.offline = offline }
            }
            definitions.append(JobSpec.Definition(kind: kind, name: name, version: version, contentHash: hash, definition: definition))
        }
        return (definitions, targets)
    }

    /// `larder materialize`: a backfill of `request.featureView`'s current
    /// version over `[start, end)`, in chunks, as one transaction.
    public func materialize(_ request: MaterializeRequest, workspace: String, by principal: String) async throws -> MaterializeResponse {
        guard request.start < request.end else {
            throw JobError.invalidArgument(field: "end", detail: "the end (\(RFC3339.format(request.end))) must be after the start")
        }
        var chunk = settings.backfillChunk
        if let text = request.chunk {
            do { chunk = try TimeSpan.parse(text) } catch {
                throw JobError.invalidArgument(field: "chunk", detail: "'\(text)' is not a duration such as 1h or 1d")
            }
        }
        guard chunk.seconds >= 60 else { throw JobError.invalidArgument(field: "chunk", detail: "a chunk is at least 1m") }
        for (field, date) in [("start", request.start), ("end", request.end)] where !Self.materializableRange.contains(date) {
            throw JobError.invalidArgument(field: field, detail: "\(RFC3339.format(date)) is outside the years 1970 to 9999")
        }
        // Counted before any is made: a request for millions of chunks is refused without allocating them.
        let count = Self.chunkCount(from: request.start, to: request.end, chunk: chunk)
        guard count <= Self.maximumChunks else {
            throw JobError.invalidArgument(
                field: "chunk", detail: "that is \(count) chunks; use a longer chunk or a shorter range (at most \(Self.maximumChunks))")
        }
        let intervals = Self.chunks(from: request.start, to: request.end, chunk: chunk)
        return try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                guard let view = try await currentVersion(of: request.featureView, workspace: workspace, on: connection) else {
                    throw JobError.featureViewNotFound(request.featureView)
                }
                let environments = try await environmentsQueued(for: view, named: request.environment, on: connection)
                // The bound holds for all the chunks the request queues, in every environment together.
                guard count * environments.count <= Self.maximumChunks else {
                    throw JobError.invalidArgument(
                        field: "chunk",
                        detail: "that is \(count) chunks in each of \(environments.count) environments; use a longer chunk, a shorter range "
                            + "or one --environment (at most \(Self.maximumChunks) in all)")
                }
                let trigger = "requested by \(principal)"
                var backfills: [JobResource] = [], queued = 0
                for environment in environments {
                    let parent = try await createBackfill(
                        view, start: request.start, end: request.end, environment: environment, trigger: trigger, by: principal,
                        on: connection)
                    queued += try await enqueue(
                        view, intervals: intervals, parent: parent, environment: environment, trigger: trigger, by: principal,
                        on: connection
                    ).count
                    backfills.append(try await jobs(where: "j.id = \(parent)", on: connection).first!)
                }
                return MaterializeResponse(
                    backfills: backfills, chunksQueued: queued, chunksSkipped: intervals.count * environments.count - queued)
            }
        }
    }

    /// The environments a materialization of `view` is queued for: the one
    /// `name`d, or else every environment of its workspace (each keeps its own
    /// stores, so each needs every interval).
    func environmentsQueued(for view: ViewVersion, named name: String?, on connection: PostgresConnection) async throws -> [String] {
        var names: [String] = []
        for try await environment in try await connection.query(
            """
            SELECT name FROM environments WHERE workspace_id = \(view.workspaceID) AND (\(name == nil) OR name = \(name ?? ""))
            ORDER BY name
            """, logger: logger).decode(String.self) {
            names.append(environment)
        }
        if let name, names.isEmpty { throw JobError.environmentNotFound(name) }
        guard !names.isEmpty else {
            throw JobError.invalidArgument(
                field: "environment",
                detail: "workspace '\(view.workspace)' has no environment to materialize in; create one (larder environments create NAME) and enroll an agent into it")
        }
        return names
    }

    /// `larder datasets create`: queues a dataset job for an agent of the
    /// workspace, its spec carrying the workspace's current definitions (at
    /// one registry revision) and the request. The features asked for must exist.
    public func createDataset(_ request: CreateDatasetRequest, workspace: String, by principal: String) async throws -> JobResource {
        if let (field, detail) = request.problem { throw JobError.invalidArgument(field: field, detail: detail) }
        return try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger, begin: "BEGIN ISOLATION LEVEL REPEATABLE READ") { connection in
                var workspaceID: Int64?
                for try await id in try await connection.query("SELECT id FROM workspaces WHERE name = \(workspace)", logger: logger).decode(Int64.self) {
                    workspaceID = id
                }
                guard let workspaceID else { throw RegistryError.workspaceNotFound(workspace) }
                let snapshot = try await AgentRegistrySnapshots(client: client, logger: logger)
                    .snapshot(ofWorkspace: workspaceID, named: workspace, on: connection)
                // What the request names must exist now (the agent resolves it with these definitions).
                let names = Set(snapshot.definitions.map { "\($0.kind):\($0.name)" })
                if let service = request.featureService, !names.contains("FeatureService:\(service)") {
                    throw JobError.invalidArgument(field: "feature_service", detail: "no feature service named '\(service)' in workspace \(workspace)")
                }
                if let query = request.entityQuery, !names.contains("EntityQuery:\(query)") {
                    throw JobError.invalidArgument(field: "entity_query", detail: "no entity query named '\(query)' in workspace \(workspace)")
                }
                for reference in request.features ?? [] {
                    let view = String(reference.split(separator: ":").first ?? "")
                    guard names.contains("FeatureView:\(view)") || names.contains("OnDemandFeatureView:\(view)") else {
                        throw JobError.invalidArgument(field: "features", detail: "no feature view or on-demand view named '\(view)' in workspace \(workspace)")
                    }
                }
                let requestText = String(decoding: try APICoding.makeEncoder().encode(request), as: UTF8.self)
                let trigger = "requested by \(principal)"
                let id = try await PostgresFailure.missingReference(is: JobError.environmentNotFound(request.environment ?? "")) {
                    var id: Int64 = 0
                    for try await value in try await connection.query(
                        """
                        INSERT INTO jobs (workspace_id, kind, state, environment, trigger, max_attempts, created_by, dataset)
                        VALUES (\(workspaceID), 'dataset', 'queued', \(request.environment), \(trigger), \(settings.maxAttempts), \(principal),
                                \(requestText)::jsonb)
                        RETURNING id
                        """, logger: logger).decode(Int64.self) { id = value }
                    return id
                }
                let spec = JobSpec(
                    jobId: id, kind: .dataset, workspace: workspace, featureView: nil, version: nil, start: nil, end: nil,
                    definitions: snapshot.definitions, targets: .init(offline: false, online: false), issuedAt: Date(),
                    dataset: request, registryRevision: snapshot.revision)
                let signing = try await keys.current()
                let signed = try signing.sign(try spec.jsonValue())
                try await connection.execute(
                    """
                    UPDATE jobs SET spec_payload = \(signed.payload), spec_signature = \(signed.signature), spec_key = \(signing.publicKey.fingerprint)
                    WHERE id = \(id)
                    """, logger: logger)
                try await connection.execute("INSERT INTO job_events (job_id, event, detail) VALUES (\(id), 'queued', \(trigger))", logger: logger)
                return try await jobs(where: "j.id = \(id)", on: connection).first!
            }
        }
    }

    /// Inserts a backfill job (no spec: agents run its chunks, not it).
    func createBackfill(
        _ view: ViewVersion, start: Date, end: Date, environment: String?, trigger: String, by principal: String,
        on connection: PostgresConnection
    ) async throws -> Int64 {
        let rows = try await connection.query(
            """
            INSERT INTO jobs (workspace_id, kind, state, version_id, interval_start, interval_end, environment, trigger, max_attempts, created_by)
            VALUES (\(view.workspaceID), 'backfill', 'queued', \(view.versionID), \(start), \(end), \(environment), \(trigger), 1, \(principal))
            RETURNING id
            """, logger: logger)
        for try await id in rows.decode(Int64.self) {
            try await connection.execute("INSERT INTO job_events (job_id, event, detail) VALUES (\(id), 'queued', \(trigger))", logger: logger)
            return id
        }
        throw JobError.invalidArgument(field: "feature_view", detail: "could not create the backfill")
    }

    /// The most chunks one materialization request may queue.
    static let maximumChunks = 100_000
    /// The times a materialization may name.
    static let materializableRange = Date(timeIntervalSince1970: 0)...Date(timeIntervalSince1970: 253_402_300_799)

    /// How many chunks `chunks(from:to:chunk:)` makes, without making them.
    static func chunkCount(from start: Date, to end: Date, chunk: TimeSpan) -> Int {
        guard start < end else { return 0 }
        let length = Double(chunk.seconds)
        let first = (start.timeIntervalSince1970 / length).rounded(.down)
        let last = (end.timeIntervalSince1970 / length).rounded(.up)
        return Int(min(last - first, Double(Int.max / 2)))
    }

    /// `[start, end)` cut at multiples of `chunk` (epoch-aligned), the first and last clipped.
    static func chunks(from start: Date, to end: Date, chunk: TimeSpan) -> [MaterializationInterval] {
        var intervals: [MaterializationInterval] = []
        var cursor = start
        let length = Double(chunk.seconds)
        while cursor < end {
            let boundary = Date(timeIntervalSince1970: ((cursor.timeIntervalSince1970 / length).rounded(.down) + 1) * length)
            let next = min(boundary, end)
            intervals.append(MaterializationInterval(start: cursor, end: next))
            cursor = next
        }
        return intervals
    }

    /// The current version of a feature view.
    func currentVersion(of view: String, workspace: String, on connection: PostgresConnection) async throws -> ViewVersion? {
        let rows = try await connection.query(
            """
            SELECT w.id, v.id, o.current_version FROM registry_objects o
            JOIN workspaces w ON w.id = o.workspace_id
            JOIN object_versions v ON v.object_id = o.id AND v.version = o.current_version
            WHERE w.name = \(workspace) AND o.kind = 'FeatureView' AND o.name = \(view)
            """, logger: logger)
        for try await (workspaceID, versionID, version) in rows.decode((Int64, Int64, Int).self) {
            return ViewVersion(workspaceID: workspaceID, workspace: workspace, versionID: versionID, view: view, version: version)
        }
        return nil
    }

    // MARK: The agent protocol

    /// Records an agent process's hello.
    public func hello(_ hello: AgentHello, agent: AgentIdentity) async throws {
        try await client.execute(
            """
            INSERT INTO agent_sessions (principal_id, instance_id, version, hostname, capabilities)
            VALUES (\(agent.principalID), \(hello.instanceId), \(hello.version), \(hello.hostname), \(hello.capabilities.map(\.rawValue)))
            ON CONFLICT (principal_id) DO UPDATE SET instance_id = EXCLUDED.instance_id, version = EXCLUDED.version,
                hostname = EXCLUDED.hostname, capabilities = EXCLUDED.capabilities, connected_at = now(), last_seen_at = now()
            """, logger: logger)
    }

    /// Records a heartbeat; answers which of the reported jobs the agent must abort
    /// (cancelled, or no longer leased to this process).
    public func heartbeat(_ heartbeat: AgentHeartbeat, agent: AgentIdentity) async throws -> [Int64] {
        try await client.execute(
            """
            UPDATE agent_sessions SET last_seen_at = now(), key_generation = coalesce(\(heartbeat.keyGeneration), key_generation)
            WHERE principal_id = \(agent.principalID)
            """, logger: logger)
        guard !heartbeat.runningJobs.isEmpty else { return [] }
        let rows = try await client.query(
            """
            SELECT r.id FROM unnest(\(heartbeat.runningJobs)::bigint[]) AS r(id)
            LEFT JOIN jobs j ON j.id = r.id AND j.workspace_id = \(agent.workspaceID)
            WHERE j.id IS NULL OR j.cancel_requested OR j.lease_agent IS DISTINCT FROM \(agent.name)
               OR j.lease_instance IS DISTINCT FROM \(heartbeat.instanceId)
            """, logger: logger)
        var abort: [Int64] = []
        for try await id in rows.decode(Int64.self) { abort.append(id) }
        return abort
    }

    /// The workspace's access version and registry revision, as a heartbeat answers them (one read).
    public func snapshotVersions(of agent: AgentIdentity) async throws -> (access: Int64, registry: Int64) {
        let rows = try await client.query(
            "SELECT access_version, revision FROM workspaces WHERE id = \(agent.workspaceID)", logger: logger)
        for try await (access, registry) in rows.decode((Int64, Int64).self) { return (access, registry) }
        throw RegistryError.workspaceNotFound(agent.workspace)
    }

    /// Leases the oldest claimable job to the agent, if there is one.
    public func claim(_ request: ClaimRequest, agent: AgentIdentity) async throws -> ClaimedJob? {
        let kinds = request.kinds.filter { $0 != .backfill }.map(\.rawValue)
        guard !kinds.isEmpty else { return nil }
        let token = UUID()
        // One statement (so one round trip, atomic by itself): lease the job,
        // record the attempt and the event.
        let rows = try await client.query(
            """
            WITH next AS (
                SELECT id FROM jobs
                WHERE workspace_id = \(agent.workspaceID) AND state = 'queued' AND kind <> 'backfill'
                  AND kind = ANY(\(kinds)::text[]) AND not_before <= now()
                  AND (environment IS NULL OR environment = \(agent.environment))
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED),
            claimed AS (
                UPDATE jobs j SET state = 'leased', attempts = j.attempts + 1, lease_token = \(token), lease_agent = \(agent.name),
                       lease_instance = \(request.instanceId), updated_at = now(), lease_term = nextval('job_lease_terms'),
                       lease_expires_at = now() + make_interval(secs => \(settings.leaseDuration.seconds))
                FROM next WHERE j.id = next.id
                RETURNING j.id, j.attempts, j.lease_expires_at, j.spec_payload, j.spec_signature, j.spec_key, j.lease_term),
            attempt AS (
                INSERT INTO job_attempts (job_id, attempt, lease_token, agent, instance_id, lease_term)
                SELECT id, attempts, \(token), \(agent.name), \(request.instanceId), lease_term FROM claimed),
            event AS (
                INSERT INTO job_events (job_id, event, detail)
                SELECT id, 'claimed', 'attempt ' || attempts || ' by ' || \(agent.name) || ' (' || \(request.instanceId) || ')' FROM claimed)
            SELECT id, attempts, lease_expires_at, spec_payload, spec_signature, spec_key, lease_term FROM claimed
            """, logger: logger)
        var claimed: ClaimedJob?
        for try await (id, attempt, expires, payload, signature, key, term) in rows.decode((Int64, Int, Date, String, String, String, Int64).self) {
            // The spec goes out bound to this claim (attempt, lease, term) and expiring with its first
            // lease, signed now: a spec copied from one claim is refused for any other, or once stale.
            // Only a stored spec that still verifies is signed again: one changed in the database goes
            // out as it is, and the agent refuses it (nothing launders a tampered spec).
            // During a key rotation a spec queued before the new key was activated verifies with the previous one.
            let ring = try await keys.ring()
            let signing = ring.active
            let stored = SignedDocument(payload: payload, signature: signature, keyFingerprint: key)
            var spec = stored
            if (try? stored.verified(withAnyOf: ring.accepted)) != nil {
                spec = try signing.sign(try Self.storedSpec(payload).bound(attempt: attempt, leaseToken: token, leaseTerm: term, expiresAt: expires).jsonValue())
            } else {
                logger.error("a stored job spec does not verify with the signing key; sent as it is, for the agent to refuse", metadata: ["larder.job": "\(id)"])
            }
            claimed = ClaimedJob(id: id, attempt: attempt, leaseToken: token, leaseExpiresAt: expires, spec: spec, leaseTerm: term)
        }
        return claimed
    }

    /// A spec as the ledger keeps it (signed when queued; read back without
    /// its signing domain, which specs queued before domains existed lack).
    static func storedSpec(_ payload: String) throws -> JobSpec {
        let decoder = APICoding.makeDecoder()
        decoder.keyDecodingStrategy = .useDefaultKeys
        return try decoder.decode(JobSpec.self, from: Data(payload.utf8))
    }

    /// Extends the lease on `job` (and records progress, which marks it running).
    /// Refused with `leaseLost` unless `token` is the job's current lease.
    public func extendLease(job: Int64, token: UUID, progress: JobProgress?, agent: AgentIdentity) async throws -> LeaseStatus {
        let progressText = try progress.map { String(decoding: try APICoding.makeEncoder().encode($0), as: UTF8.self) }
        // One statement: extend, record progress, mark the attempt started.
        let rows = try await client.query(
            """
            WITH extended AS (
                UPDATE jobs SET lease_expires_at = now() + make_interval(secs => \(settings.leaseDuration.seconds)),
                       progress = COALESCE(\(progressText)::jsonb, progress),
                       state = CASE WHEN \(progress != nil) THEN 'running' ELSE state END, updated_at = now()
                WHERE id = \(job) AND workspace_id = \(agent.workspaceID) AND lease_token = \(token)
                  AND state IN ('leased', 'running') AND lease_expires_at > now()
                RETURNING lease_expires_at, cancel_requested),
            started AS (
                UPDATE job_attempts SET started_at = COALESCE(started_at, now())
                WHERE lease_token = \(token) AND \(progress != nil) AND EXISTS (SELECT 1 FROM extended))
            SELECT lease_expires_at, cancel_requested FROM extended
            """, logger: logger)
        for try await (expires, cancel) in rows.decode((Date, Bool).self) {
            return LeaseStatus(leaseExpiresAt: expires, cancelRequested: cancel)
        }
        throw try await client.withConnection { try await leaseFailure(job: job, agent: agent, on: $0) }
    }

    /// Why a report about `job` is refused: it is not in the workspace, or the lease is gone.
    func leaseFailure(job: Int64, agent: AgentIdentity, on connection: PostgresConnection) async throws -> JobError {
        let rows = try await connection.query(
            "SELECT id FROM jobs WHERE id = \(job) AND workspace_id = \(agent.workspaceID)", logger: logger)
        for try await _ in rows.decode(Int64.self) { return .leaseLost(job) }
        return .jobNotFound(job)
    }

    /// Ends the attempt holding lease `completion.leaseToken`: a success stores
    /// the declared metrics; a retryable failure queues the job again after a
    /// backoff unless its attempts are used up.
    public func complete(job: Int64, _ completion: JobCompletion, agent: AgentIdentity) async throws -> JobResource {
        let metricsText = try completion.metrics.map { String(decoding: try APICoding.makeEncoder().encode($0), as: UTF8.self) }
        var failure = completion.failure
        if completion.outcome == .failed, failure == nil { failure = JobFailure(message: "the agent reported a failure without details", retryable: true) }
        if let message = failure?.message, message.count > 2_000 { failure?.message = String(message.prefix(2_000)) }
        let failureText = try failure.map { String(decoding: try APICoding.makeEncoder().encode($0), as: UTF8.self) }
        let retryable = completion.outcome == .failed && (failure?.retryable ?? false)
        let outcome = completion.outcome.rawValue, message = failure?.message
        // One statement (atomic by itself): end the job's lease and attempt, and record the event.
        let rows = try await client.query(
            """
            WITH target AS (
                SELECT id, CASE WHEN \(outcome) = 'succeeded' THEN 'succeeded'
                                WHEN \(outcome) = 'cancelled' OR cancel_requested THEN 'cancelled'
                                WHEN \(retryable) AND attempts < max_attempts THEN 'queued'
                                ELSE 'failed' END AS next_state
                FROM jobs
                WHERE id = \(job) AND workspace_id = \(agent.workspaceID) AND lease_token = \(completion.leaseToken)
                  AND state IN ('leased', 'running')
                FOR UPDATE),
            ended AS (
                UPDATE jobs j SET state = t.next_state,
                    not_before = now() + \(unescaped: backoff),
                    metrics = COALESCE(\(metricsText)::jsonb, j.metrics), failure = COALESCE(\(failureText)::jsonb, j.failure),
                    finished_at = CASE WHEN t.next_state IN ('succeeded', 'failed', 'cancelled') THEN now() END,
                    lease_token = NULL, lease_agent = NULL, lease_instance = NULL, lease_expires_at = NULL, updated_at = now()
                FROM target t WHERE j.id = t.id
                RETURNING j.id, j.state, j.attempts, j.max_attempts),
            attempt AS (
                UPDATE job_attempts SET outcome = \(outcome), ended_at = now(), failure = \(failureText)::jsonb,
                       started_at = COALESCE(started_at, \(completion.startedAt))
                WHERE lease_token = \(completion.leaseToken) AND EXISTS (SELECT 1 FROM ended)),
            event AS (
                INSERT INTO job_events (job_id, event, detail)
                SELECT id,
                       CASE WHEN state = 'queued' THEN 'retry-scheduled'
                            WHEN state = 'failed' AND \(retryable) THEN 'failed-permanently' ELSE \(outcome) END,
                       CASE WHEN state = 'queued' THEN 'attempt ' || attempts || ' failed: ' || COALESCE(\(message)::text, '')
                            WHEN state = 'failed' AND \(retryable)
                                THEN 'all ' || max_attempts || ' attempts failed; the last: ' || COALESCE(\(message)::text, '')
                            ELSE \(message)::text END
                FROM ended)
            SELECT state, attempts FROM ended
            """, logger: logger)
        var ended: (String, Int)?
        for try await row in rows.decode((String, Int).self) { ended = row }
        guard let (state, attempts) = ended else {
            throw try await client.withConnection { try await leaseFailure(job: job, agent: agent, on: $0) }
        }
        if state == "failed" {
            logger.warning("job failed permanently", metadata: [
                "larder.job": "\(job)", "larder.workspace": .string(agent.workspace), "larder.attempts": "\(attempts)",
            ])
        }
        return try await client.withConnection { try await jobs(where: "j.id = \(job)", on: $0).first! }
    }

    /// Returns every job whose lease has expired to the queue (after a backoff),
    /// or fails it when its attempts are used up, or cancels it when that was asked.
    /// Returns how many leases expired.
    @discardableResult
    public func expireLeases() async throws -> Int {
        try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                let rows = try await connection.query(
                    """
                    WITH expired AS (
                        SELECT id, lease_token FROM jobs WHERE lease_token IS NOT NULL AND lease_expires_at <= now()
                        ORDER BY id FOR UPDATE SKIP LOCKED)
                    UPDATE jobs j SET
                        state = CASE WHEN j.cancel_requested THEN 'cancelled' WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'queued' END,
                        not_before = now() + \(unescaped: backoff),
                        failure = jsonb_build_object('message', 'the agent ' || j.lease_agent || ' stopped renewing its lease', 'retryable', true),
                        finished_at = CASE WHEN j.cancel_requested OR j.attempts >= j.max_attempts THEN now() END,
                        lease_token = NULL, lease_agent = NULL, lease_instance = NULL, lease_expires_at = NULL, updated_at = now()
                    FROM expired WHERE j.id = expired.id
                    RETURNING j.id, expired.lease_token, j.state, j.attempts
                    """, logger: logger)
                var expired: [(Int64, UUID, String, Int)] = []
                for try await row in rows.decode((Int64, UUID, String, Int).self) { expired.append(row) }
                guard !expired.isEmpty else { return 0 }
                let tokens = expired.map(\.1)
                try await connection.execute(
                    """
                    UPDATE job_attempts SET outcome = 'lease-expired', ended_at = now(),
                           failure = '{"message": "lease expired", "retryable": true}'::jsonb
                    WHERE lease_token = ANY(\(tokens)::uuid[])
                    """, logger: logger)
                var ids: [Int64] = [], events: [String] = [], details: [String] = []
                for (id, _, state, attempts) in expired {
                    ids.append(id)
                    switch state {
                    case "queued":
                        events.append("lease-expired")
                        details.append("attempt \(attempts) lost its lease; queued again")
                    case "cancelled":
                        events.append("cancelled")
                        details.append("attempt \(attempts) lost its lease while cancelling")
                    default:
                        events.append("failed-permanently")
                        details.append("attempt \(attempts) lost its lease and no attempts are left")
                        logger.warning("job failed permanently", metadata: ["larder.job": "\(id)", "larder.attempts": "\(attempts)"])
                    }
                }
                try await connection.execute(
                    """
                    INSERT INTO job_events (job_id, event, detail)
                    SELECT * FROM unnest(\(ids)::bigint[], \(events)::text[], \(details)::text[])
                    """, logger: logger)
                return expired.count
            }
        }
    }

    // MARK: Operators

    /// Cancels a job: a queued one at once; a running one when its agent next
    /// extends its lease or heartbeats. A backfill cancels its unfinished chunks.
    public func cancel(job: Int64, workspace: String, by principal: String) async throws -> JobResource {
        try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                let target = try await lockJob(job, workspace: workspace, on: connection)
                guard !target.state.isTerminal else {
                    throw JobError.invalidState(job, target.state, "only unfinished jobs can be cancelled")
                }
                let scope = target.kind == .backfill ? "parent_id = \(job)" : "id = \(job)"
                let rows = try await connection.query(
                    """
                    WITH changed AS (
                        UPDATE jobs SET state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
                               finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END,
                               cancel_requested = true, updated_at = now()
                        WHERE \(unescaped: scope) AND state IN ('queued', 'leased', 'running') RETURNING id, state)
                    INSERT INTO job_events (job_id, event, detail)
                    SELECT id, CASE WHEN state = 'cancelled' THEN 'cancelled' ELSE 'cancel-requested' END, \("by \(principal)") FROM changed
                    RETURNING job_id
                    """, logger: logger)
                var changed = 0
                for try await _ in rows.decode(Int64.self) { changed += 1 }
                if target.kind == .backfill {
                    try await connection.execute(
                        """
                        INSERT INTO job_events (job_id, event, detail)
                        VALUES (\(job), 'cancel-requested', \("by \(principal): \(changed) unfinished chunk(s)"))
                        """, logger: logger)
                }
                return try await jobs(where: "j.id = \(job)", on: connection).first!
            }
        }
    }

    /// Queues a finished job again with a fresh budget of attempts; a backfill
    /// retries its failed and cancelled chunks.
    public func retry(job: Int64, workspace: String, by principal: String) async throws -> JobResource {
        try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                let target = try await lockJob(job, workspace: workspace, on: connection)
                let scope: String
                if target.kind == .backfill {
                    guard target.state == .failed || target.state == .cancelled else {
                        throw JobError.invalidState(job, target.state, "a backfill is retried once it failed or was cancelled")
                    }
                    scope = "parent_id = \(job) AND state IN ('failed', 'cancelled')"
                } else {
                    guard target.state.isTerminal else {
                        throw JobError.invalidState(job, target.state, "only finished jobs can be retried; cancel it first")
                    }
                    scope = "id = \(job)"
                }
                do {
                    try await connection.execute(
                        """
                        WITH changed AS (
                            UPDATE jobs SET state = 'queued', not_before = now(), max_attempts = attempts + \(settings.maxAttempts),
                                   cancel_requested = false, finished_at = NULL, metrics = NULL, progress = NULL, updated_at = now()
                            WHERE \(unescaped: scope) RETURNING id)
                        INSERT INTO job_events (job_id, event, detail) SELECT id, 'retried', \("by \(principal)") FROM changed
                        """, logger: logger)
                    if target.kind == .backfill {
                        try await connection.execute(
                            "INSERT INTO job_events (job_id, event, detail) VALUES (\(job), 'retried', \("by \(principal)"))", logger: logger)
                    }
                } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" {
                    throw JobError.invalidState(job, target.state, "another job for the same interval is queued, running or done")
                }
                return try await jobs(where: "j.id = \(job)", on: connection).first!
            }
        }
    }

    /// Locks a job (not a backfill: see below) and reads its kind, state and backfill.
    func lockJob(_ job: Int64, workspace: String, on connection: PostgresConnection) async throws -> (kind: JobKind, state: JobState, parent: Int64?) {
        let rows = try await connection.query(
            """
            SELECT j.kind, j.state, j.parent_id FROM jobs j JOIN workspaces w ON w.id = j.workspace_id
            WHERE j.id = \(job) AND w.name = \(workspace) AND j.kind <> 'backfill' FOR UPDATE OF j
            """, logger: logger)
        for try await (kind, state, parent) in rows.decode((String, String, Int64?).self) {
            guard let kind = JobKind(rawValue: kind), let state = JobState(rawValue: state) else { break }
            return (kind, state, parent)
        }
        // A backfill is not locked: its state is its chunks', which the statement
        // that changes them locks.
        if let backfill = try await jobs(where: "j.id = \(job) AND w.name = \(workspace) AND j.kind = 'backfill'", on: connection).first {
            return (.backfill, backfill.state, nil)
        }
        throw JobError.jobNotFound(job)
    }

    // MARK: Reads

    /// The delay before the next attempt of job `j` after `j.attempts` attempts:
    /// the base doubled for each attempt after the first, capped. (The numbers
    /// come from the settings, never from a request.)
    var backoff: String {
        "make_interval(secs => least(\(settings.retryMaxDelay.seconds), \(settings.retryBaseDelay.seconds) * power(2, greatest(j.attempts - 1, 0))))"
    }

    /// A backfill's state, derived from its chunks when read (so chunk
    /// transitions never contend on the backfill's row): queued until one is
    /// claimed, running while any is unfinished, then succeeded, failed or cancelled.
    static let stateExpression = """
        CASE WHEN j.kind <> 'backfill' THEN j.state
             WHEN b.unfinished = 0 AND b.failed = 0 AND b.cancelled = 0 THEN 'succeeded'
             WHEN b.unfinished > 0 AND b.untouched = b.total THEN 'queued'
             WHEN b.unfinished > 0 THEN 'running'
             WHEN b.failed > 0 THEN 'failed' ELSE 'cancelled' END
        """

    static let jobColumns = """
        SELECT j.id, w.name AS workspace, j.kind, \(stateExpression) AS state, o.name AS view, v.version, j.interval_start,
               j.interval_end, j.parent_id, j.environment, j.trigger, j.attempts, j.max_attempts, j.not_before, j.lease_agent,
               j.lease_expires_at, j.cancel_requested, j.progress::text, j.metrics::text, j.failure::text,
               CASE WHEN j.kind = 'backfill' THEN b.chunks END AS chunks, j.created_at,
               CASE WHEN j.kind = 'backfill' THEN GREATEST(j.updated_at, b.updated_at) ELSE j.updated_at END,
               CASE WHEN j.kind <> 'backfill' THEN j.finished_at WHEN b.unfinished = 0 THEN b.finished_at END, j.dataset::text
        FROM jobs j JOIN workspaces w ON w.id = j.workspace_id
        LEFT JOIN object_versions v ON v.id = j.version_id LEFT JOIN registry_objects o ON o.id = v.object_id
        LEFT JOIN LATERAL (
            SELECT COALESCE(sum(x.n), 0) AS total,
                   COALESCE(sum(x.n) FILTER (WHERE x.state IN ('queued', 'leased', 'running')), 0) AS unfinished,
                   COALESCE(sum(x.untouched), 0) AS untouched,
                   COALESCE(sum(x.n) FILTER (WHERE x.state = 'failed'), 0) AS failed,
                   COALESCE(sum(x.n) FILTER (WHERE x.state = 'cancelled'), 0) AS cancelled,
                   max(x.finished_at) AS finished_at, max(x.updated_at) AS updated_at,
                   jsonb_object_agg(x.state, x.n)::text AS chunks
            FROM (SELECT c.state, count(*) AS n, count(*) FILTER (WHERE c.state = 'queued' AND c.attempts = 0) AS untouched,
                         max(c.finished_at) AS finished_at, max(c.updated_at) AS updated_at
                  FROM jobs c WHERE c.parent_id = j.id AND j.kind = 'backfill' GROUP BY c.state) x) b ON true
        """

    static func job(_ row: PostgresRow) throws -> JobResource {
        let cells = row.makeRandomAccess()
        func json<T: Decodable>(_ index: Int, _ type: T.Type) throws -> T? {
            guard let text = try cells[index].decode(String?.self) else { return nil }
            return try APICoding.makeDecoder().decode(T.self, from: Data(text.utf8))
        }
        let state = try cells[3].decode(String.self)
        return JobResource(
            id: try cells[0].decode(Int64.self), workspace: try cells[1].decode(String.self),
            kind: JobKind(rawValue: try cells[2].decode(String.self)) ?? .materialize, state: JobState(rawValue: state) ?? .failed,
            featureView: try cells[4].decode(String?.self), version: try cells[5].decode(Int?.self),
            start: try cells[6].decode(Date?.self), end: try cells[7].decode(Date?.self), parentId: try cells[8].decode(Int64?.self),
            environment: try cells[9].decode(String?.self), trigger: try cells[10].decode(String.self),
            attempts: try cells[11].decode(Int.self), maxAttempts: try cells[12].decode(Int.self),
            notBefore: state == "queued" ? try cells[13].decode(Date.self) : nil, agent: try cells[14].decode(String?.self),
            leaseExpiresAt: try cells[15].decode(Date?.self), cancelRequested: try cells[16].decode(Bool.self),
            progress: try json(17, JobProgress.self), metrics: try json(18, JobMetrics.self), failure: try json(19, JobFailure.self),
            chunks: try json(20, [String: Int].self), dataset: try json(24, CreateDatasetRequest.self), createdAt: try cells[21].decode(Date.self), updatedAt: try cells[22].decode(Date.self),
            finishedAt: try cells[23].decode(Date?.self))
    }

    func jobs(where condition: PostgresQuery, on connection: PostgresConnection) async throws -> [JobResource] {
        var query = condition
        query.sql = Self.jobColumns + " WHERE " + condition.sql
        var jobs: [JobResource] = []
        for try await row in try await connection.query(query, logger: logger) { jobs.append(try Self.job(row)) }
        return jobs
    }

    /// A page of the workspace's jobs, newest first.
    public func list(
        workspace: String, state: JobState?, view: String?, kind: JobKind?, parent: Int64?, environment: String? = nil, after cursor: Int64?,
        limit: Int
    ) async throws -> Page<JobResource> {
        let items = try await client.withConnection { connection in
            try await jobs(
                where: """
                    w.name = \(workspace) AND (\(state?.rawValue)::text IS NULL OR \(unescaped: Self.stateExpression) = \(state?.rawValue))
                    AND (\(view)::text IS NULL OR o.name = \(view)) AND (\(kind?.rawValue)::text IS NULL OR j.kind = \(kind?.rawValue))
                    AND (\(parent)::bigint IS NULL OR j.parent_id = \(parent)) AND (\(cursor)::bigint IS NULL OR j.id < \(cursor))
                    AND (\(environment)::text IS NULL OR j.environment = \(environment))
                    ORDER BY j.id DESC LIMIT \(limit + 1)
                    """, on: connection)
        }
        let more = items.count > limit
        let page = Array(items.prefix(limit))
        return Page(items: page, nextCursor: more ? page.last.map { String($0.id) } : nil)
    }

    /// A job with its attempts and events.
    public func detail(job id: Int64, workspace: String) async throws -> JobDetailResource {
        try await client.withConnection { connection in
            guard let job = try await jobs(where: "j.id = \(id) AND w.name = \(workspace)", on: connection).first else {
                throw JobError.jobNotFound(id)
            }
            var attempts: [JobAttemptResource] = []
            let attemptRows = try await connection.query(
                """
                SELECT attempt, agent, instance_id, claimed_at, started_at, ended_at, outcome, failure::text
                FROM job_attempts WHERE job_id = \(id) ORDER BY attempt
                """, logger: logger)
            for try await (attempt, agent, instance, claimed, started, ended, outcome, failure)
                in attemptRows.decode((Int, String, String?, Date, Date?, Date?, String, String?).self) {
                attempts.append(JobAttemptResource(
                    attempt: attempt, agent: agent, instanceId: instance, claimedAt: claimed, startedAt: started, endedAt: ended,
                    outcome: outcome,
                    failure: try failure.map { try APICoding.makeDecoder().decode(JobFailure.self, from: Data($0.utf8)) }))
            }
            var events: [JobEventResource] = []
            let eventRows = try await connection.query(
                "SELECT at, event, detail FROM job_events WHERE job_id = \(id) ORDER BY id", logger: logger)
            for try await (at, event, detail) in eventRows.decode((Date, String, String?).self) {
                events.append(JobEventResource(at: at, event: event, detail: detail))
            }
            return JobDetailResource(job: job, attempts: attempts, events: events)
        }
    }

    /// The workspace's agents (of one environment, when given) with what they last said.
    public func agents(workspace: String, environment: String? = nil) async throws -> [AgentResource] {
        let rows = try await client.query(
            """
            SELECT p.name, p.environment, s.instance_id, s.version, s.hostname, s.capabilities, s.connected_at, s.last_seen_at,
                   s.last_seen_at > now() - make_interval(secs => \(settings.heartbeatInterval.seconds * 3)),
                   (SELECT count(*)::int FROM jobs j WHERE j.lease_agent = p.name AND j.lease_token IS NOT NULL)
            FROM principals p JOIN workspaces w ON w.id = p.workspace_id
            LEFT JOIN agent_sessions s ON s.principal_id = p.id
            WHERE p.kind = 'agent' AND w.name = \(workspace) AND p.disabled_at IS NULL
              AND (\(environment == nil) OR p.environment = \(environment ?? ""))
            ORDER BY p.name
            """, logger: logger)
        var agents: [AgentResource] = []
        for try await (name, environment, instance, version, hostname, capabilities, connected, seen, online, active)
            in rows.decode((String, String, String?, String?, String?, [String]?, Date?, Date?, Bool?, Int).self) {
            agents.append(AgentResource(
                name: name, workspace: workspace, environment: environment, instanceId: instance, version: version, hostname: hostname,
                capabilities: (capabilities ?? []).compactMap(JobKind.init(rawValue:)), connectedAt: connected, lastSeenAt: seen,
                status: online == nil ? "never" : (online! ? "online" : "offline"), activeJobs: active))
        }
        return agents
    }
}

extension PostgresJobStore {
    /// Throws `workspaceNotFound` unless the workspace exists (with the registry's own lookup).
    func requireWorkspace(_ name: String) async throws {
        _ = try await client.withConnection { try await PostgresRegistryStore.workspaceID(name, connection: $0, logger: logger) }
    }
}

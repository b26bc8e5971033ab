import Foundation
import Logging
import PostgresNIO
import Shared

/// Rebuilds the online store from the offline store: for each feature-view
/// version the agent has materialized (its cached signed specs), each
/// entity's newest offline row — the latest event time, then the greatest
/// created time, a null created time losing — becomes its online row, which
/// is what materialization leaves there. The rows go to a staged table that
/// then replaces the view version's table, so a failure leaves it as it was.
/// Run with the agent stopped (`AgentLock`).
///
/// With Redis the rows are written to it directly, newest wins, as a job's
/// are: safe while the environment's other agents run (a newer value they
/// wrote stays), and it restores what Redis lost. Entities it holds that the
/// offline store no longer has are left (they expire with their TTL).
public struct OnlineRebuild: Sendable {
    let configuration: AgentConfiguration
    let backend: OnlineBackend
    let cache: DefinitionCache
    let logger: Logger

    /// The outcome for one view version.
    public struct Rebuilt: Sendable, Hashable {
        public var view: String
        public var version: Int
        public var entities: Int
    }

    /// Creates a rebuild of the embedded `store`.
    public init(configuration: AgentConfiguration, store: OnlineStore, cache: DefinitionCache, logger: Logger) {
        self.init(configuration: configuration, backend: .embedded(store), cache: cache, logger: logger)
    }

    /// Creates a rebuild of `backend`.
    public init(configuration: AgentConfiguration, backend: OnlineBackend, cache: DefinitionCache, logger: Logger) {
        self.configuration = configuration
        self.backend = backend
        self.cache = cache
        self.logger = logger
    }

    /// Rebuilds `views` (nil: every cached view kept both online and offline).
    public func run(views: Set<String>? = nil) async throws -> [Rebuilt] {
        guard let location = configuration.offlineStore, case .postgres(let url)? = configuration.connections[location.connection] else {
            throw JobExecutionError("this agent's configuration has no offline_store to rebuild from", retryable: false)
        }
        var plans: [MaterializationPlan] = []
        for spec in cache.loadAll(logger: logger) where views?.contains(spec.featureView ?? "") ?? true {
            let plan: MaterializationPlan
            do { plan = try MaterializationPlan(spec) } catch { throw JobExecutionError(error.description, retryable: false) }
            guard plan.targets.online, plan.targets.offline else {
                logger.notice("skipped: the view does not keep both stores", metadata: ["larder.view": .string(plan.view)])
                continue
            }
            plans.append(plan)
        }
        if let views {
            let missing = views.subtracting(plans.map(\.view))
            guard missing.isEmpty else {
                throw JobExecutionError("no materialized definition of \(missing.sorted().joined(separator: ", ")) in this agent's cache", retryable: false)
            }
        }
        var rebuilt: [Rebuilt] = []
        for plan in plans.sorted(by: { $0.view < $1.view }) {
            rebuilt.append(try await rebuild(plan, schema: location.schema, connectionName: location.connection, url: url))
        }
        return rebuilt
    }

    func rebuild(_ plan: MaterializationPlan, schema: String, connectionName: String, url: PostgresURL) async throws -> Rebuilt {
        // A table from before workspaces were in names is read under its old name until adopted.
        let connection = try await url.connect(logger: logger)
        let table: OfflineTable
        do {
            table = try await OfflineTable(schema: schema, plan: plan).resolvedForReading(on: connection, logger: logger)
            try await connection.close()
        } catch {
            try? await connection.close()
            throw error
        }
        let keys = plan.keys.map { SQLIdentifier.quote($0.name) }.joined(separator: ", ")
        let latest = """
            SELECT DISTINCT ON (\(keys)) * FROM \(table.qualifiedName)
            ORDER BY \(keys), event_timestamp DESC, created_timestamp DESC NULLS LAST
            """
        // The offline table read as a source of plain features named as the view's outputs.
        var offline = plan
        offline.source = SourceDefinition(
            name: table.name, connector: .postgres(connection: connectionName, relation: .query(latest)), timestampField: "event_timestamp",
            createdTimestampField: "created_timestamp", columns: table.columns.map { Column(name: $0.name, type: $0.type) })
        offline.features = plan.outputs.map { FeatureDefinition(name: $0.name, type: $0.type, column: $0.name) }
        offline.aggregations = []
        offline.transformation = nil
        let columns = table.columns
        let projection = try PlainProjection(plan: offline, columns: columns)
        let statement = try PostgresEventSource.statement(source: offline.source, transformation: nil, columns: columns)
        if case .redis(let redis, _) = backend {
            let connection = try await url.connect(logger: logger)
            var entities = 0
            do {
                let source = try await PostgresEventSource(
                    connection: connection, statement: statement, columns: columns, from: Self.earliest, to: Self.latest,
                    timeout: configuration.sourceStatementTimeout, batchSize: 16_384, logger: logger)
                let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
                while let batch = try await source.next() {
                    let rows = try projection.output(of: batch).onlineRows
                    try await redis.upsert(rows, schema: plan.onlineSchema, now: now)
                    entities += rows.count
                }
                try await connection.close()
            } catch {
                try? await connection.close()
                throw error
            }
            try await redis.publish(plan.onlineSchema)
            logger.info("rewrote the view's online rows in Redis", metadata: [
                "larder.view": .string(plan.view), "larder.version": "\(plan.version)", "larder.entities": "\(entities)",
            ])
            return Rebuilt(view: plan.view, version: plan.version, entities: entities)
        }
        let store = backend.staging
        let staged = try store.stagingTable(for: plan.onlineSchema, job: 0)
        do {
            let connection = try await url.connect(logger: logger)
            do {
                let source = try await PostgresEventSource(
                    connection: connection, statement: statement, columns: columns, from: Self.earliest, to: Self.latest,
                    timeout: configuration.sourceStatementTimeout, batchSize: 16_384, logger: logger)
                while let batch = try await source.next() { try staged.upsert(projection.output(of: batch).onlineRows) }
                try await connection.close()
            } catch {
                try? await connection.close()
                throw error
            }
            let entities = try store.replace(with: staged)
            logger.info("rebuilt the online table", metadata: [
                "larder.view": .string(plan.view), "larder.version": "\(plan.version)", "larder.entities": "\(entities)",
            ])
            return Rebuilt(view: plan.view, version: plan.version, entities: entities)
        } catch {
            store.discard(staged)
            throw error
        }
    }

    /// The whole range of event times: years 1 to 9999, in microseconds.
    static let earliest: Int64 = -62_135_596_800_000_000
    static let latest: Int64 = 253_402_300_800_000_000
}

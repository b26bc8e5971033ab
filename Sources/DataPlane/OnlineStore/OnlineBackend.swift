import Foundation
import Logging

/// The agent's online store, as its settings (`online_store:`) choose it.
public enum OnlineBackend: Sendable {
    /// In this agent's memory and data directory: the fastest, for an environment of one agent.
    case embedded(OnlineStore)
    /// One Redis shared by the environment's agents; `staging` is a local
    /// store holding a job's rows until its expectations pass (fail policy).
    case redis(RedisOnlineStore, staging: OnlineStore)

    /// Opens the store `configuration` names; the local folders are created if missing.
    public static func open(_ configuration: AgentConfiguration, logger: Logger) throws -> OnlineBackend {
        let local = try OnlineStore(directory: DataPlane.onlineStoreDirectory(configuration))
        switch configuration.onlineStore {
        case .embedded: return .embedded(local)
        case .redis(let settings): return .redis(try RedisOnlineStore(settings: settings, logger: logger), staging: local)
        }
    }

    /// The embedded store, when that is the backend.
    public var embedded: OnlineStore? {
        if case .embedded(let store) = self { return store }
        return nil
    }

    /// The store whose staging tables hold rows not yet applied.
    var staging: OnlineStore {
        switch self {
        case .embedded(let store): return store
        case .redis(_, let staging): return staging
        }
    }

    /// Writes `rows` of `schema`'s view version, newest wins; durable on return.
    func write(_ rows: OnlineRows, schema: OnlineTableSchema, now: Int64) async throws {
        switch self {
        case .embedded(let store):
            let table = try store.table(for: schema)
            try table.upsert(rows)
            try table.sync()
        case .redis(let redis, _):
            try await redis.upsert(rows, schema: schema, now: now)
        }
    }

    /// Writes every row of a staged table into the store, then drops it.
    func commit(_ staged: OnlineTable, now: Int64) async throws {
        switch self {
        case .embedded(let store):
            try store.commit(staged)
        case .redis(let redis, let staging):
            try await redis.upsert(staged, now: now)
            staging.discard(staged)
        }
    }

    /// Closes connections (Redis).
    public func close() async {
        if case .redis(let redis, _) = self { await redis.close() }
    }
}

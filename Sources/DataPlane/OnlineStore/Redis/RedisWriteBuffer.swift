import Synchronization

/// A job's rows on their way to Redis, held newest-per-entity in a local
/// staged table and written when it holds `limit` entities, and at the end.
///
/// A materialization reads many rows per entity (an hourly view backfilled
/// over a month holds 720 of each driver); Redis keeps only the newest, by
/// the same rule as the staged table (the later of (event time, created
/// time), the later write on a tie), so writing each entity once per flush
/// leaves Redis exactly as writing every row would — at one server round of
/// the newest-wins script per entity instead of per row.
final class RedisWriteBuffer: Sendable {
    let redis: RedisOnlineStore
    let staging: OnlineStore
    let schema: OnlineTableSchema
    let job: Int64
    /// When the write is made (microseconds): it sets the keys' expiry.
    let now: Int64
    /// Entities held before they are written: the buffer's memory bound.
    let limit: Int
    private let table: Mutex<OnlineTable>

    /// Entities held by default: a few MiB for views of a few features.
    static let defaultLimit = 131_072

    init(redis: RedisOnlineStore, staging: OnlineStore, schema: OnlineTableSchema, job: Int64, now: Int64, limit: Int = RedisWriteBuffer.defaultLimit) throws {
        self.redis = redis
        self.staging = staging
        self.schema = schema
        self.job = job
        self.now = now
        self.limit = limit
        table = Mutex(try staging.stagingTable(for: schema, job: job))
    }

    /// Takes `rows`; writes what it holds once that reaches `limit` entities.
    func add(_ rows: OnlineRows) async throws {
        let held = try table.withLock { table in
            try table.upsert(rows)
            return table.count
        }
        if held >= limit { try await flush() }
    }

    /// Writes every entity held to Redis (newest wins there too) and starts empty.
    func flush() async throws {
        let held = table.withLock { $0 }
        guard held.count > 0 else { return }
        try await redis.upsert(held, now: now)
        let fresh = try staging.stagingTable(for: schema, job: job)
        table.withLock { $0 = fresh }
    }

    /// Drops what it holds (the job failed).
    func discard() {
        table.withLock { staging.discard($0) }
    }
}

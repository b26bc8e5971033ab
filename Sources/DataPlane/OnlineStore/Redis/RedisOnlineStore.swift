import Foundation
import Logging
import NIOCore
import Shared
import Synchronization

/// The online store in Redis (or Valkey), shared by every agent of an
/// environment: any agent writes a job's or a push's rows, and every agent
/// serves complete values. Keys and values are laid out by `RedisRowCodec`.
///
/// - **Newest wins**, decided on the server: a script compares each stored
///   value's leading (event time, created time) with the new one's and keeps
///   the newer, so a late or retried chunk never overwrites a newer value,
///   whichever agent writes it.
/// - **TTL**: enforced when reading (an older value is `expired`); keys also
///   expire `expiryGrace` after their TTL (and no sooner than `expiryGrace`
///   after they were written), so Redis reclaims them.
/// - **Versions**: `<prefix>:versions` names each view's served version; a job
///   raises it once its rows are written (one write switches serving), after
///   the version's schema is in `<prefix>:schemas`. Readers keep serving the
///   older version until then.
public final class RedisOnlineStore: Sendable {
    /// The client (one per agent).
    public let client: RedisClient
    let codec: RedisRowCodec
    let logger: Logger
    private let scripts = Mutex<[String: String]>([:])
    /// Writes every entity of a local table (a staged job's, a write buffer's)
    /// in rounds of `rowsPerRound`, newest wins per entity.
    public func upsert(_ table: OnlineTable, now: Int64) async throws {
        let (keys, slots) = table.entries()
        var start = 0
        while start < keys.count {
            let end = min(start + Self.rowsPerRound, keys.count)
            try await upsert(try table.rows(keys: Array(keys[start..<end]), slots: Array(slots[start..<end])), schema: table.schema, now: now)
            start = end
        }
    }

    /// Rows a table's write sends per round (see `upsert(_:now:)`).
    static let rowsPerRound = 8_192

    /// Whether the servers take `SET … PXAT`, once asked.
    private let serverFeatures = Mutex<Bool?>(nil)
    private let served: Mutex<ServedVersions>

    /// How long after its TTL a key is kept (its reads answer `expired` meanwhile).
    public static let expiryGrace: Int64 = 3_600
    /// Rows per script call on a standalone server.
    static let rowsPerCall = 512
    /// How often readers look for a switched version.
    static let versionsRefresh = Duration.seconds(1)

    struct ServedVersions {
        var versions: [String: Int] = [:]
        var fetched: ContinuousClock.Instant?
        var refreshing = false
        /// Each view version's schema and its stored types, once read (they never change).
        var schemas: [String: (schema: OnlineTableSchema, types: [StoredType])] = [:]
    }

    /// A store in the deployment `settings` name, under its key prefix.
    public init(settings: RedisSettings, logger: Logger) throws {
        client = try RedisClient(settings: settings, logger: logger)
        codec = RedisRowCodec(prefix: settings.keyPrefix)
        self.logger = logger
        served = Mutex(ServedVersions())
    }

    /// Closes its connections.
    public func close() async { await client.close() }

    // MARK: Writing

    /// Each key takes its value unless it holds a newer one (by the values'
    /// first 16 bytes, compared byte by byte: locale-independent). `ARGV[n + i]`
    /// is key i's expiry in milliseconds since the epoch, or 0; `ARGV[2n + 1]`
    /// is 1 when the server takes `SET … PXAT` (Redis 6.2 and later: one call
    /// instead of two).
    static let newestWins = """
        local n = #KEYS
        local pxat = ARGV[2 * n + 1] == '1'
        local stored = 0
        for i = 1, n do
          local value = ARGV[i]
          local old = redis.call('GETRANGE', KEYS[i], 0, 15)
          local take = true
          if #old == 16 then
            local a = {string.byte(old, 1, 16)}
            local b = {string.byte(value, 1, 16)}
            for j = 1, 16 do
              if a[j] ~= b[j] then
                take = b[j] > a[j]
                break
              end
            end
          end
          if take then
            local expiry = ARGV[n + i]
            if expiry == '0' then
              redis.call('SET', KEYS[i], value)
            elseif pxat then
              redis.call('SET', KEYS[i], value, 'PXAT', expiry)
            else
              redis.call('SET', KEYS[i], value)
              redis.call('PEXPIREAT', KEYS[i], expiry)
            end
            stored = stored + 1
          end
        end
        return stored
        """

    /// Raises field `ARGV[1]` of hash `KEYS[1]` to `ARGV[2]`, never lowering it.
    static let raise = """
        local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
        if tonumber(ARGV[2]) > current then
          redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
          return 1
        end
        return 0
        """

    /// Writes `rows` of `schema`'s view version, newest wins per entity, at
    /// `now` (microseconds). Returns how many rows were stored.
    @discardableResult
    public func upsert(_ rows: OnlineRows, schema: OnlineTableSchema, now: Int64) async throws -> Int {
        let layout = try SlotLayout(schema)
        guard rows.features.count == schema.features.count, rows.eventTimes.count == rows.count, rows.createdTimes.count == rows.count else {
            throw OnlineStoreError.schemaMismatch("expected \(schema.features.count) feature columns and one time per row")
        }
        for (position, column) in rows.features.enumerated() {
            guard column.count == rows.count, layout.accepts(column, feature: position) else {
                throw OnlineStoreError.schemaMismatch("feature \(schema.features[position].name) is \(schema.features[position].type.rawValue)")
            }
        }
        guard rows.count > 0 else { return 0 }
        // Values encoded into one buffer, sliced once it is whole (a slice taken while it grows
        // would make every later write copy it).
        var valueBytes = ByteBuffer()
        valueBytes.reserveCapacity(rows.count * (17 + 9 * schema.features.count))
        var written: [(slot: Int, key: ByteBuffer, value: Range<Int>, expiry: Int64)] = []
        written.reserveCapacity(rows.count)
        let nowMillis = now / 1_000
        for row in 0..<rows.count {
            var expiry: Int64 = 0
            if let ttl = schema.ttlSeconds {
                // A row already past its TTL (a backfill of history) is answered `expired` for a while, as the embedded store does until it compacts.
                expiry = max(rows.eventTimes[row] / 1_000 + (ttl + Self.expiryGrace) * 1_000, nowMillis + Self.expiryGrace * 1_000)
            }
            let (key, slot) = codec.key(view: schema.view, version: schema.version, entity: rows.keys[row])
            let valueStart = valueBytes.writerIndex
            RedisRowCodec.encode(rows, row: row, types: layout.types, into: &valueBytes)
            written.append((slot, key, valueStart..<valueBytes.writerIndex, expiry))
        }
        let entries = written.map { (slot: $0.slot, key: $0.key, value: valueBytes.getSlice(at: $0.value.lowerBound, length: $0.value.count)!, expiry: $0.expiry) }
        guard !entries.isEmpty else { return 0 }
        // One script call per slot on a Cluster (its keys must share one), per few hundred rows otherwise.
        var groups: [[Int]] = []
        if try await client.isCluster() {
            var bySlot: [Int: [Int]] = [:]
            for (index, entry) in entries.enumerated() { bySlot[entry.slot, default: []].append(index) }
            groups = Array(bySlot.values)
        } else {
            groups = stride(from: 0, to: entries.count, by: Self.rowsPerCall).map { Array($0..<min($0 + Self.rowsPerCall, entries.count)) }
        }
        let pxat: RESPArgument = try await takesPXAT() ? "1" : "0"
        let commands = groups.map { group -> (arguments: [RESPArgument], slot: Int) in
            var arguments: [RESPArgument] = [.text(String(group.count))]
            arguments.reserveCapacity(2 + group.count * 3)
            for index in group { arguments.append(.bytes(entries[index].key)) }
            for index in group { arguments.append(.bytes(entries[index].value)) }
            for index in group { arguments.append(.text(String(entries[index].expiry))) }
            arguments.append(pxat)
            return (arguments, entries[group[0]].slot)
        }
        var stored = 0
        for answer in try await evaluate("newest-wins", Self.newestWins, commands) {
            switch answer {
            case .integer(let count): stored += Int(count)
            case .error(let message): throw RedisError.server(message)
            default: throw RedisError.server("an unexpected answer to the newest-wins script")
            }
        }
        return stored
    }

    /// Whether the servers take `SET … PXAT` (Redis 6.2 and later, Valkey): asked once (`INFO server`).
    func takesPXAT() async throws -> Bool {
        if let known = serverFeatures.withLock({ $0 }) { return known }
        let info = try await client.send(["INFO", "server"]).string ?? ""
        let version = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("redis_version:") }
            .map { $0.dropFirst("redis_version:".count).split(separator: ".").compactMap { Int($0) } } ?? []
        let takes = version.count >= 2 && (version[0], version[1]) >= (6, 2)
        serverFeatures.withLock { $0 = takes }
        return takes
    }

    /// Makes `schema`'s version the one served for its view, unless a newer one is:
    /// its schema first, then the pointer (one write switches every reader).
    public func publish(_ schema: OnlineTableSchema) async throws {
        let json = String(decoding: try JSONEncoder().encode(schema), as: UTF8.self)
        try await client.send(["HSET", .text(codec.schemasKey), .text("\(schema.view)@\(schema.version)"), .text(json)],
                              slot: RedisSlot.of(codec.schemasKey.utf8))
        let answers = try await evaluate("raise", Self.raise, [
            (["1", .text(codec.versionsKey), .text(schema.view), .text(String(schema.version))], RedisSlot.of(codec.versionsKey.utf8)),
        ])
        if case .error(let message) = answers[0] { throw RedisError.server(message) }
    }

    /// Runs script `source` (`EVALSHA`, loading it where a node lacks it) with each
    /// command's `numkeys key… arg…`; returns the answers in order.
    func evaluate(_ name: String, _ source: String, _ commands: [(arguments: [RESPArgument], slot: Int)]) async throws -> [RESPValue] {
        var sha = scripts.withLock { $0[name] }
        if sha == nil {
            guard let loaded = try await client.send(["SCRIPT", "LOAD", .text(source)]).string else {
                throw RedisError.server("SCRIPT LOAD gave no digest")
            }
            scripts.withLock { $0[name] = loaded }
            sha = loaded
        }
        let requests = commands.map { RedisCommand([.text("EVALSHA"), .text(sha!)] + $0.arguments, slot: $0.slot) }
        var answers = try await client.pipeline(requests)
        // A node that never saw the script (restarted, failed over, a new Cluster member): load it everywhere, send those again.
        let missing = answers.indices.filter { if case .error(let message) = answers[$0] { return message.hasPrefix("NOSCRIPT") } else { return false } }
        if !missing.isEmpty {
            _ = try await client.sendToEveryNode(["SCRIPT", "LOAD", .text(source)])
            let retried = try await client.pipeline(missing.map { requests[$0] })
            for (index, answer) in zip(missing, retried) { answers[index] = answer }
        }
        return answers
    }

    // MARK: Reading

    /// One view version to read for a batch of entities, into grid columns.
    struct ViewRead {
        var view: String
        var version: Int
        var keys: [EntityKey]
        var reads: [(feature: String, type: ValueType, column: Int)]
    }

    /// Reads every view of `requests` in one round trip per node (an `MGET`
    /// per view on a server, per view and slot on a Cluster) into `grid`,
    /// judging TTLs at `now` (microseconds). A view with no published version
    /// (not materialized yet) leaves its cells `not_found`.
    func read(_ requests: [ViewRead], now: Int64, into grid: inout FeatureGrid) async throws {
        let cluster = try await client.isCluster()
        var layouts: [(schema: OnlineTableSchema, types: [StoredType])?] = []
        for request in requests { layouts.append(try await servedLayout(view: request.view, upTo: request.version)) }
        let plan = ReadPlan(requests, layouts: layouts, codec: codec, cluster: cluster)
        guard !plan.commands.isEmpty else { return }
        try plan.decode(try await client.pipeline(plan.commands), now: now, into: &grid)
    }

    /// The same read, sent from and answered on `eventLoop` with no thread in
    /// between, when everything it needs is at hand: the served versions and
    /// schemas already read, and a connection open on that loop. Nil otherwise
    /// (the caller takes `read`, which fetches what is missing).
    func read(_ requests: [ViewRead], now: Int64, grid: FeatureGrid, on eventLoop: any EventLoop) -> EventLoopFuture<FeatureGrid>? {
        guard let versions = cachedVersions() else { return nil }
        var layouts: [(schema: OnlineTableSchema, types: [StoredType])?] = []
        for request in requests {
            guard let published = versions[request.view] else {
                layouts.append(nil)   // not materialized yet: its cells stay not_found, as `read` leaves them
                continue
            }
            guard let layout = served.withLock({ $0.schemas["\(request.view)@\(min(request.version, published))"] }) else { return nil }
            layouts.append(layout)
        }
        let cluster: Bool
        switch client.knownTopology {
        case .unknown: return nil
        case .standalone: cluster = false
        case .cluster: cluster = true
        }
        let plan = ReadPlan(requests, layouts: layouts, codec: codec, cluster: cluster)
        guard !plan.commands.isEmpty else { return eventLoop.makeSucceededFuture(grid) }
        guard let answers = client.pipeline(plan.commands, on: eventLoop) else { return nil }
        return answers.flatMapThrowing { answers in
            var grid = grid
            try plan.decode(answers, now: now, into: &grid)
            return grid
        }
    }

    /// The `MGET`s of a read, and where their answers go in the grid.
    struct ReadPlan: Sendable {
        struct View: Sendable {
            var schema: OnlineTableSchema
            var types: [StoredType]
            var reads: [(feature: Int, column: Int)]
            var command: Int
            var rows: [Int]
        }

        var views: [View] = []
        var commands: [RedisCommand] = []

        /// The plan for `requests`, each read at its served `layouts` entry (nil: nothing published).
        init(_ requests: [ViewRead], layouts: [(schema: OnlineTableSchema, types: [StoredType])?], codec: RedisRowCodec, cluster: Bool) {
            for (request, layout) in zip(requests, layouts) {
                guard let (schema, types) = layout else { continue }
                // Matched by name and type: an older version may lack a feature or hold it as another type.
                var reads: [(feature: Int, column: Int)] = []
                for read in request.reads {
                    if let index = schema.features.firstIndex(where: { $0.name == read.feature && $0.type == read.type }) {
                        reads.append((index, read.column))
                    }
                }
                guard !reads.isEmpty else { continue }
                var bySlot: [Int: [Int]] = [:]
                var keys: [ByteBuffer] = []
                keys.reserveCapacity(request.keys.count)
                for (row, entity) in request.keys.enumerated() {
                    let (key, slot) = codec.key(view: schema.view, version: schema.version, entity: entity)
                    keys.append(key)
                    bySlot[cluster ? slot : 0, default: []].append(row)
                }
                for (slot, rows) in bySlot {
                    views.append(View(schema: schema, types: types, reads: reads, command: commands.count, rows: rows))
                    commands.append(RedisCommand(["MGET"] + rows.map { .bytes(keys[$0]) }, slot: slot))
                }
            }
        }

        /// Writes the `MGET` answers into `grid`, judging TTLs at `now`.
        func decode(_ answers: [RESPValue], now: Int64, into grid: inout FeatureGrid) throws {
            let width = grid.width
            for plan in views {
                guard case .array(let values?) = answers[plan.command], values.count == plan.rows.count else {
                    if case .error(let message) = answers[plan.command] { throw RedisError.server(message) }
                    throw RedisError.server("an unexpected answer to MGET")
                }
                let cutoff = plan.schema.ttlSeconds.map { now - $0 * 1_000_000 } ?? Int64.min
                for (row, value) in zip(plan.rows, values) {
                    guard case .bulkString(let bytes?) = value, let record = RedisRowCodec.decode(bytes, types: plan.types) else { continue }
                    let base = row * width
                    if record.eventTime < cutoff {
                        for read in plan.reads {
                            grid.statuses[base + read.column] = .expired
                            grid.eventTimes[base + read.column] = record.eventTime
                        }
                        continue
                    }
                    for read in plan.reads {
                        let value = record.values[read.feature]
                        grid.values[base + read.column] = value
                        grid.statuses[base + read.column] = FeatureStatus(of: value)
                        grid.eventTimes[base + read.column] = record.eventTime
                    }
                }
            }
        }
    }

    /// The stored row of one entity of `schema`'s version, judged against its TTL at `now`.
    public func lookup(_ entity: EntityKey, schema: OnlineTableSchema, now: Int64) async throws -> OnlineLookup {
        let (key, slot) = codec.key(view: schema.view, version: schema.version, entity: entity)
        guard case .bulkString(let bytes?) = try await client.send(["GET", .bytes(key)], slot: slot),
              let record = RedisRowCodec.decode(bytes, types: try SlotLayout(schema).types)
        else { return .notFound }
        if let ttl = schema.ttlSeconds, record.eventTime < now - ttl * 1_000_000 { return .expired(record) }
        return .present(record)
    }

    /// The schema of the version of `view` served for a request of `version`:
    /// that version once published, else the newest published one before it.
    public func servingSchema(view: String, upTo version: Int) async throws -> OnlineTableSchema? {
        try await servedLayout(view: view, upTo: version)?.schema
    }

    /// The same schema, with its stored types (cached: read once per version).
    func servedLayout(view: String, upTo version: Int) async throws -> (schema: OnlineTableSchema, types: [StoredType])? {
        let versions = try await servedVersions()
        guard let published = versions[view] else { return nil }
        let target = min(version, published)
        let field = "\(view)@\(target)"
        if let layout = served.withLock({ $0.schemas[field] }) { return layout }
        guard case .bulkString(let bytes?) = try await client.send(["HGET", .text(codec.schemasKey), .text(field)], slot: RedisSlot.of(codec.schemasKey.utf8)),
              let schema = try? JSONDecoder().decode(OnlineTableSchema.self, from: Data(buffer: bytes))
        else { return nil }
        let layout = (schema: schema, types: try SlotLayout(schema).types)
        served.withLock { $0.schemas[field] = layout }
        return layout
    }

    /// The served version of each view: read once, then again in the
    /// background every `versionsRefresh` (readers never wait for that).
    func servedVersions() async throws -> [String: Int] {
        if let versions = cachedVersions() { return versions }
        return try await fetchVersions()
    }

    /// The served versions as last read, nil before the first read; starts a
    /// background read when they are older than `versionsRefresh`.
    func cachedVersions() -> [String: Int]? {
        let (versions, fetched, start) = served.withLock { served -> ([String: Int], ContinuousClock.Instant?, Bool) in
            let stale = served.fetched.map { ContinuousClock.now - $0 > Self.versionsRefresh } ?? true
            let start = stale && served.fetched != nil && !served.refreshing
            if start { served.refreshing = true }
            return (served.versions, served.fetched, start)
        }
        if fetched == nil { return nil }
        if start {
            Task {
                defer { self.served.withLock { $0.refreshing = false } }
                do { _ = try await self.fetchVersions() } catch {
                    self.logger.warning("cannot read the served versions from Redis", metadata: ["larder.error": .string(String(describing: error))])
                }
            }
        }
        return versions
    }

    /// Reads the served versions now.
    @discardableResult
    public func fetchVersions() async throws -> [String: Int] {
        guard case .array(let fields?) = try await client.send(["HGETALL", .text(codec.versionsKey)], slot: RedisSlot.of(codec.versionsKey.utf8)) else {
            throw RedisError.server("an unexpected answer to HGETALL")
        }
        var versions: [String: Int] = [:]
        var index = 0
        while index + 1 < fields.count {
            if let view = fields[index].string, let version = fields[index + 1].string.flatMap(Int.init) { versions[view] = version }
            index += 2
        }
        served.withLock { served in
            served.versions = versions
            served.fetched = .now
        }
        return versions
    }
}

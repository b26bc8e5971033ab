import Foundation
import Logging
import PostgresNIO
import Shared
import Synchronization

/// How a training dataset reads a view's offline rows for a chunk of entity rows.
public enum DatasetReadPlan: String, Sendable {
    /// Scan or look up, whichever the chunk's selectivity says is cheaper (see `TrainingDatasetBuilder.lookupCost`).
    case automatic
    /// Read every row of the table in the chunk's time bounds and keep the chunk's entities' (`OfflineCandidates`).
    case scan
    /// Look each (entity, time) of the chunk up in the table's lookup index (`OfflineLookup`).
    case lookup
}

/// Reads, from a feature view version's offline table, only the rows a
/// chunk's entity rows match, through a B-tree index on (join keys, event
/// time): for each distinct (entity, time) of the chunk, the rows of that
/// entity at the newest event time at or before it (and not before `from`).
/// Every row at that time is read (an entity's rows may come more than once,
/// for several of its times), so rows tied on event time are settled by
/// `PointInTimeJoin` exactly as for a scan: both plans give the same match.
///
/// The work is one index descent per (entity, time), so it wins over a scan
/// when the chunk asks for few rows of a large table (a 10,000-row entity
/// table against a month of hourly rows), and loses when it asks for most of
/// them. The index is made on first need (`createIndex`), not with the
/// table: it costs every later load of the table, so only tables that small
/// training sets are built from carry it.
struct OfflineLookup: Sendable {
    let table: OfflineTable
    let view: ResolvedRequest.ViewRead
    /// Whether rows may hold a created time (as for `OfflineCandidates.hasCreated`).
    var hasCreated = true
    /// (entity, time) pairs per query: each answer is one row of arrays.
    var pairsPerQuery = 50_000
    let logger: Logger

    /// The lookup index's name, `<table>_lookup` (a table name leaves room for it).
    var indexName: String { table.name + "_lookup" }

    /// The index's schema-qualified, quoted name.
    var qualifiedIndexName: String { SQLIdentifier.quote(table.schema) + "." + SQLIdentifier.quote(indexName) }

    /// Whether the table has a usable lookup index (one left invalid by a failed build does not count).
    func hasIndex(on connection: PostgresConnection) async throws -> Bool {
        var query = PostgresQuery(unsafeSQL: "SELECT coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)), false)")
        query.binds.append(qualifiedIndexName)
        for try await (valid) in try await connection.query(query, logger: logger).decode(Bool.self) { return valid }
        return false
    }

    /// Makes the lookup index on the join keys and event time. `concurrently`:
    /// without blocking the table's writers (as the agent does on its own, in
    /// the background); a build that fails leaves no invalid index behind.
    func createIndex(concurrently: Bool, on connection: PostgresConnection) async throws {
        let columns = (view.keys.map { SQLIdentifier.quote($0.name) } + ["event_timestamp"]).joined(separator: ", ")
        if concurrently {
            // An invalid index from an interrupted build would make IF NOT EXISTS skip the work: drop it first.
            if try await !hasIndex(on: connection) {
                try await connection.execute(PostgresQuery(unsafeSQL: "DROP INDEX CONCURRENTLY IF EXISTS \(qualifiedIndexName)"), logger: logger)
            }
        }
        let statement = "CREATE INDEX \(concurrently ? "CONCURRENTLY " : "")IF NOT EXISTS \(SQLIdentifier.quote(indexName)) ON \(table.qualifiedName) (\(columns))"
        do {
            try await connection.execute(PostgresQuery(unsafeSQL: statement), logger: logger)
        } catch {
            if concurrently {
                try? await connection.execute(PostgresQuery(unsafeSQL: "DROP INDEX CONCURRENTLY IF EXISTS \(qualifiedIndexName)"), logger: logger)
            }
            throw error
        }
    }

    /// The rows the chunk's entity rows match: `entities` maps each distinct key
    /// to its index in the chunk, `entityOfRow` and `times` are the chunk's rows;
    /// `from` (microseconds, nil: the beginning) is the oldest time a match may have.
    /// Read in one REPEATABLE READ transaction, so every query sees one snapshot.
    func read(
        entities: [EntityKey: Int32], entityOfRow: [Int32], times: [Int64], from: Int64?, on connection: PostgresConnection
    ) async throws -> CandidateRows {
        let keyTypes = view.keys.map(\.type)
        // Each distinct entity's join key values, as the table's columns take them (nil: a value of the wrong
        // kind, or text PostgreSQL cannot hold, which no row can hold either).
        var parts = [[EntityKey.Part]?](repeating: nil, count: entities.count)
        for (key, entity) in entities {
            let values = key.parts
            guard values.count == keyTypes.count, zip(values, keyTypes).allSatisfy({ part, type in
                if case .string(let text) = part { return !type.isInteger && !text.utf8.contains(0) }
                return type.isInteger
            }) else { continue }
            parts[Int(entity)] = values
        }
        // In key order, so that the descents walk the index from one end to the other.
        let pairs = Self.distinctPairs(entityOfRow: entityOfRow, times: times).filter { parts[Int($0.entity)] != nil }.sorted { a, b in
            a.entity == b.entity ? a.time < b.time : Self.precedes(parts[Int(a.entity)]!, parts[Int(b.entity)]!)
        }
        let lookup = EntityLookup(entities, keys: view.keys)
        var rows = CandidateRows(types: view.reads.map(\.type))
        guard !pairs.isEmpty else { return rows }
        let statement = lookupStatement(hasFrom: from != nil)
        try await connection.inTransaction(logger: logger, begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { connection in
            var start = 0
            while start < pairs.count {
                let batch = pairs[start..<min(start + pairsPerQuery, pairs.count)]
                start = batch.endIndex
                var query = PostgresQuery(unsafeSQL: statement)
                for (position, type) in keyTypes.enumerated() {
                    if type.isInteger {
                        query.binds.append(batch.map { pair -> Int64 in
                            if case .int(let value) = parts[Int(pair.entity)]![position] { return value }
                            return 0
                        })
                    } else {
                        query.binds.append(batch.map { pair -> String in
                            if case .string(let value) = parts[Int(pair.entity)]![position] { return value }
                            return ""
                        })
                    }
                }
                query.binds.append(batch.map(\.time))
                if let from { query.binds.append(from) }
                for try await row in try await connection.query(query, logger: logger) {
                    try ArrayColumns(row: row, keyCount: keyTypes.count, hasCreated: hasCreated)
                        .append(to: &rows, lookup: lookup, keyTypes: keyTypes, featureTypes: view.reads.map(\.type))
                }
            }
        }
        return rows
    }

    /// The query answering a batch of pairs with one row of arrays: per pair, one
    /// descent of the index to its entity's newest event time at or before the
    /// pair's time, taking every row at that time (`WITH TIES`). Parameters: one
    /// array per join key, the times (microseconds), then `from` when there is one.
    /// Times travel as integers and become timestamps in the server, exactly.
    /// (Finding the newest time first, then joining its rows, took 1.4 times as long.)
    func lookupStatement(hasFrom: Bool) -> String {
        let keys = view.keys.map { SQLIdentifier.quote($0.name) }
        let keyNames = keys.indices.map { "k\($0)" }
        let arrays = view.keys.enumerated().map { position, key in "$\(position + 1)::\(key.type.isInteger ? "bigint" : "text")[]" }
        let timesParameter = "$\(keys.count + 1)::bigint[]"
        let micros = { (expression: String) in "(timestamptz 'epoch' + \(expression) * interval '1 microsecond')" }
        var bounds = zip(keys, keyNames).map { "\($0) = w.\($1)" } + ["event_timestamp <= \(micros("w.at"))"]
        if hasFrom { bounds.append("event_timestamp >= \(micros("$\(keys.count + 2)::bigint"))") }
        let columns = keys + ["event_timestamp"] + (hasCreated ? ["created_timestamp"] : []) + view.reads.map { SQLIdentifier.quote($0.feature) }
        return """
            SELECT \(columns.map { "array_agg(m.\($0))" }.joined(separator: ", "))
            FROM unnest(\((arrays + [timesParameter]).joined(separator: ", "))) AS w(\((keyNames + ["at"]).joined(separator: ", ")))
            CROSS JOIN LATERAL (
                SELECT \(columns.joined(separator: ", ")) FROM \(table.qualifiedName) WHERE \(bounds.joined(separator: " AND "))
                ORDER BY event_timestamp DESC FETCH FIRST 1 ROW WITH TIES
            ) AS m
            """
    }

    /// Whether join key values `a` come before `b`: integers by value, strings by their bytes.
    static func precedes(_ a: [EntityKey.Part], _ b: [EntityKey.Part]) -> Bool {
        for (left, right) in zip(a, b) {
            switch (left, right) {
            case (.int(let x), .int(let y)) where x != y: return x < y
            case (.string(let x), .string(let y)) where x != y: return x.utf8.lexicographicallyPrecedes(y.utf8)
            case (.int, .string): return true
            case (.string, .int): return false
            default: continue
            }
        }
        return false
    }

    /// The distinct (entity, time) pairs of a chunk's rows (rows of no entity left out), sorted.
    static func distinctPairs(entityOfRow: [Int32], times: [Int64]) -> [(entity: Int32, time: Int64)] {
        var pairs: [(entity: Int32, time: Int64)] = []
        pairs.reserveCapacity(times.count)
        for (entity, time) in zip(entityOfRow, times) where entity >= 0 { pairs.append((entity, time)) }
        pairs.sort { $0.entity != $1.entity ? $0.entity < $1.entity : $0.time < $1.time }
        var distinct: [(entity: Int32, time: Int64)] = []
        distinct.reserveCapacity(pairs.count)
        for pair in pairs where distinct.last.map({ $0.entity != pair.entity || $0.time != pair.time }) ?? true { distinct.append(pair) }
        return distinct
    }
}

/// Lookup indexes being made in the background, by table, so that a table gets one build at a time.
final class LookupIndexBuilds: Sendable {
    static let shared = LookupIndexBuilds()
    private let running = Mutex<Set<String>>([])

    /// Starts making `lookup`'s index over a connection of its own unless a build for the table is under way.
    func start(_ lookup: OfflineLookup, url: PostgresURL, logger: Logger) {
        let table = lookup.table.qualifiedName
        guard running.withLock({ $0.insert(table).inserted }) else { return }
        Task {
            defer { _ = running.withLock { $0.remove(table) } }
            let started = ContinuousClock.now
            do {
                let connection = try await url.connect(logger: logger)
                do {
                    try await lookup.createIndex(concurrently: true, on: connection)
                    try await connection.close()
                } catch {
                    try? await connection.close()
                    throw error
                }
                logger.notice("made a lookup index for small training datasets", metadata: [
                    "larder.table": .string(table), "larder.index": .string(lookup.indexName), "larder.took": "\(ContinuousClock.now - started)",
                ])
            } catch {
                logger.warning("could not make a lookup index: small training datasets scan the table", metadata: [
                    "larder.table": .string(table), "larder.error": "\(error)",
                ])
            }
        }
    }
}

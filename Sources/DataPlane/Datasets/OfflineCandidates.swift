import Foundation
import Logging
import PostgresNIO
import Shared

/// Reads, from a feature view version's offline table, the rows a chunk of
/// entity rows can match: those of the chunk's entities with an event time in
/// `[earliest - ttl, latest]`. Rows stream from the server; rows of other
/// entities are dropped as they arrive, so memory holds only candidates.
struct OfflineCandidates {
    let table: OfflineTable
    let view: ResolvedRequest.ViewRead
    let logger: Logger

    /// Whether the table exists.
    func exists(on connection: PostgresConnection) async throws -> Bool {
        var query = PostgresQuery(unsafeSQL: "SELECT to_regclass($1) IS NOT NULL")
        query.binds.append(table.qualifiedName)
        for try await (found) in try await connection.query(query, logger: logger).decode(Bool.self) { return found }
        return false
    }

    /// The candidate rows of `entities` (each key's index in the chunk) between `from` (nil: the beginning) and `to` (microseconds, inclusive).
    func read(entities: [EntityKey: Int32], from: Int64?, to: Int64, on connection: PostgresConnection) async throws -> CandidateRows {
        var rows = CandidateRows(types: view.reads.map(\.type))
        let keys = view.keys.map { SQLIdentifier.quote($0.name) }
        let features = view.reads.map { SQLIdentifier.quote($0.feature) }
        var query = PostgresQuery(unsafeSQL: """
            SELECT \((keys + ["event_timestamp", "created_timestamp"] + features).joined(separator: ", "))
            FROM \(table.qualifiedName) WHERE event_timestamp <= $1\(from == nil ? "" : " AND event_timestamp >= $2")
            """)
        // A millisecond wider than asked: binding a time may round it; the join itself compares exactly.
        query.binds.append(Date(timeIntervalSince1970: Double(to + 1_000) / 1_000_000))
        if let from { query.binds.append(Date(timeIntervalSince1970: Double(from - 1_000) / 1_000_000)) }
        let keyCount = keys.count
        let keyTypes = view.keys.map(\.type)
        var parts: [EntityKey.Part] = []
        for try await row in try await connection.query(query, logger: logger) {
            let cells = row.makeRandomAccess()
            let key: EntityKey
            if keyCount == 1 {
                key = keyTypes[0].isInteger ? .int(try cells[0].decode(Int64.self)) : .string(try cells[0].decode(String.self))
            } else {
                parts.removeAll(keepingCapacity: true)
                for index in 0..<keyCount {
                    parts.append(keyTypes[index].isInteger ? .int(try cells[index].decode(Int64.self)) : .string(try cells[index].decode(String.self)))
                }
                key = EntityKey(parts)
            }
            guard let entity = entities[key] else { continue }
            rows.entity.append(entity)
            rows.times.append(MaterializationPlan.micros(try cells[keyCount].decode(Date.self)))
            rows.created.append(try cells[keyCount + 1].decode(Date?.self).map(MaterializationPlan.micros) ?? CandidateRows.noCreated)
            for (position, read) in view.reads.enumerated() {
                let cell = cells[keyCount + 2 + position]
                let value: FeatureValue
                switch read.type {
                case .int64, .int32: value = try cell.decode(Int64?.self).map(FeatureValue.int) ?? .null
                case .float64, .float32: value = try cell.decode(Double?.self).map(FeatureValue.double) ?? .null
                case .bool: value = try cell.decode(Bool?.self).map(FeatureValue.bool) ?? .null
                case .timestamp: value = try cell.decode(Date?.self).map { .timestamp(MaterializationPlan.micros($0)) } ?? .null
                default: value = try cell.decode(String?.self).map(FeatureValue.string) ?? .null
                }
                rows.columns[position].append(value)
            }
        }
        return rows
    }
}

import Foundation
import Logging
import PostgresNIO
import Shared

/// Keeps the offline tables of push-fed aggregation views in step with their
/// source's event log (`PushEventLog`).
///
/// A view's offline table holds, like a materialized one, a row at each tile
/// boundary where an entity's window values change, so "the last row at or
/// before t" is the value at t. Pushes arrive in any order, so a refresh
/// recomputes, for each entity with events logged since the view's watermark
/// (a log sequence number), every boundary from the tile of its earliest new
/// event on — through the end of its last window — from all of that entity's
/// events the windows can reach, and replaces those rows. One transaction:
/// the rows, and the watermark they reflect, move together.
struct PushedWindowTables: Sendable {
    let schema: String
    let logger: Logger

    /// Watermarks per view version: the last log sequence number folded in.
    var watermarks: String { SQLIdentifier.quote(schema) + ".larder_push_watermarks" }

    /// What one refresh did.
    struct Refresh: Sendable, Equatable {
        /// Entities whose rows were recomputed.
        var entities = 0
        /// Rows written.
        var rows = 0
    }

    /// Brings `view`'s offline table up to date with `log`.
    func refresh(_ view: PushTargets.WindowedView, log: PushEventLog, on connection: PostgresConnection) async throws -> Refresh {
        let table = OfflineTable(
            schema: schema, workspace: log.workspace, view: view.schema.view, version: view.schema.version, keys: view.schema.keys, outputs: view.layout.outputs, windowed: true)
        try await log.create(on: connection, logger: logger)
        try await log.createKeyIndex(view.schema.keys.map(\.name), on: connection, logger: logger)
        try await table.create(on: connection, logger: logger)
        try await connection.execute(PostgresQuery(unsafeSQL: """
            CREATE TABLE IF NOT EXISTS \(watermarks) (view text NOT NULL, version integer NOT NULL, sequence bigint NOT NULL, PRIMARY KEY (view, version))
            """), logger: logger)
        return try await connection.inTransaction(logger: logger) { connection -> Refresh in
            try await connection.execute("SELECT pg_advisory_xact_lock(hashtext(\(table.qualifiedName)))", logger: logger)
            // Waits out pushes being written, and holds new ones back until this commits.
            try await connection.execute(PostgresQuery(unsafeSQL: "LOCK TABLE \(log.qualifiedName) IN SHARE MODE"), logger: logger)
            var read = PostgresQuery(unsafeSQL: "SELECT sequence FROM \(watermarks) WHERE view = $1 AND version = $2")
            // Per table (so per workspace): a table adopted from before workspaces were in names starts over, which recomputes it whole.
            read.binds.append(table.name)
            read.binds.append(view.schema.version)
            var watermark: Int64 = 0
            for try await (sequence) in try await connection.query(read, logger: logger).decode(Int64.self) { watermark = sequence }

            let keys = view.schema.keys.map { SQLIdentifier.quote($0.name) }
            let time = SQLIdentifier.quote(log.source.timestampField)
            let sequence = SQLIdentifier.quote(PushEventLog.sequenceColumn)
            // Each entity with new events, and its earliest new event time (seconds).
            var touched = PostgresQuery(unsafeSQL: """
                SELECT \(keys.joined(separator: ", ")), floor(extract(epoch FROM min(\(time))))::bigint, max(\(sequence))
                FROM \(log.qualifiedName) WHERE \(sequence) > $1 GROUP BY \(keys.joined(separator: ", "))
                """)
            touched.binds.append(watermark)
            var since: [EntityKey: Int64] = [:]
            var newest = watermark
            for try await row in try await connection.query(touched, logger: logger) {
                let cells = row.makeRandomAccess()
                let key = try Self.key(cells, view.schema.keys)
                since[key] = try cells[keys.count].decode(Int64.self)
                newest = max(newest, try cells[keys.count + 1].decode(Int64.self))
            }
            guard !since.isEmpty else { return Refresh() }

            // The entities and the first boundary each one's new events can change.
            let tile = view.aggregator.tile
            try await connection.execute(PostgresQuery(unsafeSQL: """
                CREATE TEMPORARY TABLE larder_touched (\(zip(keys, view.schema.keys).map { $0 + " " + OfflineTable.sqlType($1.type) }.joined(separator: ", ")), \
                from_boundary bigint NOT NULL) ON COMMIT DROP
                """), logger: logger)
            var encoder = CopyTextEncoder()
            for (key, earliest) in since {
                encoder.key(key)
                encoder.separator()
                encoder.int((earliest.dividedRoundingDown(by: tile) + 1) * tile)
                encoder.endRow()
            }
            try await connection.copyFrom(table: "larder_touched", columns: view.schema.keys.map(\.name) + ["from_boundary"], logger: logger) { writer in
                try await writer.write(encoder.buffer)
            }

            // Their events within reach of those boundaries, by entity.
            let joined = keys.map { "e.\($0) = t.\($0)" }.joined(separator: " AND ")
            let created = log.source.createdTimestampField.map { "coalesce(e.\(SQLIdentifier.quote($0)), e.\(SQLIdentifier.quote(PushEventLog.receivedColumn)))" }
                ?? "e.\(SQLIdentifier.quote(PushEventLog.receivedColumn))"
            let inputs = view.layout.inputs.map { Self.number("e." + SQLIdentifier.quote($0), type: log.source.schema[$0] ?? .float64) }
            let events = PostgresQuery(unsafeSQL: """
                SELECT \(keys.map { "e." + $0 }.joined(separator: ", ")), t.from_boundary,
                       floor(extract(epoch FROM e.\(time)))::bigint, floor(extract(epoch FROM \(created)))::bigint\
                \(inputs.map { ", " + $0 }.joined())
                FROM \(log.qualifiedName) e JOIN larder_touched t ON \(joined)
                WHERE e.\(time) >= to_timestamp(t.from_boundary - \(view.longest))
                """)
            var perEntity: [EntityKey: (from: Int64, events: [AggregationEvent])] = [:]
            for try await row in try await connection.query(events, logger: logger) {
                let cells = row.makeRandomAccess()
                let key = try Self.key(cells, view.schema.keys)
                let base = keys.count
                let event = AggregationEvent(
                    time: try cells[base + 1].decode(Int64.self), created: try cells[base + 2].decode(Int64.self),
                    inputs: try (0..<inputs.count).map { try cells[base + 3 + $0].decode(Double?.self) })
                let from = try cells[base].decode(Int64.self)
                perEntity[key, default: (from, [])].events.append(event)
            }

            // Their rows from those boundaries to the end of their last window.
            var output = OutputBatch(keys: [], eventTimes: [], createdTimes: [], features: [])
            var values: [[Double?]] = []
            for (key, entity) in perEntity {
                let tiles = view.aggregator.tiles(of: entity.events, inputs: view.layout.inputs.count)
                guard let last = tiles.keys.max() else { continue }
                for row in view.aggregator.rows(tiles: tiles, from: entity.from, to: (last + 1) * tile + view.longest) {
                    output.keys.append(key)
                    output.eventTimes.append(row.boundary * 1_000_000)
                    output.createdTimes.append(nil)
                    values.append(row.values)
                }
            }
            output.features = view.layout.columns(values)

            try await connection.execute(PostgresQuery(unsafeSQL: """
                DELETE FROM \(table.qualifiedName) AS v USING larder_touched t
                WHERE \(keys.map { "v.\($0) = t.\($0)" }.joined(separator: " AND ")) AND v.event_timestamp >= to_timestamp(t.from_boundary)
                """), logger: logger)
            if output.count > 0 {
                var rows = CopyTextEncoder()
                output.encode(into: &rows)
                try await connection.execute(PostgresQuery(unsafeSQL: "SET LOCAL search_path TO \(SQLIdentifier.quote(schema))"), logger: logger)
                try await connection.copyFrom(table: table.name, columns: table.columns.map(\.name), logger: logger) { writer in
                    try await writer.write(rows.buffer)
                }
            }
            var advance = PostgresQuery(unsafeSQL: """
                INSERT INTO \(watermarks) (view, version, sequence) VALUES ($1, $2, $3)
                ON CONFLICT (view, version) DO UPDATE SET sequence = EXCLUDED.sequence
                """)
            advance.binds.append(table.name)
            advance.binds.append(view.schema.version)
            advance.binds.append(newest)
            try await connection.execute(advance, logger: logger)
            return Refresh(entities: since.count, rows: output.count)
        }
    }

    /// The entity key in the first cells of `cells`.
    static func key(_ cells: PostgresRandomAccessRow, _ keys: [Column]) throws -> EntityKey {
        EntityKey(try keys.indices.map { index -> EntityKey.Part in
            switch keys[index].type {
            case .int64, .int32: return .int(try cells[index].decode(Int64.self))
            default: return .string(try cells[index].decode(String.self))
            }
        })
    }

    /// A pushed column as the number aggregations fold, as a push folds it
    /// online (`PushBatch.numbers`): booleans 0 or 1, strings 1, times in microseconds.
    static func number(_ column: String, type: ValueType) -> String {
        switch type {
        case .bool: return "(CASE WHEN \(column) THEN 1 WHEN NOT \(column) THEN 0 END)::double precision"
        case .string, .bytes: return "(CASE WHEN \(column) IS NOT NULL THEN 1 END)::double precision"
        case .timestamp: return "floor(extract(epoch FROM \(column)) * 1000000)::double precision"
        default: return "\(column)::double precision"
        }
    }
}

import Foundation
import Shared

/// What `larder-agent online` prints: the tables of an online store, or the
/// stored rows of some entities of one view.
public enum OnlineStoreReport {
    /// Why a lookup cannot be made.
    public struct Invalid: Error, Sendable, CustomStringConvertible {
        /// What is wrong.
        public let description: String
    }

    /// One line per table: view, version, entities, TTL, log size.
    public static func tables(_ store: OnlineStore) -> String {
        var rows = [["view", "version", "entities", "ttl", "log"]]
        for schema in store.schemas {
            guard let table = store.table(view: schema.view, version: schema.version) else { continue }
            rows.append([
                schema.view, "v\(schema.version)", "\(table.count)", schema.ttlSeconds.map { "\(TimeSpan(seconds: $0))" } ?? "none",
                ByteCountFormatter.string(fromByteCount: Int64(table.logSize), countStyle: .file),
            ])
        }
        return render(rows)
    }

    /// The stored row of each key (join key values, comma-separated when the
    /// view has several) of `view` (its newest version unless `version`), judged at `now`.
    public static func lookup(_ store: OnlineStore, view: String, version: Int?, keys: [String], now: Date) throws(Invalid) -> String {
        let versions = store.schemas.filter { $0.view == view }.map(\.version)
        guard let chosen = version ?? versions.max(), let table = store.table(view: view, version: chosen) else {
            throw Invalid(description: "the online store has no table for \(view)\(version.map { " v\($0)" } ?? ""); it has \(store.schemas.map { "\($0.view) v\($0.version)" })")
        }
        let schema = table.schema
        var rows = [header(schema)]
        let micros = Int64(now.timeIntervalSince1970 * 1_000_000)
        for text in keys {
            let (values, key) = try entity(text, schema: schema)
            rows.append(row(values, table.lookup(key, now: micros), schema: schema))
        }
        return "\(view) v\(chosen)\n" + render(rows)
    }

    /// One line per view served from Redis: view, served version, TTL, features.
    public static func tables(_ redis: RedisOnlineStore) async throws -> String {
        var rows = [["view", "served version", "ttl", "features"]]
        for (view, version) in try await redis.fetchVersions().sorted(by: { $0.key < $1.key }) {
            let schema = try await redis.servingSchema(view: view, upTo: version)
            rows.append([
                view, "v\(version)", schema?.ttlSeconds.map { "\(TimeSpan(seconds: $0))" } ?? "none",
                schema.map { $0.features.map(\.name).joined(separator: ", ") } ?? "-",
            ])
        }
        return render(rows)
    }

    /// The stored row of each key of `view` in Redis (its served version unless `version`), judged at `now`.
    public static func lookup(_ redis: RedisOnlineStore, view: String, version: Int?, keys: [String], now: Date) async throws -> String {
        let served = try await redis.fetchVersions()
        guard let chosen = version ?? served[view], let schema = try await redis.servingSchema(view: view, upTo: chosen), schema.version == chosen else {
            throw Invalid(description: "Redis serves no version of \(view)\(version.map { " v\($0)" } ?? ""); it serves \(served.sorted { $0.key < $1.key }.map { "\($0.key) v\($0.value)" })")
        }
        var rows = [header(schema)]
        let micros = Int64(now.timeIntervalSince1970 * 1_000_000)
        for text in keys {
            let (values, key) = try entity(text, schema: schema)
            rows.append(row(values, try await redis.lookup(key, schema: schema, now: micros), schema: schema))
        }
        return "\(view) v\(chosen) (Redis)\n" + render(rows)
    }

    static func header(_ schema: OnlineTableSchema) -> [String] {
        schema.keys.map(\.name) + ["status", "event_timestamp"] + schema.features.map(\.name)
    }

    /// The join key values of `text` (comma-separated when the view has several), and its entity.
    static func entity(_ text: String, schema: OnlineTableSchema) throws(Invalid) -> ([String], EntityKey) {
        let values = schema.keys.count == 1 ? [text] : text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard values.count == schema.keys.count else {
            throw Invalid(description: "'\(text)': \(schema.view) has \(schema.keys.count) join keys (\(schema.keys.map(\.name).joined(separator: ", "))); separate them with commas")
        }
        var parts: [EntityKey.Part] = []
        for (value, column) in zip(values, schema.keys) {
            if column.type.isInteger {
                guard let number = Int64(value) else { throw Invalid(description: "'\(value)': \(column.name) is an integer") }
                parts.append(.int(number))
            } else {
                parts.append(.string(value))
            }
        }
        return (values, EntityKey(parts))
    }

    static func row(_ values: [String], _ lookup: OnlineLookup, schema: OnlineTableSchema) -> [String] {
        let (status, record): (String, OnlineRecord?)
        switch lookup {
        case .present(let found): (status, record) = ("present", found)
        case .expired(let found): (status, record) = ("expired", found)
        case .notFound: (status, record) = ("not_found", nil)
        }
        return values + [status, record.map { FeatureValue.timestamp($0.eventTime).description } ?? "-"]
            + (record?.values.map(\.description) ?? schema.features.map { _ in "-" })
    }

    static func render(_ rows: [[String]]) -> String {
        let widths = (0..<(rows.first?.count ?? 0)).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n")
    }
}

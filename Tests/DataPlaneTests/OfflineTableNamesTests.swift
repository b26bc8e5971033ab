@testable import DataPlane
import Foundation
import Logging
import NIOCore
import PostgresNIO
import Shared
import Testing
import TestSupport

@Suite("Offline table names carry the workspace")
struct OfflineTableNamesTests {
    static func table(_ workspace: String, view: String = "stats", version: Int = 1) -> OfflineTable {
        var table = OfflineTable(
            schema: "features", workspace: workspace, view: view, version: version, keys: [Column(name: "id", type: .int64)],
            outputs: [Column(name: "value", type: .float64)], windowed: false)
        table.segmented = true
        table.segmentRows = 4
        return table
    }

    static func batch(_ ids: Range<Int64>, value: Double) -> OutputBatch {
        OutputBatch(keys: ids.map { .int($0) }, eventTimes: ids.map { $0 * 1_000_000 }, createdTimes: ids.map { _ in nil }, features: [.float64(ids.map { _ in value })])
    }

    /// The values a table holds, by id, and those its segments hold.
    static func contents(_ table: OfflineTable, on connection: PostgresConnection) async throws -> (rows: [Double], segments: [Double]) {
        let logger = Logger(label: "test")
        var rows: [Double] = []
        for try await value in try await connection.query(
            PostgresQuery(unsafeSQL: "SELECT value FROM \(table.qualifiedName) ORDER BY id"), logger: logger).decode(Double.self) { rows.append(value) }
        var segments: [(Int64, Double)] = []
        for try await data in try await connection.query(
            PostgresQuery(unsafeSQL: "SELECT data FROM \(table.qualifiedSegmentsName)"), logger: logger).decode(ByteBuffer.self) {
            let segment = try OfflineSegment(decoding: data)
            guard case .fixed(let ids, _) = segment.columns[0], case .fixed(let values, _) = segment.columns[3] else { continue }
            segments += zip(ids, values.map { Double(bitPattern: UInt64(bitPattern: $0)) }).map { ($0, $1) }
        }
        return (rows, segments.sorted { $0.0 < $1.0 }.map(\.1))
    }

    static func write(_ table: OfflineTable, _ ids: Range<Int64>, value: Double, term: Int64, on connection: PostgresConnection) async throws {
        let logger = Logger(label: "test")
        try await table.create(on: connection, logger: logger)
        try await table.replaceInterval(
            from: ids.lowerBound * 1_000_000, to: ids.upperBound * 1_000_000, fence: .init(term: term, job: term, idleTimeout: .seconds(30)),
            on: connection, logger: logger
        ) { writer in try await writer.write(batch(ids, value: value)) }
    }

    @Test("names: <workspace>__<view>__v<N>, hyphens kept; a long one is cut and hashed to at most 53 characters, one name per workspace, view and version")
    func names() {
        #expect(Self.table("rides-prod").name == "rides-prod__stats__v1")
        #expect(Self.table("rides_prod").name != Self.table("rides-prod").name)
        let long = String(repeating: "w", count: 60), view = String(repeating: "v", count: 60)
        var seen: Set<String> = []
        for workspace in [long, long.dropLast() + "x", "w-" + long.dropFirst(2)] {
            for version in [1, 2, 10] {
                let name = Self.table(String(workspace), view: view, version: version).name
                #expect(name.utf8.count <= 53 && OfflineRelationName.isValid(name) && OfflineRelationName.isValid(name + "__segments"))
                #expect(name == Self.table(String(workspace), view: view, version: version).name)
                seen.insert(name)
            }
        }
        #expect(seen.count == 9)
        #expect(!OfflineRelationName.isValid("a\"b") && !OfflineRelationName.isValid("1abc") && !OfflineRelationName.isValid(String(repeating: "a", count: 64)))
    }

    @Test("two workspaces writing one view version into one schema keep their own tables, segments and fences")
    func workspacesApart() async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            let connection = try await url.connect(logger: Logger(label: "test"))
            do {
                let first = Self.table("team-a"), second = Self.table("team-b")
                try await Self.write(first, 0..<10, value: 1, term: 5, on: connection)
                // A lower term in the other workspace is no stale writer of this one's interval.
                try await Self.write(second, 0..<10, value: 2, term: 1, on: connection)
                #expect(try await Self.contents(first, on: connection) == (Array(repeating: 1, count: 10), Array(repeating: 1, count: 10)))
                #expect(try await Self.contents(second, on: connection) == (Array(repeating: 2, count: 10), Array(repeating: 2, count: 10)))
                try await connection.close()
            } catch {
                try? await connection.close()
                throw error
            }
        }
    }

    @Test("a table from before workspaces were in names is read under its old name, then adopted by its workspace's first write: rows, segments, index and fences kept; another workspace gets a table of its own")
    func legacyAdopted() async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            let logger = Logger(label: "test")
            let connection = try await url.connect(logger: logger)
            do {
                let table = Self.table("team-a")
                // What an older release left: the same tables under the names without the workspace.
                try await Self.write(table, 0..<10, value: 1, term: 7, on: connection)
                for statement in [
                    #"ALTER TABLE features."team-a__stats__v1" RENAME TO "stats__v1""#,
                    #"ALTER TABLE features."team-a__stats__v1__segments" RENAME TO "stats__v1__segments""#,
                    #"ALTER INDEX features."team-a__stats__v1_time" RENAME TO "stats__v1_time""#,
                    "UPDATE features.larder_fences SET relation = 'stats__v1'",
                ] { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                #expect(try await !table.exists(on: connection, logger: logger))
                let readable = try await table.resolvedForReading(on: connection, logger: logger)
                #expect(readable.name == "stats__v1")
                #expect(try await Self.contents(readable, on: connection).rows == Array(repeating: 1, count: 10))

                // The first write adopts it: the old rows outside its interval stay, the fence's term still counts.
                await #expect(throws: JobExecutionError.self) { try await Self.write(table, 0..<10, value: 9, term: 3, on: connection) }
                try await Self.write(table, 5..<10, value: 2, term: 8, on: connection)
                let expected = Array(repeating: 1.0, count: 5) + Array(repeating: 2.0, count: 5)
                #expect(try await Self.contents(table, on: connection) == (expected, expected))
                #expect(try await table.resolvedForReading(on: connection, logger: logger).name == "team-a__stats__v1")
                var relations: [String] = []
                for try await name in try await connection.query(
                    "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'features' AND c.relname::text LIKE '%stats%' ORDER BY 1",
                    logger: logger).decode(String.self) { relations.append(name) }
                #expect(relations.filter { $0.hasPrefix("stats__") }.isEmpty, "\(relations)")
                #expect(relations.contains("team-a__stats__v1_time") && relations.contains("team-a__stats__v1__segments"), "\(relations)")
                var fences: [String] = []
                for try await name in try await connection.query(
                    "SELECT DISTINCT relation FROM features.larder_fences", logger: logger).decode(String.self) { fences.append(name) }
                #expect(fences == ["team-a__stats__v1"])

                // Another workspace's view of the same name and version does not take it.
                let other = Self.table("team-b")
                try await Self.write(other, 0..<3, value: 4, term: 1, on: connection)
                #expect(try await Self.contents(other, on: connection).rows == [4, 4, 4])
                #expect(try await Self.contents(table, on: connection).rows == expected)
                try await connection.close()
            } catch {
                try? await connection.close()
                throw error
            }
        }
    }
}

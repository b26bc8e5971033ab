import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

@Suite("Test tooling: a database per test")
struct TestDatabaseTests {
    @Test("each test gets its own empty database, dropped afterwards")
    func isolatedDatabases() async throws {
        let server = try TestDatabase.serverURL()
        let logger = Logger(label: "test")
        var names: [String] = []
        for marker in ["first", "second"] {
            let name = try await TestDatabase.withIsolatedDatabase { url in
                try await TestDatabase.administer(url) { connection, logger in
                    let tables = try await connection.query(
                        "SELECT count(*)::int FROM information_schema.tables WHERE table_schema = 'public'", logger: logger)
                    for try await count in tables.decode(Int.self) { #expect(count == 0) }
                    try await connection.query("CREATE TABLE marker (value text)", logger: logger)
                    try await connection.query("INSERT INTO marker VALUES (\(marker))", logger: logger)
                }
                return url.database
            }
            names.append(name)
        }
        #expect(names[0] != names[1])
        try await TestDatabase.administer(server) { connection, _ in
            let rows = try await connection.query(
                "SELECT count(*)::int FROM pg_database WHERE datname = ANY(\(names))", logger: logger)
            for try await count in rows.decode(Int.self) { #expect(count == 0) }
        }
    }

    @Test("the database is dropped when the test body throws")
    func droppedOnFailure() async throws {
        struct Boom: Error {}
        var created = ""
        await #expect(throws: Boom.self) {
            try await TestDatabase.withIsolatedDatabase { url in
                created = url.database
                throw Boom()
            }
        }
        try await TestDatabase.administer(try TestDatabase.serverURL()) { connection, logger in
            let rows = try await connection.query("SELECT count(*)::int FROM pg_database WHERE datname = \(created)", logger: logger)
            for try await count in rows.decode(Int.self) { #expect(count == 0) }
        }
    }
}

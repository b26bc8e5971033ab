import Foundation
import HTTPTypes
import Hummingbird
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

/// Only declared metadata crosses the boundary: jobs failing on errors whose
/// server messages carry the customer's values (unquoted in the message, in
/// its detail, in a CSV file) must leave none of those values anywhere on the
/// control plane's side — its database, its API answers, its alerts, the
/// webhook bodies it posts — while the agent's own log keeps them.
@Suite("Failure reports without the customer's values", .serialized)
struct FailureRedactionTests {
    actor Deliveries {
        var bodies: [String] = []
        func add(_ body: String) { bodies.append(body) }
    }

    /// Every row of every table of the control plane's database, as text.
    static func dump(_ database: PostgresURL) async throws -> String {
        try await TestDatabase.withClient(database) { client in
            let logger = Logger(label: "test")
            var tables: [String] = []
            for try await name in try await client.query(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", logger: logger).decode(String.self) {
                tables.append(name)
            }
            var text = ""
            for table in tables {
                for try await row in try await client.query(PostgresQuery(unsafeSQL: "SELECT t::text FROM \(table) t"), logger: logger).decode(String.self) {
                    text += "\(table): \(row)\n"
                }
            }
            return text
        }
    }

    @Test("values in server messages, details and CSV files never reach the control plane's database, API, alerts or webhooks")
    func nothingLeaks() async throws {
        let deliveries = Deliveries()
        let router = Router()
        router.post("/hook") { request, _ -> HTTPResponse.Status in
            let bytes = try await request.body.collect(upTo: 1 << 20)
            await deliveries.add(String(decoding: bytes.readableBytesView, as: UTF8.self))
            return .ok
        }
        try await withLoopbackServer(router, label: "test-webhooks") { hook in
            let environment = ["LARDER_ALERT_WEBHOOKS": hook + "/hook", "LARDER_ALERT_WEBHOOK_SECRET": "0123456789abcdef-secret", "LARDER_MAX_ATTEMPTS": "2"]
            try await MaterializationProcessTests.withWorld(drivers: 5, hours: 4, trips: 50, environment: environment) { world in
                try await Self.run(world, deliveries: deliveries)
            }
        }
    }

    static func run(_ world: MaterializationWorld, deliveries: Deliveries) async throws {
        let workspace = JobsWorld.workspace
        let logger = Logger(label: "test")
        // The customer's values, kept in the customer's database (never in a definition's text).
        let secrets = [
            "cast": "secret-5150", "unique": "secret-8086", "unquoted": "secret-6502",
        ]
        try await TestDatabase.withClient(world.customer) { client in
            try await client.execute("CREATE TABLE public.secrets (code text PRIMARY KEY, value text)", logger: logger)
            for (code, value) in secrets {
                try await client.execute("INSERT INTO public.secrets VALUES (\(code), \(value))", logger: logger)
            }
            // Raises errors the way servers and triggers word them: the value in the message, unquoted, or in the detail.
            try await client.execute("""
                CREATE FUNCTION public.larder_fail(which text) RETURNS float8 LANGUAGE plpgsql STABLE AS $$
                DECLARE v text;
                BEGIN
                  SELECT value INTO v FROM public.secrets WHERE code = which;
                  IF which = 'unique' THEN
                    RAISE unique_violation USING MESSAGE = 'duplicate key value violates unique constraint "labels_pkey"',
                      DETAIL = 'Key (id)=(' || v || ') already exists.', TABLE = 'labels', SCHEMA = 'public', CONSTRAINT = 'labels_pkey';
                  END IF;
                  RAISE invalid_parameter_value USING MESSAGE = 'value ' || v || ' is out of range';
                END $$
                """, logger: logger)
        }
        // A CSV file with a malformed value.
        try "driver_id,event_timestamp,score\n1001,2025-01-01T00:30:00Z,secret-csv-31337\n".write(
            to: world.files.appendingPathComponent("scores.csv"), atomically: true, encoding: .utf8)
        // Views whose sources fail in those ways, and an entity query that does.
        func view(_ name: String, _ sql: String) -> String {
            """
            kind: PostgresSource
            name: \(name)_source
            connection: rides_db
            query: \(sql)
            timestamp_field: event_timestamp
            columns: {driver_id: int64, x: float64}
            ---
            kind: FeatureView
            name: \(name)
            entities: [driver]
            source: \(name)_source
            features: [{name: x, type: float64}]
            ---

            """
        }
        let failing = [
            "date_overflow": "SELECT driver_id, make_date(1000 + 234, 13, 1)::timestamptz AS event_timestamp, 1.0::float8 AS x FROM public.trips",
            "division": "SELECT driver_id, completed_at AS event_timestamp, (9876543 / (rating - rating))::float8 AS x FROM public.trips WHERE rating IS NOT NULL",
            "bad_cast": "SELECT driver_id, completed_at AS event_timestamp, (SELECT value FROM public.secrets WHERE code = 'cast')::float8 AS x FROM public.trips",
            "unique": "SELECT driver_id, completed_at AS event_timestamp, public.larder_fail('unique') AS x FROM public.trips",
            "unquoted": "SELECT driver_id, completed_at AS event_timestamp, public.larder_fail('unquoted') AS x FROM public.trips",
        ]
        var repository = failing.sorted { $0.key < $1.key }.map { view($0.key, $0.value) }.joined()
        repository += """
            kind: FileSource
            name: scores_source
            connection: local_files
            paths: [scores.csv]
            timestamp_field: event_timestamp
            columns: {driver_id: int64, score: float64}
            ---
            kind: FeatureView
            name: scores
            entities: [driver]
            source: scores_source
            features: [{name: score, type: float64}]
            ---
            kind: EntityQuery
            name: broken_labels
            connection: warehouse
            sql: SELECT 1001::bigint AS driver_id, make_date(4000 + 321, 14, 2)::timestamptz AS event_timestamp
            columns: {driver_id: int64, event_timestamp: timestamp}

            """
        try await RepositoryFixture.example(workspace: workspace).unscheduled().adding("failing.yaml", repository)
            .apply(to: workspace, with: world.jobs.admin)
        let agent = try world.startAgent()
        var messages: [String: String] = [:]
        for name in failing.keys.sorted() + ["scores"] {
            let job = try await world.materialize(name, hours: 0..<1)
            #expect(job.job.state == .failed, "\(name): \(job.job.state)")
            let chunks = try await world.jobs.admin.jobs(workspace: workspace, view: name, kind: .materialize)
            messages[name] = chunks.items.compactMap { $0.failure?.message }.joined(separator: " | ")
        }
        let dataset = try await world.jobs.admin.createDataset(
            CreateDatasetRequest(
                featureService: "driver_ranking", entityQuery: "broken_labels", output: .init(connection: "local_files", path: "never.csv")),
            workspace: workspace)
        let datasetDone = try await world.jobs.waitUntilFinished(dataset.id, timeout: 60)
        #expect(datasetDone.job.state == .failed)
        messages["dataset"] = datasetDone.job.failure?.message ?? ""
        // A cell holding a quote must not break out of a quoted value: the report says what is wrong, not what was there.
        try "driver_id,event_timestamp,trip_distance_km\n1001,it's secret-quote-77,1\n".write(
            to: world.files.appendingPathComponent("quoted.csv"), atomically: true, encoding: .utf8)
        let quoted = try await world.jobs.admin.createDataset(
            CreateDatasetRequest(
                featureService: "driver_ranking", entities: .init(connection: "local_files", path: "quoted.csv"),
                output: .init(connection: "local_files", path: "never-quoted.csv")),
            workspace: workspace)
        let quotedDone = try await world.jobs.waitUntilFinished(quoted.id, timeout: 60)
        messages["quoted"] = quotedDone.job.failure?.message ?? ""

        // The reports say what failed, where, by code.
        let expected = [
            "date_overflow": "22008", "division": "22012", "bad_cast": "22P02", "unique": "23505 (unique_violation) at table public.labels, constraint labels_pkey",
            "unquoted": "22023", "scores": "scores.csv:2: column score", "dataset": "22008",
            "quoted": "entities row 1, column event_timestamp: not a timestamp",
        ]
        for (name, text) in expected {
            #expect(messages[name]?.contains(text) == true, "\(name): \(messages[name] ?? "no message")")
        }
        // Alerts opened for the failed jobs, and their webhooks were delivered.
        let deadline = Date().addingTimeInterval(30)
        while await deliveries.bodies.count < 2, Date() < deadline { try await Task.sleep(for: .milliseconds(200)) }
        let bodies = await deliveries.bodies
        #expect(bodies.count >= 2 && bodies.contains { $0.contains("job-failed") }, "\(bodies)")

        // Nothing of the values, anywhere on the control plane's side.
        let values = Array(secrets.values) + ["1234-13-01", "4321-14-02", "secret-csv-31337", "secret-quote-77"]
        var seen = try await Self.dump(world.jobs.database)
        let admin = world.jobs.admin
        seen += String(decoding: try APICoding.makeEncoder().encode(try await admin.jobs(workspace: workspace)), as: UTF8.self)
        seen += String(decoding: try APICoding.makeEncoder().encode(try await admin.alerts(workspace: workspace, all: true)), as: UTF8.self)
        seen += bodies.joined(separator: "\n")
        let leaked = values.filter { seen.contains($0) }
        #expect(leaked.isEmpty, "these values reached the control plane: \(leaked)")
        #expect(seen.contains("22008") && seen.contains("labels_pkey"))
        // The agent's own log has the whole story.
        for value in ["1234-13-01", "secret-8086", "secret-6502", "secret-5150"] {
            #expect(agent.log.contains(value), "the agent's log lacks \(value)")
        }
        #expect(await agent.stop() == 0)
    }
}

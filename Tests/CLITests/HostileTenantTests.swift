import Foundation
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

/// A hostile tenant against a running control plane and agent: a consumer
/// (the role a model server's token has) and an editor try to make the agent
/// run SQL, or write and delete files and tables, outside what the customer
/// allowed. Each attempt must be refused, and must change nothing.
@Suite("Hostile tenant: dataset jobs confined on the customer's host", .serialized)
struct HostileTenantTests {
    /// The files under `folder` with their contents (links shown as their targets).
    static func tree(_ folder: URL) -> [String: String] {
        var entries: [String: String] = [:]
        guard let enumerator = FileManager.default.enumerator(atPath: folder.path) else { return entries }
        while let path = enumerator.nextObject() as? String {
            let full = folder.appendingPathComponent(path).path
            if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: full) {
                entries[path] = "link → \(target)"
            } else if let data = FileManager.default.contents(atPath: full) {
                entries[path] = String(decoding: data, as: UTF8.self)
            } else {
                entries[path] = "folder"
            }
        }
        return entries
    }

    /// What a table-level change would show: the customer database's relations, by schema.
    static func relations(_ world: MaterializationWorld) async throws -> [String] {
        try await TestDatabase.withClient(world.customer) { client in
            var names: [String] = []
            for try await name in try await client.query(
                """
                SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND c.relname NOT LIKE 'larder_push_receipts%' ORDER BY 1
                """,
                logger: Logger(label: "test")).decode(String.self) { names.append(name) }
            return names
        }
    }

    @Test("a consumer cannot run SQL, an editor's SQL runs read-only and bounded, outputs stay in the datasets folder and schema, and nothing is replaced or deleted")
    func datasetJobsAreConfined() async throws {
        try await MaterializationProcessTests.withWorld(drivers: 10, hours: 24, trips: 500) { world in
            let workspace = JobsWorld.workspace
            let dora = try await DatasetProcessTests.member("dora", .consumer, in: world)
            let ed = try await DatasetProcessTests.member("ed", .editor, in: world)
            let logger = Logger(label: "test")
            // A sequence the read-only user may even advance: only the transaction's READ ONLY stops it.
            try await TestDatabase.withClient(world.customer) { client in
                try await client.execute("CREATE SEQUENCE public.some_sequence", logger: logger)
                try await client.execute(
                    PostgresQuery(unsafeSQL: "GRANT USAGE, UPDATE ON SEQUENCE public.some_sequence TO \"\(MaterializationWorld.readerRole(world.customer))\""),
                    logger: logger)
                try await client.execute("CREATE TABLE public.labels (driver_id bigint, event_timestamp timestamptz)", logger: logger)
                try await client.execute(
                    "INSERT INTO public.labels SELECT 1000 + g % 10, timestamptz '2025-01-01 12:00:00+00' + g * interval '1 minute' FROM generate_series(1, 30) g",
                    logger: logger)
            }
            func sequenceValue() async throws -> Int {
                try await world.count("SELECT CASE WHEN is_called THEN last_value ELSE 0 END::int FROM public.some_sequence")
            }
            // An editor declares the entity queries consumers may use: one honest, one that tries to write.
            let queries = """
                kind: EntityQuery
                name: labelled_drivers
                connection: warehouse
                sql: SELECT driver_id, event_timestamp, 1.5::float8 AS trip_distance_km FROM public.labels
                columns:
                  driver_id: int64
                  event_timestamp: timestamp
                  trip_distance_km: float64
                entities: [driver]
                ---
                kind: EntityQuery
                name: sneaky
                connection: warehouse
                sql: SELECT nextval('public.some_sequence') AS driver_id, now() AS event_timestamp
                columns:
                  driver_id: int64
                  event_timestamp: timestamp
                ---
                kind: EntityQuery
                name: on_the_offline_store
                connection: rides_db
                sql: SELECT driver_id, event_timestamp FROM public.labels
                columns:
                  driver_id: int64
                  event_timestamp: timestamp

                """
            try await RepositoryFixture.example(workspace: workspace).unscheduled().adding("queries.yaml", queries).apply(to: workspace, with: world.jobs.admin)
            let agent = try world.startAgent(timeout: "3s")
            for view in ["driver_hourly_stats", "driver_trip_aggregates"] {
                let job = try await world.materialize(view, hours: 0..<24)
                #expect(job.job.state == .succeeded, "\(agent.log.suffix(2_000))")
            }
            try "driver_id,event_timestamp,trip_distance_km\n1001,2025-01-01T12:00:00Z,2.5\n".write(
                to: world.files.appendingPathComponent("labels.csv"), atomically: true, encoding: .utf8)
            // What must never change: the files outside the datasets folder, a file and a folder inside it, the relations.
            let datasets = world.files.appendingPathComponent("datasets")
            try FileManager.default.createDirectory(at: datasets.appendingPathComponent("existing"), withIntermediateDirectories: true)
            try "keep me\n".write(to: datasets.appendingPathComponent("existing/inside.csv"), atomically: true, encoding: .utf8)
            try "keep me too\n".write(to: datasets.appendingPathComponent("kept.csv"), atomically: true, encoding: .utf8)
            try FileManager.default.createSymbolicLink(at: datasets.appendingPathComponent("escape"), withDestinationURL: world.files)
            let filesBefore = Self.tree(world.files)
            let relationsBefore = try await Self.relations(world)

            let consumer = ControlPlaneClient(baseURL: world.jobs.server.baseURL, token: dora)
            let editor = ControlPlaneClient(baseURL: world.jobs.server.baseURL, token: ed)
            let labels = DatasetLocation(connection: "local_files", path: "labels.csv")
            func request(entities: DatasetLocation? = labels, query: String? = nil, output: DatasetLocation) -> CreateDatasetRequest {
                CreateDatasetRequest(featureService: "driver_ranking", entities: query == nil ? entities : nil, entityQuery: query, output: output)
            }
            /// The problem the control plane answers `request` with (nil: it was accepted).
            func refusal(_ request: CreateDatasetRequest, by client: ControlPlaneClient) async throws -> ProblemDetails? {
                do {
                    let job = try await client.createDataset(request, workspace: workspace)
                    Issue.record("accepted: \(request) as job \(job.id)")
                    return nil
                } catch let problem as ProblemDetails { return problem }
            }
            /// Runs `request` as a job and returns how it failed (nil: it succeeded).
            func failure(_ request: CreateDatasetRequest, by client: ControlPlaneClient) async throws -> String? {
                let job = try await client.createDataset(request, workspace: workspace)
                let done = try await world.jobs.waitUntilFinished(job.id, timeout: 60)
                return done.job.state == .succeeded ? nil : (done.job.failure?.message ?? "failed without a message")
            }

            // 1. A consumer's free SQL is refused before it reaches any agent: 403 naming the field.
            let freeSQL = DatasetLocation(
                connection: "warehouse", query: "SELECT nextval('public.some_sequence') AS driver_id, now() AS event_timestamp")
            let sqlRefused = try await refusal(request(entities: freeSQL, output: .init(connection: "local_files", path: "a.csv")), by: consumer)
            #expect(sqlRefused?.status == 403 && sqlRefused?.field == "entities.query", "\(String(describing: sqlRefused))")
            // ... and a consumer's name of a query that does not exist is a 400.
            let unknown = try await refusal(request(query: "nope", output: .init(connection: "local_files", path: "a.csv")), by: consumer)
            #expect(unknown?.status == 400 && unknown?.field == "entity_query")

            // 2. SQL that would write runs read-only: an editor's free SQL and a declared query both fail; the sequence never moves.
            let editorSQL = try await failure(request(entities: freeSQL, output: .init(connection: "local_files", path: "b.csv")), by: editor)
            #expect(editorSQL?.contains("25006") == true, "\(String(describing: editorSQL))")
            let declared = try await failure(request(query: "sneaky", output: .init(connection: "local_files", path: "c.csv")), by: consumer)
            #expect(declared?.contains("25006") == true, "\(String(describing: declared))")
            #expect(try await sequenceValue() == 0)
            // A query past the source statement timeout is cancelled by PostgreSQL: 57014 (query_canceled) is what
            // the server says when the timeout ends a statement; a query left to finish would have succeeded. (Not
            // timed: the job's retries, each cancelled, take longer than one pg_sleep on a loaded machine.)
            let slow = DatasetLocation(connection: "warehouse", query: "SELECT 1001::bigint AS driver_id, now() AS event_timestamp FROM pg_sleep(30)")
            let timedOut = try await failure(request(entities: slow, output: .init(connection: "local_files", path: "d.csv")), by: editor)
            #expect(timedOut?.contains("57014") == true, "\(String(describing: timedOut))")
            // The offline store's credentials run no entity query unless the agent's settings allow it.
            let onStore = try await failure(request(query: "on_the_offline_store", output: .init(connection: "local_files", path: "e.csv")), by: consumer)
            #expect(onStore?.contains("entity_queries_on_offline_store") == true, "\(String(describing: onStore))")

            // 3. Outputs: shapes the control plane can see are refused there, with the field.
            for path in ["../labels.csv", "/etc/passwd", "a/../../b.csv", "./x.csv", "a//b.csv", "", "x\u{1}.csv"] {
                let problem = try await refusal(request(output: .init(connection: "local_files", path: path)), by: consumer)
                #expect(problem?.status == 400 && problem?.field == "output.path", "\(path): \(String(describing: problem))")
            }
            for table in ["larder_offline.driver_hourly_stats__v1;drop", "a.b.c", "Evil"] {
                let problem = try await refusal(request(output: .init(connection: "rides_db", table: table)), by: consumer)
                #expect(problem?.status == 400 && problem?.field == "output.table", "\(table): \(String(describing: problem))")
            }
            // The rest fails the job with a clear message, and changes nothing.
            let refusedOutputs: [(DatasetLocation, String)] = [
                (.init(connection: "local_files", path: "existing"), "exists already"),
                (.init(connection: "local_files", path: "kept.csv"), "exists already"),
                (.init(connection: "local_files", path: "escape/labels.csv"), "leads out"),
                (.init(connection: "local_files", path: "escape/new.csv"), "leads out"),
                (.init(connection: "warehouse", table: "t"), "takes no datasets"),
                (.init(connection: "rides_db", table: "larder_offline.driver_hourly_stats__v9"), "go to the schema ml"),
                (.init(connection: "rides_db", table: "public.evil"), "go to the schema ml"),
                (.init(connection: "rides_db", path: "x.csv"), "not files"),
                (.init(connection: "nowhere", path: "x.csv"), "no connection"),
            ]
            for (output, expected) in refusedOutputs {
                let message = try await failure(request(output: output), by: consumer)
                #expect(message?.contains(expected) == true, "\(output): \(String(describing: message))")
            }
            #expect(Self.tree(world.files) == filesBefore)
            let relationsAfter = try await Self.relations(world)
            #expect(relationsAfter == relationsBefore, "\(Set(relationsAfter).symmetricDifference(relationsBefore))")

            // 4. What is allowed works: a declared query to a new file and a new table, in the datasets folder and schema.
            let allowed = try await failure(request(query: "labelled_drivers", output: .init(connection: "local_files", path: "runs/ok.csv")), by: consumer)
            #expect(allowed == nil, "\(allowed ?? "")")
            let written = try String(contentsOf: datasets.appendingPathComponent("runs/ok.csv"), encoding: .utf8)
            #expect(written.split(separator: "\n").count == 31, "\(written.prefix(300))")
            #expect(try await failure(request(query: "labelled_drivers", output: .init(connection: "rides_db", table: "ok")), by: consumer) == nil)
            #expect(try await world.count("SELECT count(*)::int FROM ml.ok") == 30)
            // A second run to the same file or table is refused, and the first stays as it was.
            let again = try await failure(request(query: "labelled_drivers", output: .init(connection: "local_files", path: "runs/ok.csv")), by: consumer)
            #expect(again?.contains("exists already") == true)
            #expect(try String(contentsOf: datasets.appendingPathComponent("runs/ok.csv"), encoding: .utf8) == written)
            #expect(try await sequenceValue() == 0)

            // 5. What dataset jobs wrote is never read back as a feature source: a consumer cannot feed a view.
            try await RepositoryFixture.example(workspace: workspace).unscheduled().adding("queries.yaml", queries).adding("fed.yaml", """
                kind: FileSource
                name: fed_by_datasets
                connection: local_files
                paths:
                  - datasets/runs/*.csv
                timestamp_field: event_timestamp
                columns:
                  driver_id: int64
                  trip_distance_km: float64
                ---
                kind: FeatureView
                name: fed
                entities: [driver]
                source: fed_by_datasets
                feature_start_time: 2025-01-01T00:00:00Z
                features:
                  - name: trip_distance_km
                    type: float64

                """).apply(to: workspace, with: world.jobs.admin)
            let fed = try await world.materialize("fed", hours: 0..<24)
            #expect(fed.job.state == .failed)
            let chunk = try #require(try await world.jobs.chunks(of: fed.job.id).first)
            #expect(chunk.failure?.message.contains("datasets folder") == true, "\(String(describing: chunk.failure))")
            #expect(try await world.count("SELECT count(*)::int FROM pg_tables WHERE tablename LIKE '%fed__v1%'") == 0)
            #expect(await agent.stop() == 0)
        }
    }

    @Test("stolen tokens: a model server's data-plane token sniffed at an agent gets nothing from the control plane; control-plane tokens are unknown to agents; an agent's own token reads no features")
    func stolenTokens() async throws {
        try await MaterializationProcessTests.withWorld(drivers: 10, hours: 24, trips: 200) { world in
            let workspace = JobsWorld.workspace
            let environment = ["LARDER_URL": world.jobs.server.baseURL, "LARDER_WORKSPACE": workspace]
            func larder(_ arguments: [String], token: String) async throws -> LarderBinary.Result {
                try await LarderBinary.run(arguments, in: world.jobs.folder, environment: environment.merging(["LARDER_TOKEN": token]) { $1 })
            }
            let admin = try #require(world.jobs.admin.token)
            let created = try await larder(["service-accounts", "create", "model-server", "--role", "consumer", "--token"], token: admin)
            let line = try #require(created.standardOutput.split(separator: "\n").first { $0.hasPrefix("token (shown only now): ") })
            let model = String(line.dropFirst("token (shown only now): ".count))
            let agent = try world.startAgent()
            let job = try await world.materialize("driver_hourly_stats", hours: 0..<24)
            #expect(job.job.state == .succeeded, "\(agent.log.suffix(2_000))")
            let server = try await FeatureServerCaller.waitForAddress(dataDirectory: world.dataDirectory)
            let read = #"{"features":["driver_hourly_stats:conv_rate"],"entities":[{"driver_id":1001}]}"#
            // The model server reads features with it (once the agent holds a snapshot with it).
            var status = 0
            let deadline = Date().addingTimeInterval(20)
            while status != 200, Date() < deadline {
                status = try await server.call(body: read, token: model).status
                if status != 200 { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(status == 200)
            // Replayed against the control plane: whoami only; every other route refused, nothing created.
            #expect(try await larder(["whoami"], token: model).standardOutput.contains("model-server"))
            for arguments in [
                ["jobs", "ls"], ["datasets", "create", "--service", "driver_ranking", "--entities", "local_files:x.csv", "--out", "local_files:y.csv"],
                ["tokens", "create"], ["materialize", "driver_hourly_stats", "--start", "2025-01-01T00:00:00Z", "--end", "2025-01-01T01:00:00Z"],
                ["access", "ls"],
            ] {
                let answer = try await larder(arguments, token: model)
                #expect(answer.status != 0 && answer.standardError.contains("token-audience"), "\(arguments): \(answer.standardError)")
            }
            #expect(try await world.jobs.admin.tokens(of: "model-server").count == 1)
            // The admin's token, and an agent's, are unknown to the agent's feature server: never in its snapshot.
            #expect(try await server.call(body: read, token: admin).status == 401)
            #expect(try await server.call(body: read, token: try #require(world.jobs.agentTokens["agent-1"])).status == 401)
            #expect(await agent.stop() == 0)
        }
    }
}

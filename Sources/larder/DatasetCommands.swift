import ArgumentParser
import Foundation
import Shared

/// `larder datasets create|ls|describe`: training datasets built by an agent,
/// where the data is; the control plane keeps their metadata, never their values.
struct DatasetsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "datasets", abstract: "Build point-in-time correct training datasets on an agent, and list them.",
        subcommands: [Create.self, List.self, Describe.self], defaultSubcommand: List.self)

    /// `CONNECTION:REST`, as the options take a location on the agent's side.
    static func location(_ text: String, option: String, example: String) throws -> (connection: String, rest: String) {
        guard let colon = text.firstIndex(of: ":"), colon != text.startIndex, text.index(after: colon) != text.endIndex else {
            throw ValidationError("\(option) takes CONNECTION:\(example), a connection of the agent's configuration; got '\(text)'")
        }
        return (String(text[..<colon]), String(text[text.index(after: colon)...]))
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Queue a training dataset for an agent of the workspace (consumer role).",
            discussion: """
                The entity table and the output are on the agent's side, in connections of its configuration: a CSV file in a \
                folder connection (--entities local_files:labels.csv), or the rows of a query in a PostgreSQL connection \
                (--entity-query active_drivers, an EntityQuery of the repository; free SQL with --entities-query \
                'warehouse:SELECT driver_id, event_timestamp, label FROM labels' needs the operator role); the output a new CSV \
                file in the connection's datasets folder (--out local_files:training.csv) or a new table in its datasets schema \
                (--out-table warehouse:training_set). See docs/point-in-time.md.
                """)
        @OptionGroup var server: ServerOptions
        @Option(help: "The feature service.") var service: String?
        @Option(help: "Feature references instead of a service, comma-separated (view:feature or view).") var features: String?
        @Option(help: "The entity table: CONNECTION:PATH of a CSV file on the agent.") var entities: String?
        @Option(help: "The entity table from a named entity query of the workspace (an EntityQuery definition).") var entityQuery: String?
        @Option(help: "The entity table as free SQL (operators): CONNECTION:SQL in a PostgreSQL connection of the agent.") var entitiesQuery: String?
        @Option(help: "Where to write the dataset: CONNECTION:PATH of a new CSV file in the connection's datasets folder.") var out: String?
        @Option(help: "Where to write the dataset instead: CONNECTION:TABLE, a new table in the connection's datasets schema.") var outTable: String?
        @Option(help: "The entity table's timestamp column.") var timestampColumn = "event_timestamp"
        @Flag(help: "Take timestamps without a UTC offset as UTC (otherwise they are refused).") var assumeUtc = false
        @Option(help: "Only agents of this environment build it.") var environment: String?
        @Flag(help: "Wait until the dataset is built (or the job fails) and print its metadata.") var wait = false
        @Flag(help: "Print JSON.") var json = false

        func request() throws -> CreateDatasetRequest {
            guard (service == nil) != (features == nil) else { throw ValidationError("give --service or --features, one of them") }
            guard [entities, entityQuery, entitiesQuery].compactMap({ $0 }).count == 1 else {
                throw ValidationError("give --entities, --entity-query or --entities-query, one of them")
            }
            guard (out == nil) != (outTable == nil) else { throw ValidationError("give --out or --out-table, one of them") }
            var source: DatasetLocation?
            if let entities {
                let (connection, path) = try DatasetsCommand.location(entities, option: "--entities", example: "PATH")
                source = DatasetLocation(connection: connection, path: path)
            } else if let entitiesQuery {
                let (connection, query) = try DatasetsCommand.location(entitiesQuery, option: "--entities-query", example: "SQL")
                source = DatasetLocation(connection: connection, query: query)
            }
            let target: DatasetLocation
            if let out {
                let (connection, path) = try DatasetsCommand.location(out, option: "--out", example: "PATH")
                target = DatasetLocation(connection: connection, path: path)
            } else {
                let (connection, table) = try DatasetsCommand.location(outTable!, option: "--out-table", example: "TABLE")
                target = DatasetLocation(connection: connection, table: table)
            }
            let request = CreateDatasetRequest(
                featureService: service, features: features?.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) },
                entities: source, entityQuery: entityQuery, output: target, timestampColumn: timestampColumn, assumeUtc: assumeUtc ? true : nil, environment: environment)
            if let (field, detail) = request.problem { throw ValidationError("\(field): \(detail)") }
            return request
        }

        func run() async throws {
            let request = try request()
            try await CLIOutput.reportingErrors {
                let client = try server.client()
                let workspace = try server.workspaceName()
                var job = try await client.createDataset(request, workspace: workspace)
                if !wait {
                    if json { return try CLIOutput.json(job) }
                    print("queued dataset job \(job.id) → \(request.output)")
                    print("follow it with: larder datasets describe \(job.id)")
                    return
                }
                while !job.state.isTerminal {
                    try await Task.sleep(for: .milliseconds(500))
                    job = try await client.job(job.id, workspace: workspace).job
                }
                if json { return try CLIOutput.json(job) }
                DatasetsCommand.show(job)
                if job.state != .succeeded { throw ExitCode(1) }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the workspace's datasets, newest first.")
        @OptionGroup var server: ServerOptions
        @Option(help: "At most this many.") var limit: Int = 50
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let page = try await try server.client().jobs(workspace: try server.workspaceName(), kind: .dataset, limit: limit)
                if json { return try CLIOutput.json(page.items) }
                Swift.print(CLIOutput.table(
                    ["ID", "STATE", "FEATURES", "ENTITIES", "OUTPUT", "ROWS", "CREATED"],
                    page.items.map { job in
                        [String(job.id), JobText.state(job), DatasetsCommand.features(job), job.dataset.map(DatasetsCommand.entities) ?? "-",
                         job.dataset.map { "\($0.output)" } ?? "-", job.metrics?.dataset.map { "\($0.rows)" } ?? "-", JobText.time(job.createdAt)]
                    }))
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "describe", abstract: "Show a dataset: what was asked and what was built.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The dataset job's id.") var id: Int64
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let job = try await try server.client().job(id, workspace: try server.workspaceName()).job
                guard job.kind == .dataset else { throw ValidationError("job \(id) is a \(job.kind.rawValue) job, not a dataset") }
                if json { return try CLIOutput.json(job) }
                DatasetsCommand.show(job)
            }
        }
    }

    static func features(_ job: JobResource) -> String {
        guard let request = job.dataset else { return "-" }
        return request.featureService ?? (request.features ?? []).joined(separator: ",")
    }

    /// Where a dataset's entity rows come from, in a few words.
    static func entities(_ request: CreateDatasetRequest) -> String {
        if let name = request.entityQuery { return "query \(name)" }
        return request.entities.map { "\($0)" } ?? "-"
    }

    static func show(_ job: JobResource) {
        Swift.print("dataset \(job.id): \(JobText.state(job))")
        if let request = job.dataset {
            Swift.print("features:   \(features(job))")
            Swift.print("entities:   \(request.entities?.query.map { "\(request.entities!.connection): \($0)" } ?? DatasetsCommand.entities(request))")
            Swift.print("output:     \(request.output)")
        }
        if let metadata = job.metrics?.dataset {
            Swift.print("rows:       \(metadata.rows)")
            Swift.print("time range: \(metadata.earliest.map(JobText.time) ?? "-") … \(metadata.latest.map(JobText.time) ?? "-")")
            Swift.print("views:      \(metadata.views.map { "\($0.view) v\($0.version)" }.joined(separator: ", ")) (registry revision \(metadata.registryRevision))")
            Swift.print("sha256:     \(metadata.sha256)")
            Swift.print("columns:")
            for column in metadata.columns { Swift.print("  \(column.name)  \(column.type)") }
        }
        if let failure = job.failure, job.state != .succeeded { Swift.print("error:      \(failure.message)") }
        if !job.state.isTerminal { Swift.print("follow it with: larder datasets describe \(job.id)") }
    }
}

import ArgumentParser
import Foundation
import Shared

/// `larder agents ls`.
struct AgentsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agents", abstract: "Enroll, register, show and remove a workspace's data-plane agents.",
        subcommands: [List.self, EnrollToken.self, Create.self, Remove.self], defaultSubcommand: List.self)

    struct EnrollToken: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "enroll-token",
            abstract: "Create a one-time enrollment token for installing an agent (workspace owners and admins).",
            discussion: "On the agent's host: larder-agent enroll --url <control plane> --token <token> --data-dir <dir>")
        @OptionGroup var server: ServerOptions
        @Option(help: "The environment the agent runs in, such as prod-eu.") var environment: String
        @Option(help: "The agent's name (default: <environment>-<random>).") var agent: String?
        @Option(help: "How long the token may be used, such as 30m or 1h (at most 7d).") var ttl: String = "1h"

        func run() async throws {
            guard let span = try? TimeSpan.parse(ttl), span.seconds > 0 else { throw ValidationError("--ttl takes a duration such as 30m or 1h") }
            try await CLIOutput.reportingErrors {
                let client = try server.client()
                let workspace = try server.workspaceName()
                let created = try await client.createEnrollmentToken(
                    CreateEnrollmentTokenRequest(environment: environment, agent: agent, ttlSeconds: span.seconds), workspace: workspace)
                print("enrollment token for an agent of \(workspace) (\(environment)), usable once until \(JobText.time(created.expiresAt)):")
                print(created.token)
                print("control plane key fingerprint (larder-agent enroll prints it too; they must match): \(created.keyFingerprint)")
                print("on the agent's host: larder-agent enroll --url \(client.baseURL) --token <the token> --data-dir /var/lib/larder-agent"
                    + " --expect-fingerprint \(created.keyFingerprint)")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "remove", abstract: "Remove an agent: disabled and its tokens revoked at once; its running jobs are queued again.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The agent's name.") var name: String

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let workspace = try server.workspaceName()
                try await try server.client().removeAgent(name, workspace: workspace)
                print("removed agent \(name) of \(workspace): its tokens no longer work")
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Register an agent of the workspace for one environment (admins), with a first token.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The agent's name, such as agent-eu-1.") var name: String
        @Option(help: "The environment it runs in, such as prod-eu.") var environment: String

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let client = try server.client()
                let workspace = try server.workspaceName()
                _ = try await client.createAgent(name: name, environment: environment, workspace: workspace)
                let token = try await client.createToken(for: name, description: "agent token")
                print("registered agent \(name) of \(workspace) (\(environment))")
                print("token (shown only now; give it to the agent as LARDER_AGENT_TOKEN or token_file): \(token.token)")
                print("pin the control plane's key in the agent's configuration: larder-control key prints it")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the agents, their status and what they run.")
        @OptionGroup var server: ServerOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let agents = try await try server.client().agents(workspace: try server.workspaceName())
                if json { return try CLIOutput.json(agents) }
                print(CLIOutput.table(
                    ["NAME", "ENVIRONMENT", "STATUS", "LAST SEEN", "VERSION", "HOST", "RUNS", "ACTIVE JOBS"],
                    agents.map {
                        [$0.name, $0.environment, $0.status, $0.lastSeenAt.map(JobText.time) ?? "-", $0.version ?? "-", $0.hostname ?? "-",
                         $0.capabilities.isEmpty ? "-" : $0.capabilities.map(\.rawValue).joined(separator: ","), "\($0.activeJobs)"]
                    }))
            }
        }
    }
}

/// `larder jobs ls|describe|cancel|retry`.
struct JobsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jobs", abstract: "Inspect, cancel and retry a workspace's jobs.",
        subcommands: [List.self, Describe.self, Cancel.self, Retry.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List jobs, newest first.")
        @OptionGroup var server: ServerOptions
        @Option(help: "Only jobs in this state: queued, leased, running, succeeded, failed or cancelled.") var state: String?
        @Option(help: "Only jobs of this feature view.") var view: String?
        @Option(help: "Only jobs of this kind: materialize, backfill or dataset.") var kind: String?
        @Option(help: "Only the chunks of this backfill.") var parent: Int64?
        @Option(help: "Only jobs of this environment.") var environment: String?
        @Option(help: "At most this many jobs.") var limit: Int = 50
        @Flag(help: "Print JSON.") var json = false

        func validate() throws {
            if let state, JobState(rawValue: state) == nil {
                throw ValidationError("--state must be one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if let kind, JobKind(rawValue: kind) == nil {
                throw ValidationError("--kind must be one of \(JobKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard (1...1_000).contains(limit) else { throw ValidationError("--limit must be from 1 to 1000") }
        }

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let page = try await try server.client().jobs(
                    workspace: try server.workspaceName(), state: state.flatMap(JobState.init(rawValue:)), view: view,
                    kind: kind.flatMap(JobKind.init(rawValue:)), parent: parent, environment: environment, limit: limit)
                if json { return try CLIOutput.json(page.items) }
                print(CLIOutput.table(
                    ["ID", "KIND", "STATE", "VIEW", "ENVIRONMENT", "INTERVAL", "ATTEMPTS | CHUNKS", "AGENT", "TRIGGER"],
                    page.items.map { job in
                        [String(job.id), job.kind.rawValue, JobText.state(job), job.featureView.map { v in job.version.map { "\(v) v\($0)" } ?? v } ?? "-",
                         job.environment ?? "-", JobText.interval(job), job.kind == .backfill ? JobText.chunks(job) : "\(job.attempts)/\(job.maxAttempts)",
                         job.agent ?? "-", job.trigger]
                    }))
                if page.nextCursor != nil { print("(more: raise --limit or filter with --state, --view or --kind)") }
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "describe", abstract: "Show a job with its attempts, errors and events.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The job's id.") var id: Int64
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let detail = try await try server.client().job(id, workspace: try server.workspaceName())
                if json { return try CLIOutput.json(detail) }
                let job = detail.job
                print("job \(job.id): \(job.kind.rawValue), \(JobText.state(job))")
                if let view = job.featureView { print("feature view: \(view)\(job.version.map { " v\($0)" } ?? "")") }
                if job.start != nil { print("interval:     \(JobText.interval(job))") }
                if let parent = job.parentId { print("backfill:     \(parent)") }
                if let environment = job.environment { print("environment:  \(environment)") }
                print("trigger:      \(job.trigger)")
                if job.kind == .backfill {
                    print("chunks:       \(JobText.chunks(job))")
                } else {
                    print("attempts:     \(job.attempts) of \(job.maxAttempts)")
                }
                if let notBefore = job.notBefore, notBefore > Date() { print("not before:   \(JobText.time(notBefore))") }
                if let agent = job.agent { print("agent:        \(agent) (lease until \(job.leaseExpiresAt.map(JobText.time) ?? "-"))") }
                if let progress = job.progress {
                    print("progress:     \(progress.phase)\(progress.fraction.map { String(format: " %.0f%%", $0 * 100) } ?? "")")
                }
                if let metrics = job.metrics {
                    print("metrics:      \(metrics.rowsRead) rows read, \(metrics.rowsWritten) written"
                        + (metrics.watermark.map { ", watermark \(JobText.time($0))" } ?? ""))
                    for feature in metrics.features {
                        let numbers = [feature.min.map { "min \($0)" }, feature.max.map { "max \($0)" }, feature.mean.map { "mean \($0)" }]
                            .compactMap { $0 }.joined(separator: ", ")
                        let outside = feature.disallowedCount.map { ", \($0) not allowed" } ?? ""
                        print("  \(feature.feature): \(feature.count) values, \(feature.nullCount) null\(numbers.isEmpty ? "" : ", " + numbers)\(outside)")
                    }
                    if let report = metrics.expectations {
                        print("expectations: \(report.violations.count) of \(report.results.count) violated (policy \(report.policy.rawValue))")
                        for result in report.results { print("  \(result.passed ? "ok  " : "FAIL")  \(result.summary)") }
                    }
                }
                if let failure = job.failure { print("last error:   \(failure.message)\(failure.retryable ? " (retryable)" : "")") }
                if !detail.attempts.isEmpty {
                    print("\nattempts:")
                    print(CLIOutput.table(
                        ["#", "AGENT", "CLAIMED", "ENDED", "OUTCOME", "ERROR"],
                        detail.attempts.map {
                            ["\($0.attempt)", $0.agent, JobText.time($0.claimedAt), $0.endedAt.map(JobText.time) ?? "-", $0.outcome,
                             $0.failure?.message ?? ""]
                        }))
                }
                print("\nevents:")
                for event in detail.events { print("  \(JobText.time(event.at))  \(event.event)\(event.detail.map { "  \($0)" } ?? "")") }
            }
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cancel", abstract: "Cancel a job (operators); a running one stops when its agent next checks in.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The job's id.") var id: Int64

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let job = try await try server.client().cancelJob(id, workspace: try server.workspaceName())
                print(job.state == .cancelled ? "cancelled job \(id)" : "asked the agent running job \(id) to stop; it is \(JobText.state(job))")
            }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "retry", abstract: "Queue a finished job again (operators); a backfill retries its failed and cancelled chunks.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The job's id.") var id: Int64

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let job = try await try server.client().retryJob(id, workspace: try server.workspaceName())
                print("job \(id) is \(JobText.state(job)) again\(job.kind == .backfill ? " (\(JobText.chunks(job)))" : "")")
            }
        }
    }
}

/// `larder materialize VIEW --start --end`.
struct MaterializeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "materialize",
        abstract: "Materialize a feature view over a range of event time, in chunks (operators).",
        discussion: "Queues a backfill of the view's current version; agents of the workspace run its chunks. Intervals already queued, running or done are skipped.")
    @OptionGroup var server: ServerOptions
    @Argument(help: "The feature view.") var view: String
    @Option(help: "The first instant, RFC 3339 (2025-01-01T00:00:00Z).") var start: String
    @Option(help: "The first instant not to materialize, RFC 3339.") var end: String
    @Option(help: "The length of each chunk, such as 6h or 1d (default: the control plane's).") var chunk: String?
    @Option(help: "Only this environment (default: every environment of the workspace, each for its own stores).") var environment: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        guard let from = RFC3339.parse(start) else { throw ValidationError("--start '\(start)' is not an RFC 3339 time such as 2025-01-01T00:00:00Z") }
        guard let to = RFC3339.parse(end) else { throw ValidationError("--end '\(end)' is not an RFC 3339 time such as 2025-01-02T00:00:00Z") }
        try await CLIOutput.reportingErrors {
            let response = try await try server.client().materialize(
                MaterializeRequest(featureView: view, start: from, end: to, chunk: chunk, environment: environment),
                workspace: try server.workspaceName())
            if json { return try CLIOutput.json(response) }
            let places = response.backfills.map { "\($0.id) (\($0.environment ?? "any environment"))" }.joined(separator: ", ")
            print("queued backfill\(response.backfills.count == 1 ? "" : "s") \(places) of \(view): \(response.chunksQueued) chunk(s)"
                + (response.chunksSkipped > 0 ? ", \(response.chunksSkipped) skipped (already queued, running or done)" : ""))
            print("follow it with: larder jobs describe \(response.backfill.id)")
        }
    }
}

/// How jobs are shown.
enum JobText {
    static func time(_ date: Date) -> String { RFC3339.format(date) }

    static func interval(_ job: JobResource) -> String {
        guard let start = job.start, let end = job.end else { return "-" }
        return "[\(time(start)), \(time(end)))"
    }

    static func state(_ job: JobResource) -> String {
        job.cancelRequested && !job.state.isTerminal ? "\(job.state.rawValue) (cancelling)" : job.state.rawValue
    }

    static func chunks(_ job: JobResource) -> String {
        guard let chunks = job.chunks, !chunks.isEmpty else { return "no chunks" }
        return JobState.allCases.compactMap { state in chunks[state.rawValue].map { "\($0) \(state.rawValue)" } }.joined(separator: ", ")
    }
}

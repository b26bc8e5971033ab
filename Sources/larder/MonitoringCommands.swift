import ArgumentParser
import Foundation
import Shared

/// `larder status`: each feature view's freshness against its SLO.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show each feature view's freshness against its SLO, and the workspace's open alerts.")
    @OptionGroup var server: ServerOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await CLIOutput.reportingErrors {
            let client = try server.client()
            let workspace = try server.workspaceName()
            let views = try await client.freshness(workspace: workspace)
            if json { return try CLIOutput.json(views) }
            print(CLIOutput.table(
                ["VIEW", "VERSION", "ENVIRONMENT", "STATE", "MATERIALIZED TO", "BEHIND", "SLO"],
                views.map {
                    [$0.view, "v\($0.version)", $0.environment ?? "-", $0.state.rawValue, $0.watermark.map(JobText.time) ?? "-",
                     $0.stalenessSeconds.map(TimeSpan.approximate) ?? "-", $0.expectedSeconds.map(TimeSpan.approximate) ?? "-"]
                }))
            let alerts = try await client.alerts(workspace: workspace)
            print(alerts.isEmpty ? "\nno open alerts" : "\nopen alerts:")
            for alert in alerts { print("  \(JobText.time(alert.openedAt))  \(alert.kind)  \(alert.detail)") }
        }
    }
}

/// `larder expectations`: each view's data-quality results in its newest evaluated job.
struct ExpectationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "expectations",
        abstract: "Show the data-quality expectations of each feature view and how its newest materialization met them.")
    @OptionGroup var server: ServerOptions
    @Argument(help: "Only this feature view.") var view: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await CLIOutput.reportingErrors {
            let workspace = try server.workspaceName()
            var views = try await try server.client().expectations(workspace: workspace)
            if let view {
                views = views.filter { $0.view == view }
                guard !views.isEmpty else {
                    CLIOutput.error("error: feature view '\(view)' of workspace \(workspace) declares no expectations (or does not exist)")
                    throw ExitCode(1)
                }
            }
            if json { return try CLIOutput.json(views) }
            guard !views.isEmpty else { return print("no feature view of workspace \(workspace) declares expectations") }
            print(CLIOutput.table(
                ["VIEW", "VERSION", "POLICY", "STATE", "JOB", "CHECKED", "VIOLATED"],
                views.map {
                    [$0.view, "v\($0.version)", $0.policy.rawValue, $0.state.rawValue, $0.job.map(String.init) ?? "-",
                     $0.finishedAt.map(JobText.time) ?? "-", "\($0.results.filter { !$0.passed }.count) of \($0.results.count)"]
                }))
            for quality in views where !quality.results.isEmpty {
                print("\n\(quality.view) (job \(quality.job ?? 0)):")
                for result in quality.results { print("  \(result.passed ? "ok  " : "FAIL")  \(result.summary)") }
            }
        }
    }
}

/// `larder alerts`: open alerts (or all) of the workspaces the caller may view.
struct AlertsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "alerts", abstract: "List alerts, newest first: open ones unless --all.")
    @OptionGroup var server: ServerOptions
    @Flag(help: "Resolved alerts too.") var all = false
    @Option(help: "At most this many.") var limit: Int = 100
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await CLIOutput.reportingErrors {
            let workspace = server.workspace ?? ProcessInfo.processInfo.environment["LARDER_WORKSPACE"]
            let alerts = try await try server.client().alerts(workspace: workspace, all: all, limit: limit)
            if json { return try CLIOutput.json(alerts) }
            print(CLIOutput.table(
                ["ID", "WORKSPACE", "KIND", "SUBJECT", "OPENED", "RESOLVED", "DETAIL"],
                alerts.map {
                    [String($0.id), $0.workspace, $0.kind, $0.subject, JobText.time($0.openedAt), $0.resolvedAt.map(JobText.time) ?? "open",
                     $0.resolvedDetail ?? $0.detail]
                }))
        }
    }
}

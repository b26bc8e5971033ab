import ArgumentParser
import Foundation
import Shared

/// `larder environments ls|create|describe|delete`.
struct EnvironmentsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "environments",
        abstract: "Create, show and delete a workspace's environments (where its agents run, each with its own stores).",
        subcommands: [List.self, Create.self, Describe.self, Delete.self], defaultSubcommand: List.self)

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Create an environment (workspace owners).",
            discussion: """
                Every materialization is queued once per environment, so each environment's offline and online stores end complete. \
                With --online-store embedded (the default) the environment has one agent, which keeps the online store in its own \
                memory and disk; with redis, any number of agents share one Redis, run its jobs and serve.
                """)
        @OptionGroup var server: ServerOptions
        @Argument(help: "Its name, such as prod or staging-eu.") var name: String
        @Option(help: "Its online store: embedded or redis.") var onlineStore: String = OnlineStoreKind.embedded.rawValue
        @Option(help: "What it is for.") var description: String?
        @Flag(help: "Print JSON.") var json = false

        func validate() throws {
            guard OnlineStoreKind(rawValue: onlineStore) != nil else {
                throw ValidationError("--online-store must be one of \(OnlineStoreKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let workspace = try server.workspaceName()
                let created = try await try server.client().createEnvironment(
                    CreateEnvironmentRequest(name: name, onlineStore: OnlineStoreKind(rawValue: onlineStore), description: description),
                    workspace: workspace)
                if json { return try CLIOutput.json(created) }
                print("created environment \(created.name) of \(workspace) (online store: \(created.onlineStore.rawValue))")
                print("enroll its agents with: larder agents enroll-token -w \(workspace) --environment \(created.name)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the environments and their agents.")
        @OptionGroup var server: ServerOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let environments = try await try server.client().environments(workspace: try server.workspaceName())
                if json { return try CLIOutput.json(environments) }
                print(CLIOutput.table(
                    ["NAME", "ONLINE STORE", "AGENTS", "ONLINE", "ACTIVE JOBS", "DESCRIPTION"],
                    environments.map {
                        [$0.name, $0.onlineStore.rawValue, "\($0.agents.count)", "\($0.agents.filter { $0.status == "online" }.count)",
                         "\($0.activeJobs)", $0.description.isEmpty ? "-" : $0.description]
                    }))
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "describe", abstract: "Show an environment with its agents.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The environment's name.") var name: String
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let environment = try await try server.client().environment(name, workspace: try server.workspaceName())
                if json { return try CLIOutput.json(environment) }
                print("environment:  \(environment.name)")
                print("workspace:    \(environment.workspace)")
                print("online store: \(environment.onlineStore.rawValue)"
                    + (environment.onlineStore == .embedded ? " (one agent: \(environment.writer ?? "none yet"))" : " (shared by its agents)"))
                if !environment.description.isEmpty { print("description:  \(environment.description)") }
                print("active jobs:  \(environment.activeJobs)")
                print("created:      \(JobText.time(environment.createdAt)) by \(environment.createdBy)")
                guard !environment.agents.isEmpty else { return print("agents:       none") }
                print("agents:")
                print(CLIOutput.table(
                    ["NAME", "STATUS", "LAST SEEN", "VERSION", "HOST", "ACTIVE JOBS"],
                    environment.agents.map {
                        [$0.name, $0.status, $0.lastSeenAt.map(JobText.time) ?? "-", $0.version ?? "-", $0.hostname ?? "-", "\($0.activeJobs)"]
                    }))
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "delete", abstract: "Delete an environment without agents, with its queued jobs (workspace owners).")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The environment's name.") var name: String

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let workspace = try server.workspaceName()
                try await try server.client().deleteEnvironment(name, workspace: workspace)
                print("deleted environment \(name) of \(workspace)")
            }
        }
    }
}

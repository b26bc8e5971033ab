import ArgumentParser
import Foundation
import Shared

/// `larder workspaces …`.
struct WorkspacesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workspaces", abstract: "Create, list and delete workspaces.",
        subcommands: [Create.self, List.self, Delete.self], defaultSubcommand: List.self)

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a workspace.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The workspace's name.") var name: String
        @Option(help: "A description.") var description: String?

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let workspace = try await try server.client().createWorkspace(name, description: description)
                print("created workspace '\(workspace.name)'")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List workspaces.")
        @OptionGroup var server: ServerOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await CLIOutput.reportingErrors {
                let workspaces = try await try server.client().workspaces()
                if json { return try CLIOutput.json(workspaces) }
                print(CLIOutput.table(
                    ["NAME", "OBJECTS", "REVISION", "DESCRIPTION"],
                    workspaces.map { [$0.name, "\($0.objectCount)", "\($0.revision)", $0.description ?? ""] }))
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a workspace that has no current objects.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The workspace's name.") var name: String

        func run() async throws {
            try await CLIOutput.reportingErrors {
                try await try server.client().deleteWorkspace(name)
                print("deleted workspace '\(name)'")
            }
        }
    }
}

/// Reads a repository folder, validating it locally first.
func readRepository(_ directory: String) throws -> (config: RepositoryConfig, files: [RepositoryFile]) {
    let root = URL(fileURLWithPath: directory)
    let loaded = RepositoryLoader.load(directory: root)
    guard loaded.isValid else {
        CLIOutput.error(ValidationReport(loaded).text(pathPrefix: directory))
        throw ExitCode(1)
    }
    let files = try loaded.files.map { path in
        RepositoryFile(path: path, contents: try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8))
    }
    return (loaded.repository.config, files)
}

/// `larder plan [dir]`.
struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan", abstract: "Show what applying the repository would change, with field diffs and downstream impact.")
    @OptionGroup var server: ServerOptions
    @Argument(help: "The repository folder.") var directory: String = "."
    @Flag(help: "Print the plan as JSON.") var json = false

    func run() async throws {
        let (config, files) = try readRepository(directory)
        try await CLIOutput.reportingErrors {
            let plan = try await try server.client(config: config).plan(workspace: try server.workspaceName(config: config), files: files)
            if json { return try CLIOutput.json(plan) }
            print(PlanText.render(plan))
        }
    }
}

/// `larder apply [dir]`.
struct ApplyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply", abstract: "Plan the repository, show the plan, and apply exactly that plan.")
    @OptionGroup var server: ServerOptions
    @Argument(help: "The repository folder.") var directory: String = "."
    @Flag(name: .shortAndLong, help: "Apply without asking.") var yes = false
    @Flag(help: "Print the apply as JSON.") var json = false

    func run() async throws {
        let (config, files) = try readRepository(directory)
        try await CLIOutput.reportingErrors {
            let client = try server.client(config: config)
            let workspace = try server.workspaceName(config: config)
            let plan = try await client.plan(workspace: workspace, files: files)
            if !json { print(PlanText.render(plan)) }
            guard plan.hasChanges else {
                if json { try CLIOutput.json(plan) }
                return
            }
            if !yes {
                print("\nApply this plan? Only 'yes' applies it: ", terminator: "")
                guard readLine()?.trimmingCharacters(in: .whitespaces).lowercased() == "yes" else {
                    print("not applied")
                    throw ExitCode(1)
                }
            }
            let applied = try await client.apply(workspace: workspace, planID: plan.id)
            if json { return try CLIOutput.json(applied) }
            print("\napplied: workspace '\(workspace)' is at revision \(applied.revision) (\(applied.changes.count) objects changed)")
        }
    }
}

/// `larder ls KIND`.
struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List a workspace's objects of one kind.")
    @OptionGroup var server: ServerOptions
    @Argument(help: "entities, sources, feature-views, on-demand-feature-views or feature-services.") var kind: String
    @Flag(help: "Include retired objects.") var retired = false
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let collection = try parseCollection(kind)
        try await CLIOutput.reportingErrors {
            let objects = try await try server.client().objects(
                workspace: try server.workspaceName(), collection: collection, includeRetired: retired)
            if json { return try CLIOutput.json(objects) }
            print(CLIOutput.table(
                ["KIND", "NAME", "VERSION", "OWNER", "DESCRIPTION"],
                objects.map {
                    [$0.kind.rawValue, $0.name, $0.currentVersion.map { "v\($0)" } ?? "retired", $0.owner ?? "", $0.description ?? ""]
                }))
        }
    }
}

/// `larder describe KIND NAME`.
struct DescribeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "describe", abstract: "Show an object, or one of its versions.")
    @OptionGroup var server: ServerOptions
    @Argument(help: "The object's kind.") var kind: String
    @Argument(help: "The object's name.") var name: String
    @Option(help: "Show this version instead of the current one.") var version: Int?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let collection = try parseCollection(kind)
        try await CLIOutput.reportingErrors {
            let client = try server.client()
            let workspace = try server.workspaceName()
            if let version {
                let found = try await client.version(version, workspace: workspace, collection: collection, name: name)
                if json { return try CLIOutput.json(found) }
                print("\(found.kind.rawValue) \(found.name) v\(found.version)\(found.isCurrent ? " (current)" : "")")
                print("content hash: \(found.contentHash)")
                print("created \(RFC3339.format(found.createdAt)) by \(found.createdBy)")
                if !found.upstream.isEmpty { print("reads: " + found.upstream.map { "\($0.kind.rawValue) \($0.name) v\($0.version)" }.joined(separator: ", ")) }
                print(String(decoding: try APICoding.makeEncoder(pretty: true).encode(found.spec), as: UTF8.self))
                return
            }
            let object = try await client.object(workspace: workspace, collection: collection, name: name)
            if json { return try CLIOutput.json(object) }
            print("\(object.kind.rawValue) \(object.name) " + (object.currentVersion.map { "v\($0)" } ?? "retired (latest v\(object.latestVersion))"))
            if let description = object.description { print("description: \(description)") }
            if let owner = object.owner { print("owner: \(owner)") }
            if !object.tags.isEmpty { print("tags: " + object.tags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")) }
            print("content hash: \(object.contentHash)")
            print(String(decoding: try APICoding.makeEncoder(pretty: true).encode(object.spec), as: UTF8.self))
        }
    }
}

/// `larder versions KIND NAME`.
struct VersionsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "versions", abstract: "List an object's versions.")
    @OptionGroup var server: ServerOptions
    @Argument(help: "The object's kind.") var kind: String
    @Argument(help: "The object's name.") var name: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let collection = try parseCollection(kind)
        try await CLIOutput.reportingErrors {
            let versions = try await try server.client().versions(workspace: try server.workspaceName(), collection: collection, name: name)
            if json { return try CLIOutput.json(versions) }
            print(CLIOutput.table(
                ["VERSION", "HASH", "CREATED", "BY", "READS"],
                versions.map {
                    ["v\($0.version)\($0.isCurrent ? " *" : "")", String($0.contentHash.prefix(12)), RFC3339.format($0.createdAt), $0.createdBy,
                     $0.upstream.map { "\($0.name) v\($0.version)" }.joined(separator: ", ")]
                }))
        }
    }
}

/// `larder lineage KIND NAME`.
struct LineageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lineage", abstract: "Show what an object reads, or what reads it.")
    @OptionGroup var server: ServerOptions
    @Argument(help: "The object's kind.") var kind: String
    @Argument(help: "The object's name.") var name: String
    @Flag(name: .customLong("up"), help: "Walk upstream: what it reads.") var upstream = false
    @Flag(name: .customLong("down"), help: "Walk downstream: what reads it (the default).") var downstream = false
    @Option(help: "How many steps to walk (1-20).") var depth = 5
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if upstream && downstream { throw ValidationError("--up and --down exclude each other") }
    }

    func run() async throws {
        let collection = try parseCollection(kind)
        try await CLIOutput.reportingErrors {
            let graph = try await try server.client().lineage(
                workspace: try server.workspaceName(), collection: collection, name: name,
                direction: upstream ? .upstream : .downstream, depth: depth)
            if json { return try CLIOutput.json(graph) }
            print(PlanText.render(graph))
        }
    }
}

/// `larder search TEXT`.
struct SearchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "search", abstract: "Search the catalog.")
    @OptionGroup var server: ServerOptions
    @Argument(help: "Words to look for (prefixes match).") var text: String = ""
    @Option(help: "Only this kind.") var kind: String?
    @Option(help: "Only objects with this tag: key or key=value.") var tag: String?
    @Option(help: "Only objects with this owner.") var owner: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await CLIOutput.reportingErrors {
            let results = try await try server.client().search(workspace: try server.workspaceName(), text: text, kind: kind, tag: tag, owner: owner)
            if json { return try CLIOutput.json(results) }
            print(CLIOutput.table(
                ["KIND", "NAME", "VERSION", "OWNER", "DESCRIPTION"],
                results.map { [$0.kind.rawValue, $0.name, "v\($0.currentVersion)", $0.owner ?? "", $0.description ?? ""] }))
        }
    }
}

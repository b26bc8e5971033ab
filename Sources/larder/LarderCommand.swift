import ArgumentParser
import Foundation
import Shared

/// `larder`: the command-line client of a Larder deployment.
@main
struct LarderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "larder",
        abstract: "Define, validate and apply feature repositories; inspect jobs and agents.",
        version: LarderVersion.description,
        subcommands: [
            InitCommand.self, ValidateCommand.self, PlanCommand.self, ApplyCommand.self, WorkspacesCommand.self, ListCommand.self,
            DescribeCommand.self, VersionsCommand.self, LineageCommand.self, SearchCommand.self, LoginCommand.self,
            WhoAmICommand.self, PrincipalsCommand.self, ServiceAccountsCommand.self, TokensCommand.self, AccessCommand.self,
            AuditCommand.self, EnvironmentsCommand.self, AgentsCommand.self, JobsCommand.self, MaterializeCommand.self, DatasetsCommand.self, StatusCommand.self, ExpectationsCommand.self, AlertsCommand.self,
        ]
    )
}

/// `larder init [dir]`: writes the example repository.
struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init", abstract: "Create a working example feature repository.")

    @Argument(help: "The folder to create the repository in.")
    var directory: String = "."

    @Flag(help: "Overwrite files that already exist.")
    var force = false

    func run() throws {
        let root = URL(fileURLWithPath: directory)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let existing = RepositoryScaffold.files.map(\.path).filter {
            FileManager.default.fileExists(atPath: root.appendingPathComponent($0).path)
        }
        if !existing.isEmpty, !force {
            throw ValidationError("\(directory) already has \(existing.joined(separator: ", ")); use --force to overwrite")
        }
        for file in RepositoryScaffold.files {
            try file.contents.write(to: root.appendingPathComponent(file.path), atomically: true, encoding: .utf8)
        }
        print("created a feature repository in \(directory) (\(RepositoryScaffold.files.count) files); next: larder validate \(directory)")
    }
}

/// `larder validate [dir]`: reports every mistake, or summarizes the objects.
struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate", abstract: "Check a feature repository and print its errors or a summary.")

    @Argument(help: "The repository folder.")
    var directory: String = "."

    @Flag(help: "Print the result as JSON.")
    var json = false

    func run() throws {
        let root = URL(fileURLWithPath: directory)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ValidationError("\(directory) is not a folder")
        }
        let report = ValidationReport(RepositoryLoader.load(directory: root))
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else if report.valid {
            print(report.text(pathPrefix: directory))
        } else {
            FileHandle.standardError.write(Data((report.text(pathPrefix: directory) + "\n").utf8))
        }
        if !report.valid { throw ExitCode(1) }
    }
}

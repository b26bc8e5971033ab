import ArgumentParser
import AsyncHTTPClient
import Foundation
import Shared

/// The CLI's HTTP client: like the shared one, but it gives up on an
/// unreachable server after 5 seconds instead of retrying for the whole
/// request timeout. It lives as long as the process.
enum CLIHTTP {
    /// Verifies the control plane against the system's trust store, or only against `LARDER_CA_FILE` when set.
    static let client: HTTPClient = {
        let caFile = ProcessInfo.processInfo.environment["LARDER_CA_FILE"].flatMap { $0.isEmpty ? nil : $0 }
        do { try ControlPlaneConnection.checkCAFile(caFile) } catch {
            CLIOutput.error("error: LARDER_CA_FILE: \(error)")
            exit(1)
        }
        return ControlPlaneConnection.makeHTTPClient(caFile: caFile)
    }()

    /// Refuses plain HTTP to another host unless `--allow-insecure-http` or `LARDER_ALLOW_INSECURE_HTTP=1`.
    static func check(_ url: String, allowInsecureHTTP: Bool) throws {
        do { try ControlPlaneConnection.check(url, allowInsecureHTTP: allowInsecureHTTP) } catch { throw ValidationError(error.description) }
    }
}

/// Options shared by the commands that talk to the control plane.
struct ServerOptions: ParsableArguments {
    @Option(name: .long, help: "The control plane's URL (default: LARDER_URL, then larder.yaml's control_plane, then http://127.0.0.1:7070).")
    var url: String?

    @Option(name: [.short, .long], help: "The workspace (default: LARDER_WORKSPACE, then larder.yaml's workspace).")
    var workspace: String?

    @Option(name: .customLong("repo"), help: "The repository folder whose larder.yaml supplies defaults.")
    var repository: String = "."

    @Flag(help: "Allow http:// to a control plane on another host (tokens cross the network unencrypted; LARDER_ALLOW_INSECURE_HTTP=1).")
    var allowInsecureHttp = false

    /// The repository's larder.yaml settings, if there is a readable one.
    var repositoryConfig: RepositoryConfig? {
        let file = URL(fileURLWithPath: repository).appendingPathComponent(RepositoryLoader.configFileName)
        guard let contents = try? String(contentsOf: file, encoding: .utf8) else { return nil }
        var diagnostics: [RepositoryDiagnostic] = []
        return RepositoryLoader.readConfig(contents, diagnostics: &diagnostics)
    }

    /// A client of the control plane: the URL from `--url`, `LARDER_URL`,
    /// `larder login`'s configuration, `larder.yaml`, or the default; the
    /// token from `LARDER_TOKEN` or `larder login`'s configuration.
    func client(config: RepositoryConfig? = nil) throws -> ControlPlaneClient {
        let environment = ProcessInfo.processInfo.environment
        let stored = CLIConfiguration.load()
        let base = url ?? environment["LARDER_URL"].flatMap { $0.isEmpty ? nil : $0 } ?? stored?.url
            ?? (config ?? repositoryConfig)?.controlPlaneURL ?? "http://127.0.0.1:7070"
        let token = environment["LARDER_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } ?? stored?.token
        try CLIHTTP.check(base, allowInsecureHTTP: allowInsecureHttp)
        return ControlPlaneClient(baseURL: base, token: token, httpClient: CLIHTTP.client)
    }

    func workspaceName(config: RepositoryConfig? = nil) throws -> String {
        if let workspace { return workspace }
        if let fromEnvironment = ProcessInfo.processInfo.environment["LARDER_WORKSPACE"], !fromEnvironment.isEmpty { return fromEnvironment }
        if let name = (config ?? repositoryConfig)?.workspace, !name.isEmpty { return name }
        throw ValidationError("no workspace: pass --workspace, set LARDER_WORKSPACE, or run inside a repository with a larder.yaml")
    }
}

/// Output helpers and error reporting shared by the commands.
enum CLIOutput {
    static func json<Value: Encodable>(_ value: Value) throws {
        print(String(decoding: try APICoding.makeEncoder(pretty: true).encode(value), as: UTF8.self))
    }

    static func error(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    /// Runs `body`, printing API and connection errors for a person and
    /// exiting 1 instead of dumping them.
    static func reportingErrors(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let problem as ProblemDetails {
            if let diagnostics = problem.diagnostics, !diagnostics.isEmpty {
                for diagnostic in diagnostics { error(diagnostic.description) }
                error("error: the control plane rejected the repository: \(diagnostics.count) error(s)")
            } else {
                var text = "error: \(problem.detail)"
                if let field = problem.field, !field.isEmpty { text += " (field: \(field))" }
                text += " [\(problem.code), HTTP \(problem.status)\(problem.requestId.map { ", request \($0)" } ?? "")]"
                error(text)
            }
            throw ExitCode(1)
        } catch let failure as ControlPlaneClientError {
            error("error: \(failure.description)")
            throw ExitCode(1)
        }
    }

    /// A table with aligned columns.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

/// Reads a kind argument such as `feature-views`, `views` or `FeatureView`.
func parseCollection(_ text: String) throws -> ObjectCollection {
    guard let collection = ObjectCollection(userSpelling: text) else {
        throw ValidationError("unknown kind '\(text)'; use one of " + ObjectCollection.allCases.map(\.rawValue).joined(separator: ", "))
    }
    return collection
}

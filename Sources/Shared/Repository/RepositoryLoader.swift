import Foundation
import Yams

/// A feature repository as read from its files, with every mistake found in it.
public struct LoadedRepository: Sendable {
    /// The definitions that could be read. When there are diagnostics this is
    /// partial: objects that could not be read are missing.
    public var repository: FeatureRepository
    /// Every mistake, sorted by file and position.
    public var diagnostics: [RepositoryDiagnostic]
    /// The files read, relative to the repository root, in reading order.
    public var files: [String]

    /// Whether the repository has no mistakes.
    public var isValid: Bool { diagnostics.isEmpty }
}

/// Reads a feature repository: `larder.yaml` plus every other `*.yaml` and
/// `*.yml` file below the folder (hidden folders skipped), each holding any
/// number of `---`-separated documents with a `kind:`.
public enum RepositoryLoader {
    /// The name of the repository's settings file.
    public static let configFileName = "larder.yaml"

    /// Loads and validates the repository in `directory`.
    public static func load(directory: URL) -> LoadedRepository {
        let root = directory.standardizedFileURL
        var files: [(path: String, contents: String)] = []
        var unreadable: [RepositoryDiagnostic] = []
        for relative in yamlFiles(under: root) {
            do {
                files.append((relative, try String(contentsOf: root.appendingPathComponent(relative), encoding: .utf8)))
            } catch {
                unreadable.append(RepositoryDiagnostic(
                    code: .unreadableFile, location: SourceLocation(file: relative, line: 1, column: 1),
                    message: "cannot read the file as UTF-8 text"))
            }
        }
        var loaded = load(files: files)
        loaded.diagnostics = (loaded.diagnostics + unreadable).sorted()
        return loaded
    }

    /// Loads and validates a repository given as file contents keyed by their
    /// paths relative to the repository root.
    public static func load(files: [(path: String, contents: String)]) -> LoadedRepository {
        var diagnostics: [RepositoryDiagnostic] = []
        let sorted = files.sorted { $0.path < $1.path }
        var config: RepositoryConfig?
        if let configFile = sorted.first(where: { $0.path == configFileName }) {
            config = readConfig(configFile.contents, diagnostics: &diagnostics)
        } else {
            diagnostics.append(RepositoryDiagnostic(
                code: .missingConfig, location: SourceLocation(file: configFileName, line: 1, column: 1),
                message: "the repository has no \(configFileName)",
                hint: "create it with 'workspace: <name>' (larder init writes one)"))
        }
        var repository = FeatureRepository(config: config ?? RepositoryConfig(workspace: ""))
        for file in sorted where file.path != configFileName {
            for decoded in readDefinitions(file.path, file.contents, diagnostics: &diagnostics) {
                switch decoded {
                case .entity(let entity): repository.entities.append(entity)
                case .source(let source): repository.sources.append(source)
                case .featureView(let view): repository.featureViews.append(view)
                case .onDemandFeatureView(let view): repository.onDemandFeatureViews.append(view)
                case .featureService(let service): repository.featureServices.append(service)
                case .entityQuery(let query): repository.entityQueries.append(query)
                }
            }
        }
        diagnostics += RepositoryValidator.validate(repository)
        return LoadedRepository(repository: repository, diagnostics: diagnostics.sorted(), files: sorted.map(\.path))
    }

    /// Every YAML file below `root`, relative to it, sorted; hidden entries skipped.
    static func yamlFiles(under root: URL) -> [String] {
        let keys: [URLResourceKey] = [.isRegularFileKey]
        guard let enumerator = FileManager.default.enumerator(
            at: root, includingPropertiesForKeys: keys, options: [.skipsHiddenFiles])
        else { return [] }
        var paths: [String] = []
        let prefix = root.path.hasSuffix("/") ? root.path : root.path + "/"
        for case let url as URL in enumerator {
            guard ["yaml", "yml"].contains(url.pathExtension.lowercased()),
                  (try? url.resourceValues(forKeys: Set(keys)).isRegularFile) == true
            else { continue }
            let path = url.standardizedFileURL.path
            paths.append(path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : url.lastPathComponent)
        }
        return paths.sorted()
    }

    /// Parses a file's documents, turning YAML syntax errors into diagnostics.
    static func documents(_ file: String, _ contents: String, diagnostics: inout [RepositoryDiagnostic]) -> [Node] {
        var nodes: [Node] = []
        do {
            // Parser.nextRoot, unlike compose_all's sequence, reports errors
            // instead of ending quietly; documents before an error are kept.
            let parser = try Parser(yaml: contents)
            while let node = try parser.nextRoot() { nodes.append(node) }
        } catch let error as YamlError {
            diagnostics.append(diagnostic(for: error, file: file))
        } catch {
            diagnostics.append(RepositoryDiagnostic(
                code: .yamlSyntax, location: SourceLocation(file: file, line: 1, column: 1), message: "cannot parse YAML"))
        }
        return nodes
    }

    private static func diagnostic(for error: YamlError, file: String) -> RepositoryDiagnostic {
        func at(_ mark: Mark) -> SourceLocation { SourceLocation(file: file, line: mark.line, column: mark.column) }
        switch error {
        case .duplicatedKeysInMapping(let duplicates, let context):
            return RepositoryDiagnostic(
                code: .duplicateField, location: at(context.mark), fieldPath: duplicates.first ?? "",
                message: "field '\(duplicates.joined(separator: "', '"))' is written more than once", hint: "keep one of them")
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            return RepositoryDiagnostic(code: .yamlSyntax, location: at(mark), message: "invalid YAML: \(problem)")
        case .reader(let problem, let offset, _, _):
            return RepositoryDiagnostic(
                code: .yamlSyntax, location: SourceLocation(file: file, line: 1, column: 1),
                message: "invalid YAML: \(problem)\(offset.map { " at byte \($0)" } ?? "")")
        default:
            return RepositoryDiagnostic(
                code: .yamlSyntax, location: SourceLocation(file: file, line: 1, column: 1), message: "invalid YAML: \(error)")
        }
    }

    /// Reads `larder.yaml` contents, appending its mistakes to `diagnostics`.
    public static func readConfig(_ contents: String, diagnostics: inout [RepositoryDiagnostic]) -> RepositoryConfig? {
        let nodes = documents(configFileName, contents, diagnostics: &diagnostics)
        let context = DocumentReadingContext(file: configFileName)
        defer { diagnostics += context.diagnostics }
        guard let node = nodes.first else {
            context.report(
                .missingField, at: SourceLocation(file: configFileName, line: 1, column: 1), path: "workspace",
                "\(configFileName) is empty", hint: "write 'workspace: <name>'")
            return nil
        }
        guard let fields = YAMLFieldReader(node, path: "", allowed: ["workspace", "control_plane"], context: context),
              let workspace = fields.string("workspace", required: true)
        else { return nil }
        guard Identifier.isValidWorkspace(workspace) else {
            context.report(
                .invalidIdentifier, at: fields.location(of: "workspace"), path: "workspace", "'\(workspace)' is not a valid workspace name",
                hint: "lowercase letters, digits, '_' and '-', starting with a letter")
            return nil
        }
        var url = fields.string("control_plane")
        if let text = url, URL(string: text)?.scheme.map({ ["http", "https"].contains($0) }) != true {
            context.report(
                .invalidValue, at: fields.location(of: "control_plane"), path: "control_plane", "'\(text)' is not an http(s) URL",
                hint: "such as http://127.0.0.1:7070")
            url = nil
        }
        return RepositoryConfig(workspace: workspace, controlPlaneURL: url)
    }

    static func readDefinitions(_ file: String, _ contents: String, diagnostics: inout [RepositoryDiagnostic]) -> [DecodedDefinition] {
        var definitions: [DecodedDefinition] = []
        for node in documents(file, contents, diagnostics: &diagnostics) {
            let context = DocumentReadingContext(file: file)
            if let decoded = DefinitionDecoder.decode(node, context: context) { definitions.append(decoded) }
            diagnostics += context.diagnostics
        }
        return definitions
    }
}

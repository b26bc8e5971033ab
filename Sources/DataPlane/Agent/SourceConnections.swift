import Foundation
import Shared
import Yams

/// A connection a source names (`connection: rides_db`), defined only in the
/// agent's configuration: its credentials stay in the customer's environment
/// and are never sent to, or stored by, the control plane.
public enum SourceConnection: Sendable, Hashable, CustomStringConvertible {
    /// A PostgreSQL database.
    case postgres(PostgresURL)
    /// A folder of files; a source's paths are relative to it and must stay inside it.
    case directory(URL)

    /// For logs: the URL without its password, or the folder.
    public var description: String {
        switch self {
        case .postgres(let url): return "postgres \(url)"
        case .directory(let folder): return "directory \(folder.path)"
        }
    }

    /// Why a source's file cannot be used.
    public struct Refusal: Error, Sendable, CustomStringConvertible, Equatable {
        /// What is wrong.
        public let description: String
    }

    /// The file `path` of a source on this connection: relative, inside the folder.
    public func file(_ path: String) throws(Refusal) -> URL {
        guard case .directory(let folder) = self else { throw Refusal(description: "'\(path)': this connection is not a folder of files") }
        let components = path.split(separator: "/", omittingEmptySubsequences: true)
        guard !path.hasPrefix("/"), !components.isEmpty, !components.contains(".."), !components.contains(".") else {
            throw Refusal(description: "'\(path)' must be a path inside the connection's folder, without '..' or a leading '/'")
        }
        let file = components.reduce(folder) { $0.appendingPathComponent(String($1)) }
        // Symbolic links must not lead out of the folder either.
        let resolved = Self.realPath(file.path), root = Self.realPath(folder.path)
        guard resolved == root || resolved.hasPrefix(root.hasSuffix("/") ? root : root + "/") else {
            throw Refusal(description: "'\(path)' leads out of the connection's folder")
        }
        return file
    }

    /// The files of `paths` (relative to the folder; `*` and `?` may appear in
    /// a path's last component), in a stable order, each confined like `file(_:)`.
    public func files(matching paths: [String]) throws(Refusal) -> [URL] {
        guard case .directory(let root) = self else { throw Refusal(description: "this connection is not a folder of files") }
        var files: [URL] = []
        for path in paths {
            guard path.contains("*") || path.contains("?") else {
                files.append(try file(path))
                continue
            }
            let folderPath = (path as NSString).deletingLastPathComponent
            let pattern = (path as NSString).lastPathComponent
            let folder = folderPath.isEmpty ? root : try file(folderPath)
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
            for entry in entries.sorted() where fnmatch(pattern, entry, 0) == 0 {
                files.append(try file(folderPath.isEmpty ? entry : folderPath + "/" + entry))
            }
        }
        return files
    }

    /// `path` with every symbolic link resolved: the longest existing prefix
    /// through `realpath`, then the rest (which does not exist yet) as it is.
    static func realPath(_ path: String) -> String {
        var existing = path
        var rest: [String] = []
        while !FileManager.default.fileExists(atPath: existing), existing != "/", !existing.isEmpty {
            rest.insert((existing as NSString).lastPathComponent, at: 0)
            existing = (existing as NSString).deletingLastPathComponent
        }
        guard let resolved = realpath(existing, nil) else { return path }
        defer { free(resolved) }
        return ([String(cString: resolved)] + rest).joined(separator: "/").replacingOccurrences(of: "//", with: "/")
    }

    /// Reads the `connections:` mapping of an agent configuration: each name
    /// maps to `{postgres: URL}` or `{directory: folder}`. A PostgreSQL URL may
    /// name variables of the agent's environment as `${NAME}` (a password kept
    /// out of the file); their values are put in percent-encoded. Errors name the line.
    static func parse(_ node: Node, file: String, environment: [String: String] = [:]) throws(AgentConfiguration.Invalid) -> [String: SourceConnection] {
        guard let mapping = node.mapping else {
            throw AgentConfiguration.Invalid(description: "\(file):\(node.mark?.line ?? 0): connections: a mapping of names to connections")
        }
        var connections: [String: SourceConnection] = [:]
        for (key, value) in mapping {
            let line = key.mark?.line ?? 0
            guard let name = key.string, Identifier.isValid(name) else {
                throw AgentConfiguration.Invalid(description: "\(file):\(line): connections: '\(key.string ?? "?")' is not a valid connection name")
            }
            let fields = (value.mapping.map { Array($0) } ?? []).filter { $0.key.string != "datasets" }
            guard fields.count == 1, let kind = fields[0].key.string, let text = fields[0].value.string else {
                throw AgentConfiguration.Invalid(
                    description: "\(file):\(line): connections.\(name): give exactly one of 'postgres: <URL>' or 'directory: <folder>' (and, optionally, 'datasets:')")
            }
            switch kind {
            case "postgres":
                var expanded = text
                while let open = expanded.range(of: "${"), let close = expanded[open.upperBound...].firstIndex(of: "}") {
                    let variable = String(expanded[open.upperBound..<close])
                    guard let value = environment[variable] else {
                        throw AgentConfiguration.Invalid(
                            description: "\(file):\(line): connections.\(name).postgres: the environment variable \(variable) is not set")
                    }
                    let encoded = value.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? value
                    expanded.replaceSubrange(open.lowerBound...close, with: encoded)
                }
                do {
                    connections[name] = .postgres(try PostgresURL(parsing: expanded))
                } catch {
                    throw AgentConfiguration.Invalid(description: "\(file):\(line): connections.\(name).postgres: \(error.description)")
                }
            case "directory":
                var isFolder: ObjCBool = false
                guard FileManager.default.fileExists(atPath: text, isDirectory: &isFolder), isFolder.boolValue else {
                    throw AgentConfiguration.Invalid(description: "\(file):\(line): connections.\(name).directory: '\(text)' is not a folder")
                }
                connections[name] = .directory(URL(fileURLWithPath: text, isDirectory: true))
            default:
                throw AgentConfiguration.Invalid(
                    description: "\(file):\(line): connections.\(name): unknown kind '\(kind)'; use 'postgres' or 'directory'")
            }
        }
        return connections
    }
}

/// Where a connection takes training datasets that dataset jobs write: a
/// folder for a folder connection, a schema for a PostgreSQL one. A
/// connection without one takes none (`datasets:` in its settings).
public enum DatasetPlace: Sendable, Hashable {
    /// New CSV files go in this folder (created when missing).
    case folder(URL)
    /// New tables go in this schema (created when missing).
    case schema(String)

    /// Reads each connection's optional `datasets:` setting: a folder
    /// (absolute, or relative to a folder connection's folder) or a schema name.
    static func parse(
        _ node: Node, connections: [String: SourceConnection], offlineStore: AgentConfiguration.OfflineStoreLocation?, file: String
    ) throws(AgentConfiguration.Invalid) -> [String: DatasetPlace] {
        var places: [String: DatasetPlace] = [:]
        for (key, value) in node.mapping ?? [:] {
            guard let name = key.string, let connection = connections[name],
                  let (settingKey, setting) = value.mapping?.first(where: { $0.key.string == "datasets" })
            else { continue }
            let at = "\(file):\(settingKey.mark?.line ?? 0): connections.\(name).datasets"
            guard let text = setting.string, !text.isEmpty else { throw AgentConfiguration.Invalid(description: "\(at): a folder or a schema name") }
            switch connection {
            case .directory(let folder):
                let place = (text.hasPrefix("/") ? URL(fileURLWithPath: text, isDirectory: true) : folder.appendingPathComponent(text, isDirectory: true))
                    .standardizedFileURL
                // A folder of its own: never a connection's folder, nor one holding a connection's folder (sources
                // read there; a folder inside a connection's is fine: sources never read a datasets folder).
                let resolved = SourceConnection.realPath(place.path)
                for case .directory(let other) in connections.values {
                    let root = SourceConnection.realPath(other.standardizedFileURL.path)
                    if root == resolved || root.hasPrefix(resolved.hasSuffix("/") ? resolved : resolved + "/") {
                        throw AgentConfiguration.Invalid(description: """
                            \(at): '\(text)' is or holds a connection's folder (\(other.path)); datasets go to a folder of their own, such as 'datasets'
                            """)
                    }
                }
                places[name] = .folder(place)
            case .postgres(let url):
                guard Identifier.isValid(text) else {
                    throw AgentConfiguration.Invalid(description: "\(at): '\(text)' is not a schema name (lowercase letters, digits, '_')")
                }
                // The offline store's schema is never a target, whatever the connection's name.
                if let offlineStore, case .postgres(let store)? = connections[offlineStore.connection], text == offlineStore.schema,
                   store.host == url.host, store.port == url.port, store.database == url.database {
                    throw AgentConfiguration.Invalid(description: "\(at): '\(text)' is the offline store's schema; datasets go to a schema of their own")
                }
                places[name] = .schema(text)
            }
        }
        return places
    }
}

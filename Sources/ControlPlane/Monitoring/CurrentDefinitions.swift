import Foundation
import Logging
import PostgresNIO
import Shared

/// The current definitions of a workspace, as the monitors read them: the
/// agents' view of the registry (every object's current version, with its
/// operational part as applied now), decoded.
struct CurrentDefinitions {
    /// The definitions.
    let repository: FeatureRepository
    /// Each object's current version, by name.
    let versions: [String: Int]

    /// Reads the current definitions of workspace `workspaceID` (named `name`).
    static func read(workspaceID: Int64, name: String, client: PostgresClient, logger: Logger, on connection: PostgresConnection) async throws
        -> CurrentDefinitions
    {
        let snapshot = try await AgentRegistrySnapshots(client: client, logger: logger).snapshot(ofWorkspace: workspaceID, named: name, on: connection)
        let repository: FeatureRepository
        do { repository = try CanonicalDecoder.repository(workspace: name, definitions: snapshot.definitions) } catch {
            throw RegistryError.invalidArgument(field: "workspace", detail: "the workspace's definitions cannot be read: \(error)")
        }
        return CurrentDefinitions(
            repository: repository, versions: Dictionary(snapshot.definitions.map { ($0.name, $0.version) }, uniquingKeysWith: { first, _ in first }))
    }

    /// The id of the workspace named `name`.
    static func workspaceID(named name: String, logger: Logger, on connection: PostgresConnection) async throws -> Int64 {
        for try await id in try await connection.query("SELECT id FROM workspaces WHERE name = \(name)", logger: logger).decode(Int64.self) {
            return id
        }
        throw RegistryError.workspaceNotFound(name)
    }
}

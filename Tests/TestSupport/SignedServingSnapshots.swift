import DataPlane
import Foundation
import Logging
import Shared

/// What an agent holds to serve features without its control plane: the
/// example repository's registry snapshot (every definition at version 1, plus
/// `extraFiles`) and an access snapshot with one token per member, both signed
/// with a throwaway key and installed under `folder`.
public struct SignedServingSnapshots: Sendable {
    /// The repository the registry snapshot holds.
    public let repository: FeatureRepository
    public let registry: RegistryCache
    public let accessGuard: AccessGuard
    /// Each member's token, in the order the members were given.
    public let tokens: [String]

    public init(
        folder: URL, workspace: String, extraFiles: [(path: String, contents: String)] = [],
        members: [(principal: String, roles: [WorkspaceRole])], now: Date = Date()
    ) throws {
        let logger = Logger(label: "serving-snapshots")
        repository = RepositoryLoader.load(files: RepositoryScaffold.files.map { ($0.path, $0.contents) } + extraFiles).repository
        let keys = SigningKeyPair.generate()
        let definitions = DefinitionCanonicalizer.canonicalize(repository).map {
            JobSpec.Definition(kind: $0.key.kind.rawValue, name: $0.key.name, version: 1, contentHash: $0.contentHash, definition: $0.spec)
        }
        registry = RegistryCache(file: folder.appendingPathComponent("registry.json"), publicKey: keys.publicKey, logger: logger)
        try registry.install(
            try keys.sign(try AgentRegistrySnapshot(workspace: workspace, revision: 1, issuedAt: now, definitions: definitions).jsonValue()),
            workspace: workspace)
        let issued = members.map { _ in APIToken.generate() }
        accessGuard = AccessGuard(file: folder.appendingPathComponent("access.json"), publicKey: keys.publicKey, logger: logger)
        let access = AccessSnapshot(
            workspace: workspace, version: 1, issuedAt: now, expiresAt: now.addingTimeInterval(86_400),
            entries: zip(issued, members).map { token, member in
                .init(tokenPublicId: token.publicID, secretSha256: Data(token.secretHash).base64URL, principal: member.principal,
                      roles: member.roles, tokenExpiresAt: nil)
            })
        try accessGuard.install(try keys.sign(try access.jsonValue()), workspace: workspace)
        tokens = issued.map(\.text)
    }
}

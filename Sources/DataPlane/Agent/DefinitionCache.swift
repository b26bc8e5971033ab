import Foundation
import Logging
import Shared

/// The agent's local copy of the definitions it runs: for each feature view,
/// the signed spec of the latest version it was given. Kept as the control
/// plane signed it and verified again with the trusted keys when read, so a
/// restarted agent works from definitions it can trust while the control
/// plane is unreachable, and a file edited on disk is refused.
public struct DefinitionCache: Sendable {
    /// The folder holding one signed spec per view.
    public let directory: String
    let keys: TrustedSigningKeys

    /// A cache in `directory` (created if missing), verified with `publicKey`.
    public init(directory: String, publicKey: SigningPublicKey) throws {
        try self.init(directory: directory, trustedKeys: TrustedSigningKeys(pinned: publicKey, file: nil))
    }

    /// A cache in `directory` (created if missing), verified with the agent's trusted keys.
    public init(directory: String, trustedKeys: TrustedSigningKeys) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        self.directory = directory
        self.keys = trustedKeys
    }

    private func path(view: String) -> String { (directory as NSString).appendingPathComponent("\(view).json") }

    /// Keeps `document` (already verified as `spec`) unless the cache holds a newer version of its view.
    public func store(_ document: SignedDocument, spec: JobSpec) throws {
        guard let view = spec.featureView, let version = spec.version, Identifier.isValid(view) else { return }
        if let cached = try? load(view: view), let cachedVersion = cached.version, cachedVersion > version { return }
        let data = try JSONEncoder().encode(document)
        try data.write(to: URL(fileURLWithPath: path(view: view)), options: .atomic)
    }

    /// The cached spec of `view`, verified; nil when none is cached.
    public func load(view: String) throws -> JobSpec? {
        guard let data = FileManager.default.contents(atPath: path(view: view)) else { return nil }
        let document = try JSONDecoder().decode(SignedDocument.self, from: data)
        return try JobSpec(verified: keys.verify(document, held: true))
    }

    /// Every cached spec that verifies; the others are logged and skipped.
    public func loadAll(logger: Logger) -> [JobSpec] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var specs: [JobSpec] = []
        for file in files.sorted() where file.hasSuffix(".json") {
            let view = String(file.dropLast(5))
            do {
                if let spec = try load(view: view) { specs.append(spec) }
            } catch {
                logger.warning("ignored a cached definition that does not verify", metadata: ["file": "\(file)", "error": "\(error)"])
            }
        }
        return specs
    }
}

import Foundation
import Logging
import Shared
import Synchronization

/// The control plane keys this agent accepts signatures from. It starts with
/// the key pinned in its settings (`public_key`); after that the control
/// plane's announced key sets (in every hello and heartbeat answer) move it
/// along a key rotation: a key set is accepted only when a key already trusted
/// signed it and its generation is newer than the one held, so trust
/// passes from key to key and never to a key the agent had no reason to trust.
///
/// Two lists: the keys accepted for what arrives from the control plane (job
/// specs, snapshots, key sets), and, for documents this agent already verified
/// and keeps on its own disk (snapshots, cached definitions), those keys plus
/// every key retired since: a retired key is never accepted from the network
/// again, while the agent can still restart and serve from what it holds.
///
/// Kept in `signing-keys.json` in the data directory. Pinning another key in
/// the settings (how an agent that was away for a whole rotation is brought
/// back) starts over from that key.
public final class TrustedSigningKeys: Sendable {
    struct State: Codable, Sendable, Equatable {
        /// The pinned key this state grew from.
        var pinned: String
        /// The generation of the key set held (0: none yet).
        var generation: Int64
        /// Accepted from the control plane.
        var keys: [String]
        /// Accepted for documents held on disk.
        var held: [String]
    }

    /// Why a key set was not accepted.
    public struct Refusal: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// What accepting a key set changed.
    public struct Change: Sendable, Equatable {
        /// The generation now held.
        public let generation: Int64
        /// Keys accepted from now on.
        public let added: [String]
        /// Keys no longer accepted from the control plane.
        public let dropped: [String]
    }

    let file: URL?
    private let state: Mutex<State>

    /// Trust starting from `pinned`, kept in `file` (nil: in memory only).
    public init(pinned: SigningPublicKey, file: URL?, logger: Logger? = nil) {
        self.file = file
        let fresh = State(pinned: pinned.description, generation: 0, keys: [pinned.description], held: [pinned.description])
        var loaded = fresh
        if let file, let data = try? Data(contentsOf: file) {
            if let stored = try? JSONDecoder().decode(State.self, from: data), stored.pinned == pinned.description,
               stored.keys.allSatisfy({ (try? SigningPublicKey(parsing: $0)) != nil }), !stored.keys.isEmpty {
                loaded = stored
            } else {
                logger?.notice("the pinned signing key changed, or the key file is unreadable: trusting only the pinned key", metadata: [
                    "larder.file": "\(file.path)", "larder.key_fingerprint": .string(pinned.fingerprint),
                ])
            }
        }
        state = Mutex(loaded)
    }

    /// The agent's trust, kept in its data directory.
    public convenience init(configuration: AgentConfiguration, logger: Logger? = nil) {
        self.init(
            pinned: configuration.publicKey, file: URL(fileURLWithPath: DataPlane.signingKeysFile(configuration)), logger: logger)
    }

    /// The generation of the key set held (0: none accepted yet).
    public var generation: Int64 { state.withLock { $0.generation } }

    /// The keys accepted from the control plane.
    public var current: [SigningPublicKey] { state.withLock { $0.keys }.compactMap { try? SigningPublicKey(parsing: $0) } }

    /// The keys accepted for documents this agent keeps on disk.
    public var forHeldDocuments: [SigningPublicKey] { state.withLock { $0.held }.compactMap { try? SigningPublicKey(parsing: $0) } }

    /// The payload of `document` if a trusted key signed it: one accepted from
    /// the control plane, or (`held`) one accepted for documents kept on disk.
    public func verify(_ document: SignedDocument, held: Bool = false) throws(SignedDocument.Refusal) -> JSONValue {
        try document.verified(withAnyOf: held ? forHeldDocuments : current)
    }

    /// Accepts the key set `announcement` carries (each document is the same
    /// key set signed by another key) if one of its signatures verifies with a
    /// trusted key and it is newer than the set held. Returns what changed,
    /// nil when nothing did (the set held, or an older one, which is ignored).
    @discardableResult
    public func accept(_ announcement: [SignedDocument]) throws(Refusal) -> Change? {
        let trusted = current
        var keySet: SigningKeySet?
        for document in announcement {
            if let payload = try? document.verified(withAnyOf: trusted), let value = try? SigningKeySet(verified: payload) {
                keySet = value
                break
            }
        }
        guard let keySet else {
            let claimed = announcement.first.flatMap { try? JSONDecoder().decode(SigningKeySet.self, from: Data($0.payload.utf8)) }
            throw Refusal(description: """
                the control plane's signing keys\(claimed.map { " (active key \((try? SigningPublicKey(parsing: $0.active))?.fingerprint ?? $0.active))" } ?? "") \
                are not signed by any key this agent trusts (\(trusted.map(\.fingerprint).joined(separator: ", "))): \
                was the key rotated and the old one retired while this agent was away? Check the active key with \
                'larder-control key list' and pin it as public_key in the agent's settings
                """)
        }
        let keys = keySet.keys.compactMap { try? SigningPublicKey(parsing: $0) }.map(\.description)
        guard keys.count == keySet.keys.count, !keys.isEmpty, keys.contains(keySet.active) else {
            throw Refusal(description: "the control plane's key set \(keySet.generation) is malformed: refused")
        }
        let file = self.file
        return try state.withLock { state throws(Refusal) -> Change? in
            // An older key set is never taken back (a replica that has not read the rotation yet may still announce it).
            if keySet.generation <= state.generation { return nil }
            var updated = state
            updated.generation = keySet.generation
            updated.keys = keys
            updated.held = updated.held + keys.filter { !updated.held.contains($0) }
            if let file {
                do {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                    try FileManager.default.createDirectory(
                        at: file.deletingLastPathComponent(), withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                    try encoder.encode(updated).write(to: file, options: .atomic)
                } catch {
                    throw Refusal(description: "cannot keep the accepted signing keys in \(file.path): \(error)")
                }
            }
            let change = Change(
                generation: updated.generation, added: keys.filter { !state.keys.contains($0) }, dropped: state.keys.filter { !keys.contains($0) })
            state = updated
            return change
        }
    }
}

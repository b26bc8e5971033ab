import Foundation
import Logging
import Shared
import Synchronization

/// The agent's copy of its workspace's registry snapshot: the current version
/// of every object, which feature requests are resolved from without asking
/// the control plane. Kept on disk and verified with the pinned key, so a
/// restarted agent resolves requests while the control plane is down.
public final class RegistryCache: Sendable {
    private let file: SignedSnapshotFile<AgentRegistrySnapshot>
    private let state: Mutex<AgentRegistrySnapshot?>

    /// A cache keeping its snapshot in `file`; reads the one there, if it is
    /// valid, for workspace `workspace` (nil: whichever it is for).
    public convenience init(file: URL, publicKey: SigningPublicKey, workspace: String? = nil, logger: Logger) {
        self.init(file: file, trustedKeys: TrustedSigningKeys(pinned: publicKey, file: nil), workspace: workspace, logger: logger)
    }

    /// A cache whose snapshots are verified with the agent's trusted keys.
    public init(file: URL, trustedKeys: TrustedSigningKeys, workspace: String? = nil, logger: Logger) {
        self.file = SignedSnapshotFile(file: file, keys: trustedKeys, name: "registry snapshot")
        state = Mutex(self.file.load(workspace: workspace, logger: logger))
    }

    /// The snapshot held, if any.
    public var snapshot: AgentRegistrySnapshot? { state.withLock { $0 } }

    /// The revision of the snapshot held, if any.
    public var revision: Int64? { state.withLock { $0?.revision } }

    /// Verifies `document` and, when it is for `workspace` and newer than the
    /// one held, keeps it (in memory and on disk). Returns the snapshot now held.
    @discardableResult
    public func install(_ document: SignedDocument, workspace: String) throws -> AgentRegistrySnapshot {
        let snapshot = try file.verify(document, workspace: workspace)
        let file = self.file
        // Checked and replaced under the lock: the heartbeat and the poll may install at once.
        return try state.withLock { held throws -> AgentRegistrySnapshot in
            if let held, held.revision >= snapshot.revision { return held }
            try file.write(document)
            held = snapshot
            return snapshot
        }
    }
}

import Foundation
import Glibc
import Logging
import Shared

/// A snapshot the control plane signs for a workspace's agents and they
/// keep on disk: the access snapshot, the registry snapshot.
public protocol AgentSnapshot: SignedPayload, Sendable {
    /// The workspace it is for.
    var workspace: String { get }
    /// Its version: a newer snapshot has a greater one.
    var snapshotVersion: Int64 { get }
}

extension AccessSnapshot: AgentSnapshot {
    public var snapshotVersion: Int64 { version }
}

extension AgentRegistrySnapshot: AgentSnapshot {
    public var snapshotVersion: Int64 { revision }
}

/// Why a snapshot was refused.
public struct SnapshotRefusal: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// Where an agent keeps one signed snapshot: a file only it may read (mode
/// 0600), written atomically, verified with the trusted keys whenever it is
/// installed or read back, so a tampered file is never used.
struct SignedSnapshotFile<Snapshot: AgentSnapshot>: Sendable {
    let file: URL
    let keys: TrustedSigningKeys
    /// What it is, for messages ("access snapshot").
    let name: String

    /// The snapshot on disk, if there is one that verifies (and is for `workspace`, when given).
    func load(workspace: String?, logger: Logger) -> Snapshot? {
        guard let data = try? Data(contentsOf: file) else { return nil }
        do {
            let document = try APICoding.makeDecoder().decode(SignedDocument.self, from: data)
            return try verify(document, workspace: workspace, held: true)
        } catch {
            logger.warning("ignored the \(name) on disk", metadata: ["larder.file": "\(file.path)", "larder.error": "\(error)"])
            return nil
        }
    }

    /// The snapshot `document` holds, once its signature and workspace check
    /// out; `held`: read back from this agent's disk rather than received.
    func verify(_ document: SignedDocument, workspace: String?, held: Bool = false) throws -> Snapshot {
        let snapshot: Snapshot
        do {
            snapshot = try Snapshot(verified: try keys.verify(document, held: held))
        } catch {
            throw SnapshotRefusal(description: "the \(name) does not verify with a trusted key: \(error)")
        }
        if let workspace, snapshot.workspace != workspace {
            throw SnapshotRefusal(description: "the \(name) is for workspace \(snapshot.workspace), not this agent's \(workspace)")
        }
        return snapshot
    }

    /// Writes `document` in place of the file's, atomically: into a file
    /// beside it created with mode 0600 (so the snapshot is never readable by
    /// others, not even for a moment), synced, then renamed over it.
    func write(_ document: SignedDocument) throws {
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let bytes = Array(try APICoding.makeEncoder().encode(document))
        let temporary = file.path + "." + UUID().uuidString + ".tmp"
        let descriptor = Glibc.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw SnapshotFileError(description: "cannot create \(temporary): \(String(cString: strerror(errno)))") }
        do {
            try OnlineLog.writeAll(descriptor, bytes, path: temporary)
            guard fsync(descriptor) == 0 else { throw SnapshotFileError(description: "cannot sync \(temporary)") }
        } catch {
            close(descriptor)
            unlink(temporary)
            throw error
        }
        close(descriptor)
        guard rename(temporary, file.path) == 0 else {
            unlink(temporary)
            throw SnapshotFileError(description: "cannot rename \(temporary) to \(file.path)")
        }
        OnlineLog.syncDirectory(of: file.path)
    }
}

/// A snapshot file that could not be written.
struct SnapshotFileError: Error, CustomStringConvertible {
    let description: String
}

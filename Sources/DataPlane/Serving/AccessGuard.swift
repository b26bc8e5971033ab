import Foundation
import Logging
import Shared
import Synchronization

/// The agent's copy of its workspace's access snapshot, and the check every
/// feature read passes: the token must be in the snapshot (by public id and
/// the SHA-256 of its secret, compared in constant time), not expired, and
/// its principal must hold `consumer`. The snapshot is verified with the
/// pinned public key whenever it is installed or read from disk, and kept on
/// disk so that a restarted agent authorizes reads without the control plane
/// — until the snapshot's own expiry, after which every read is refused as
/// unavailable rather than allowed on stale rules.
public final class AccessGuard: Sendable {
    /// What a request's token may do.
    public enum Decision: Sendable, Equatable {
        /// A consumer (or more): the read may go on.
        case allowed(principal: String)
        /// No token, or one the snapshot does not know or that has expired: 401.
        case unauthenticated(String)
        /// A member without `consumer`: 403.
        case forbidden(principal: String)
        /// No usable snapshot (none yet, or expired): 503.
        case unavailable(String)
    }

    /// Why a snapshot was refused.
    public typealias Refusal = SnapshotRefusal

    private struct State {
        var snapshot: AccessSnapshot?
        /// Each entry by public id, with its secret's hash decoded once.
        var entries: [String: (entry: AccessSnapshot.Entry, hash: [UInt8])] = [:]
    }

    /// An allowed token remembered by one connection (see `readmits`), so
    /// that its next requests skip parsing and hashing it again. It holds only
    /// while the guard keeps the snapshot it was checked against, and until
    /// that snapshot or the token expires: a revocation arrives as a new
    /// snapshot, so it ends every admission at once.
    public struct Admission: Sendable, CustomStringConvertible {
        /// The `Authorization` header it was granted for, exactly (a secret: never printed).
        var header: String
        var role: WorkspaceRole
        var principal: String
        var generation: UInt64
        var until: Date

        public var description: String { "admission of \(principal) as \(role.rawValue) until \(RFC3339.format(until))" }
    }

    private let file: SignedSnapshotFile<AccessSnapshot>
    private let state: Mutex<State>
    /// Counts snapshot installs; admissions name the one they were granted under.
    private let generation = Atomic<UInt64>(0)

    /// A guard keeping its snapshot in `file`; reads the one there, if it is
    /// valid, for workspace `workspace` (nil: whichever it is for).
    public convenience init(file: URL, publicKey: SigningPublicKey, workspace: String? = nil, logger: Logger) {
        self.init(file: file, trustedKeys: TrustedSigningKeys(pinned: publicKey, file: nil), workspace: workspace, logger: logger)
    }

    /// A guard whose snapshots are verified with the agent's trusted keys.
    public init(file: URL, trustedKeys: TrustedSigningKeys, workspace: String? = nil, logger: Logger) {
        self.file = SignedSnapshotFile(file: file, keys: trustedKeys, name: "access snapshot")
        state = Mutex(self.file.load(workspace: workspace, logger: logger).map(Self.state(of:)) ?? State())
    }

    private static func state(of snapshot: AccessSnapshot) -> State {
        State(
            snapshot: snapshot,
            entries: Dictionary(
                snapshot.entries.compactMap { entry in Data(base64URL: entry.secretSha256).map { (entry.tokenPublicId, (entry, Array($0))) } },
                uniquingKeysWith: { first, _ in first }))
    }

    /// The version of the snapshot held, if any.
    public var version: Int64? { state.withLock { $0.snapshot?.version } }

    /// The snapshot held, if any.
    public var snapshot: AccessSnapshot? { state.withLock { $0.snapshot } }

    /// Verifies `document` and, when it is for `workspace` and newer than the
    /// one held, keeps it (in memory and on disk). Returns the snapshot now held.
    /// A snapshot of the same version issued later (a renewal) replaces the one held.
    @discardableResult
    public func install(_ document: SignedDocument, workspace: String) throws -> AccessSnapshot {
        let snapshot = try file.verify(document, workspace: workspace)
        let file = self.file
        // Checked and replaced under the lock: the heartbeat and the poll may install at once.
        return try state.withLock { state throws -> AccessSnapshot in
            if let held = state.snapshot, (held.version, held.issuedAt) >= (snapshot.version, snapshot.issuedAt) { return held }
            try file.write(document)
            state = Self.state(of: snapshot)
            generation.add(1, ordering: .releasing)
            return snapshot
        }
    }

    /// Whether the snapshot held is past half its validity (or there is none): time to ask for a fresh one.
    public func needsRenewal(now: Date) -> Bool {
        state.withLock { state in
            guard let snapshot = state.snapshot else { return true }
            return now >= snapshot.issuedAt.addingTimeInterval(snapshot.expiresAt.timeIntervalSince(snapshot.issuedAt) / 2)
        }
    }

    /// Whether the bearer `token` (the `Authorization` header's value after
    /// `Bearer `) holds `role` at `now`: `consumer` to read features,
    /// `operator` to push rows.
    public func authorize(token: String?, now: Date = Date(), role: WorkspaceRole = .consumer) -> Decision {
        decide(token: token, header: "", now: now, role: role).decision
    }

    /// Whether `admission` still lets `header` in with `role` at `now`: the
    /// same header and role, the same snapshot held, neither it nor the token expired.
    func readmits(_ admission: Admission, header: String, role: WorkspaceRole, now: Date) -> Bool {
        ConstantTime.equals(admission.header, header) && admission.role == role && now < admission.until
            && generation.load(ordering: .acquiring) == admission.generation
    }

    /// `authorize`, and for an allowed token the admission a connection may
    /// keep for later requests carrying the same `header`.
    func decide(token: String?, header: String, now: Date, role: WorkspaceRole) -> (decision: Decision, admission: Admission?) {
        // Parsing and hashing happen outside the lock: every feature read passes here.
        let parsed = token.flatMap { APIToken(parsing: $0) }
        let (expiresAt, held, generation) = state.withLock { state in
            (state.snapshot?.expiresAt, parsed.flatMap { state.entries[$0.publicID] }, self.generation.load(ordering: .acquiring))
        }
        guard let expiresAt else {
            return (.unavailable("the agent has no access snapshot yet; it fetches one from the control plane when it connects"), nil)
        }
        guard now < expiresAt else {
            return (.unavailable("the agent's access snapshot expired at \(RFC3339.format(expiresAt)); it has not reached the control plane since"), nil)
        }
        guard let token, !token.isEmpty else { return (.unauthenticated("send a token as 'Authorization: Bearer lrd_…'"), nil) }
        guard let parsed, let held, parsed.matches(storedHash: held.hash) else {
            return (.unauthenticated("the token is not valid for this workspace"), nil)
        }
        if let expiry = held.entry.tokenExpiresAt, expiry <= now { return (.unauthenticated("the token expired at \(RFC3339.format(expiry))"), nil) }
        guard held.entry.roles.contains(role) else { return (.forbidden(principal: held.entry.principal), nil) }
        let until = min(expiresAt, held.entry.tokenExpiresAt ?? expiresAt)
        return (.allowed(principal: held.entry.principal),
                Admission(header: header, role: role, principal: held.entry.principal, generation: generation, until: until))
    }
}

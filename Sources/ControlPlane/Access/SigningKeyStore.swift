import Crypto
import Foundation
import Logging
import PostgresNIO
import Shared

/// The key that encrypts the signing key at rest (`LARDER_SIGNING_KEY_FILE`:
/// 32 random bytes, base64 or hex, such as `openssl rand -base64 32`). With
/// it, the database holds the signing key only sealed (AES-256-GCM), so a
/// copy of the database (a backup, a replica, a leaked dump) cannot sign.
public struct SigningKeyEncryption: Sendable {
    let key: SymmetricKey
    /// Marks a sealed private key in `signing_keys.private_key` (a clear one is 32 bytes).
    static let marker = Data("LKE1".utf8)
    /// Bound into every seal: a sealed key opens only as the signing key.
    static let context = Data("larder.signing-key.v1".utf8)

    /// Why the key file or a sealed key cannot be used.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// Reads the key from `path`.
    public init(file path: String) throws(Failure) {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Failure(description: "LARDER_SIGNING_KEY_FILE: cannot read \(path)")
        }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        var bytes = Data(base64Encoded: trimmed)
        if bytes?.count != 32, trimmed.count == 64, trimmed.allSatisfy(\.isHexDigit) {
            bytes = Data(stride(from: 0, to: 64, by: 2).map { offset in
                UInt8(trimmed[trimmed.index(trimmed.startIndex, offsetBy: offset)...].prefix(2), radix: 16)!
            })
        }
        guard let bytes, bytes.count == 32 else {
            throw Failure(description: "LARDER_SIGNING_KEY_FILE: \(path) must hold 32 random bytes as base64 or hex (openssl rand -base64 32)")
        }
        key = SymmetricKey(data: bytes)
    }

    /// A key from raw bytes (tests).
    public init(key: SymmetricKey) { self.key = key }

    /// Whether a stored private key is sealed.
    static func isSealed(_ stored: Data) -> Bool { stored.starts(with: marker) }

    func seal(_ raw: Data) throws -> Data {
        Self.marker + (try AES.GCM.seal(raw, using: key, authenticating: Self.context).combined ?? Data())
    }

    func open(_ stored: Data) throws(Failure) -> Data {
        do {
            return try AES.GCM.open(AES.GCM.SealedBox(combined: stored.dropFirst(Self.marker.count)), using: key, authenticating: Self.context)
        } catch {
            throw Failure(description: "the signing key in the database does not open with LARDER_SIGNING_KEY_FILE: is it the key it was sealed with?")
        }
    }
}

/// The control plane's signing keys in use: the active key, which signs; the
/// one coming (`next`: announced to agents, signing nothing yet); the one
/// going (`previous`: still accepted, and still signing the announced key set
/// so an agent that was away during the rotation can follow it).
public struct SigningKeyRing: Sendable {
    /// Grows with every change of the keys.
    public let generation: Int64
    /// The key that signs job specs and snapshots.
    public let active: SigningKeyPair
    /// The key made by `larder-control key rotate`, until it is activated.
    public let next: SigningPublicKey?
    /// The key the active one replaced, until it is retired.
    public let previous: SigningKeyPair?

    /// Every key an agent accepts now.
    public var accepted: [SigningPublicKey] { [active.publicKey] + [next, previous?.publicKey].compactMap { $0 } }

    /// The key set agents are told about.
    public var keySet: SigningKeySet {
        SigningKeySet(generation: generation, active: active.publicKey.description, keys: accepted.map(\.description))
    }

    /// The key set, signed by the active key and by the previous one (while there is one).
    public func announcement() throws -> [SignedDocument] {
        let payload = try keySet.jsonValue()
        return try ([active] + [previous].compactMap { $0 }).map { try $0.sign(payload) }
    }
}

/// A signing key as `larder-control key` lists it.
public struct SigningKeyRecord: Sendable {
    /// Where a key is in its life.
    public enum State: String, Sendable, CaseIterable {
        case next, active, previous, retired
    }
    public let id: Int
    public let state: State
    public let publicKey: SigningPublicKey
    public let sealed: Bool
    public let changedAt: Date
}

/// Why a key operation was refused.
public struct SigningKeyRefusal: Error, Sendable, CustomStringConvertible {
    public let description: String

    /// A refusal saying `description`.
    public init(description: String) { self.description = description }
}

/// Keeps the control plane's signing keys in its database: the first created
/// at first start (replicas serialize on an advisory lock), then loaded; new
/// ones made, activated and retired by `larder-control key`. Every change is
/// one transaction under the same lock.
public enum SigningKeyStore {
    static let lockKey: Int64 = 0x6C61_7264_6572_0004

    /// The active key pair, created now if there is none yet (see `loadOrCreateRing`).
    public static func loadOrCreate(
        client: PostgresClient, encryption: SigningKeyEncryption? = nil, logger: Logger
    ) async throws -> SigningKeyPair {
        try await loadOrCreateRing(client: client, encryption: encryption, logger: logger).active
    }

    /// The keys in use, the first one created now if there is none. With
    /// `encryption`, keys are stored sealed, and one found in clear is refused
    /// (it may have been put there by whoever can write the database; `larder-control
    /// key seal` seals keys made before the key file was set); without it, a
    /// sealed key cannot be read.
    public static func loadOrCreateRing(
        client: PostgresClient, encryption: SigningKeyEncryption? = nil, logger: Logger
    ) async throws -> SigningKeyRing {
        try await locked(client: client, logger: logger) { connection in
            if let ring = try await ring(on: connection, encryption: encryption, logger: logger) { return ring }
            let created = SigningKeyPair.generate()
            try await insert(created, id: 1, state: .active, encryption: encryption, on: connection, logger: logger)
            logger.notice("created the control plane's signing key", metadata: [
                "larder.key_fingerprint": .string(created.publicKey.fingerprint), "larder.sealed": .string(encryption == nil ? "no" : "yes"),
            ])
            return SigningKeyRing(generation: try await generation(on: connection, logger: logger), active: created, next: nil, previous: nil)
        }
    }

    /// Every key, newest first.
    public static func list(client: PostgresClient, logger: Logger) async throws -> [SigningKeyRecord] {
        var records: [SigningKeyRecord] = []
        let rows = try await client.query(
            "SELECT id, state, private_key, public_key, changed_at FROM signing_keys ORDER BY id DESC", logger: logger)
        for try await (id, state, privateKey, publicKey, changedAt) in rows.decode((Int, String, Data, String, Date).self) {
            records.append(SigningKeyRecord(
                id: id, state: SigningKeyRecord.State(rawValue: state) ?? .retired, publicKey: try SigningPublicKey(parsing: publicKey),
                sealed: SigningKeyEncryption.isSealed(privateKey), changedAt: changedAt))
        }
        return records
    }

    /// Step 1 of a rotation: makes a new key, announced to agents (which then
    /// accept it) but signing nothing yet. Refused while a rotation is under way.
    public static func rotate(client: PostgresClient, encryption: SigningKeyEncryption?, logger: Logger) async throws -> SigningKeyRing {
        try await locked(client: client, logger: logger) { connection in
            guard let ring = try await ring(on: connection, encryption: encryption, logger: logger) else {
                throw SigningKeyRefusal(description: "there is no signing key yet: start the control plane (or run 'larder-control key') first")
            }
            if let next = ring.next {
                throw SigningKeyRefusal(description: "key \(next.fingerprint) is already waiting: activate it with 'larder-control key activate'")
            }
            if let previous = ring.previous {
                throw SigningKeyRefusal(description: "the previous key \(previous.publicKey.fingerprint) is not retired yet: 'larder-control key retire' first")
            }
            let created = SigningKeyPair.generate()
            let id = try await nextID(on: connection, logger: logger)
            try await insert(created, id: id, state: .next, encryption: encryption, on: connection, logger: logger)
            try await bumpGeneration(on: connection, logger: logger)
            logger.notice("made a new signing key; agents learn it at their next heartbeat", metadata: [
                "larder.key_fingerprint": .string(created.publicKey.fingerprint),
            ])
            return try await Self.ring(on: connection, encryption: encryption, logger: logger)!
        }
    }

    /// Step 2: the new key signs from now on; the one it replaces stays accepted
    /// (and keeps signing the announced key set) until it is retired.
    public static func activate(client: PostgresClient, encryption: SigningKeyEncryption?, logger: Logger) async throws -> SigningKeyRing {
        try await locked(client: client, logger: logger) { connection in
            guard let ring = try await ring(on: connection, encryption: encryption, logger: logger), let next = ring.next else {
                throw SigningKeyRefusal(description: "there is no new key to activate: make one with 'larder-control key rotate'")
            }
            try await connection.query(
                "UPDATE signing_keys SET state = 'previous', changed_at = now() WHERE state = 'active'", logger: logger)
            try await connection.query(
                "UPDATE signing_keys SET state = 'active', changed_at = now() WHERE state = 'next' AND public_key = \(next.description)",
                logger: logger)
            try await bumpGeneration(on: connection, logger: logger)
            logger.notice("activated the new signing key", metadata: ["larder.key_fingerprint": .string(next.fingerprint)])
            return try await Self.ring(on: connection, encryption: encryption, logger: logger)!
        }
    }

    /// Step 3: agents stop accepting the previous key, and its private key is
    /// erased. The specs of unfinished jobs it signed are signed again with the
    /// active key (only those that verify: a spec changed in the database stays
    /// refused), in the same transaction. Returns the ring and how many specs were signed again.
    public static func retire(
        client: PostgresClient, encryption: SigningKeyEncryption?, logger: Logger
    ) async throws -> (ring: SigningKeyRing, resigned: Int) {
        try await locked(client: client, logger: logger) { connection in
            guard let ring = try await ring(on: connection, encryption: encryption, logger: logger), let previous = ring.previous else {
                throw SigningKeyRefusal(description: "there is no previous key to retire")
            }
            let rows = try await connection.query(
                """
                SELECT id, spec_payload, spec_signature FROM jobs
                WHERE spec_key = \(previous.publicKey.fingerprint) AND state IN ('queued', 'leased', 'running')
                FOR UPDATE
                """, logger: logger)
            var ids: [Int64] = [], payloads: [String] = [], signatures: [String] = []
            for try await (id, payload, signature) in rows.decode((Int64, String, String).self) {
                let stored = SignedDocument(payload: payload, signature: signature, keyFingerprint: previous.publicKey.fingerprint)
                guard (try? stored.verified(with: previous.publicKey)) != nil,
                      case .object(let members)? = try? JSONDecoder().decode(JSONValue.self, from: Data(payload.utf8))
                else { continue }
                let signed = try ring.active.sign(.object(members))
                ids.append(id)
                payloads.append(signed.payload)
                signatures.append(signed.signature)
            }
            if !ids.isEmpty {
                try await connection.query(
                    """
                    UPDATE jobs j SET spec_payload = x.p, spec_signature = x.s, spec_key = \(ring.active.publicKey.fingerprint)
                    FROM unnest(\(ids)::bigint[], \(payloads)::text[], \(signatures)::text[]) AS x(id, p, s) WHERE j.id = x.id
                    """, logger: logger)
            }
            try await connection.query(
                "UPDATE signing_keys SET state = 'retired', private_key = ''::bytea, changed_at = now() WHERE state = 'previous'",
                logger: logger)
            try await bumpGeneration(on: connection, logger: logger)
            logger.notice("retired the previous signing key", metadata: [
                "larder.key_fingerprint": .string(previous.publicKey.fingerprint), "larder.specs_resigned": "\(ids.count)",
            ])
            return (try await Self.ring(on: connection, encryption: encryption, logger: logger)!, ids.count)
        }
    }

    /// Seals every key stored in clear with `encryption`; returns how many.
    public static func seal(client: PostgresClient, encryption: SigningKeyEncryption, logger: Logger) async throws -> Int {
        try await locked(client: client, logger: logger) { connection in
            let rows = try await connection.query(
                "SELECT id, private_key FROM signing_keys WHERE state <> 'retired'", logger: logger)
            var clear: [(Int, Data)] = []
            for try await (id, stored) in rows.decode((Int, Data).self) where !SigningKeyEncryption.isSealed(stored) { clear.append((id, stored)) }
            for (id, stored) in clear {
                _ = try SigningKeyPair(rawPrivateKey: stored)
                try await connection.query(
                    "UPDATE signing_keys SET private_key = \(try encryption.seal(stored)) WHERE id = \(id)", logger: logger)
            }
            return clear.count
        }
    }

    /// The agents' sessions and the key set generation each last said it holds.
    public static func agentGenerations(client: PostgresClient, logger: Logger) async throws -> [(agent: String, generation: Int64?, lastSeen: Date)] {
        var result: [(agent: String, generation: Int64?, lastSeen: Date)] = []
        let rows = try await client.query(
            """
            SELECT p.name, s.key_generation, s.last_seen_at FROM agent_sessions s JOIN principals p ON p.id = s.principal_id
            ORDER BY p.name
            """, logger: logger)
        for try await (name, generation, seen) in rows.decode((String, Int64?, Date).self) { result.append((name, generation, seen)) }
        return result
    }

    // MARK: - Storage

    static func locked<Result: Sendable>(
        client: PostgresClient, logger: Logger, _ body: @Sendable @escaping (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                try await connection.query("SELECT pg_advisory_xact_lock(\(lockKey))", logger: logger)
                return try await body(connection)
            }
        }
    }

    /// The keys in use, or nil when there are none yet.
    static func ring(on connection: PostgresConnection, encryption: SigningKeyEncryption?, logger: Logger) async throws -> SigningKeyRing? {
        let rows = try await connection.query(
            "SELECT state, private_key, public_key FROM signing_keys WHERE state <> 'retired'", logger: logger)
        var pairs: [SigningKeyRecord.State: SigningKeyPair] = [:]
        for try await (state, stored, _) in rows.decode((String, Data, String).self) {
            guard let state = SigningKeyRecord.State(rawValue: state) else { continue }
            pairs[state] = try open(stored, encryption: encryption)
        }
        guard let active = pairs[.active] else { return nil }
        return SigningKeyRing(
            generation: try await generation(on: connection, logger: logger), active: active, next: pairs[.next]?.publicKey,
            previous: pairs[.previous])
    }

    static func open(_ stored: Data, encryption: SigningKeyEncryption?) throws -> SigningKeyPair {
        if SigningKeyEncryption.isSealed(stored) {
            guard let encryption else {
                throw SigningKeyEncryption.Failure(
                    description: "the signing key is stored encrypted: set LARDER_SIGNING_KEY_FILE to the key that sealed it")
            }
            return try SigningKeyPair(rawPrivateKey: try encryption.open(stored))
        }
        if encryption != nil {
            // Whoever can write the database could have put this key there: it is not used until sealed on purpose.
            throw SigningKeyEncryption.Failure(description: """
                a signing key is stored in clear although LARDER_SIGNING_KEY_FILE is set: if it is the key made before \
                the key file was set, seal it with 'larder-control key seal' (check its fingerprint with 'larder-control key list' first)
                """)
        }
        return try SigningKeyPair(rawPrivateKey: stored)
    }

    static func insert(
        _ pair: SigningKeyPair, id: Int, state: SigningKeyRecord.State, encryption: SigningKeyEncryption?, on connection: PostgresConnection,
        logger: Logger
    ) async throws {
        let value = try encryption?.seal(pair.rawPrivateKey) ?? pair.rawPrivateKey
        try await connection.query(
            """
            INSERT INTO signing_keys (id, private_key, public_key, state) VALUES (\(id), \(value), \(pair.publicKey.description), \(state.rawValue))
            """, logger: logger)
    }

    static func nextID(on connection: PostgresConnection, logger: Logger) async throws -> Int {
        for try await id in try await connection.query("SELECT coalesce(max(id), 0) + 1 FROM signing_keys", logger: logger).decode(Int.self) {
            return id
        }
        return 1
    }

    /// The current generation of the keys.
    static func generation(client: PostgresClient, logger: Logger) async throws -> Int64 {
        try await client.withConnection { try await generation(on: $0, logger: logger) }
    }

    static func generation(on connection: PostgresConnection, logger: Logger) async throws -> Int64 {
        for try await value in try await connection.query(
            "SELECT generation FROM signing_key_generation WHERE id = 1", logger: logger).decode(Int64.self) { return value }
        return 1
    }

    static func bumpGeneration(on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("UPDATE signing_key_generation SET generation = generation + 1 WHERE id = 1", logger: logger)
    }
}

/// The signing keys, loaded (or the first created) from the database and
/// kept in memory for a few seconds at a time, so a rotation made with
/// `larder-control key` reaches every replica soon.
public actor SigningKeys {
    let client: PostgresClient
    let logger: Logger
    let encryption: SigningKeyEncryption?
    /// How long a loaded ring is used before it is read again.
    let refreshInterval: Duration
    private var cached: (ring: SigningKeyRing, announcement: [SignedDocument], loadedAt: ContinuousClock.Instant)?

    /// Creates a loader over the registry database; `encryption` seals the keys at rest.
    public init(client: PostgresClient, encryption: SigningKeyEncryption? = nil, refreshInterval: Duration = .seconds(5), logger: Logger) {
        self.client = client
        self.logger = logger
        self.encryption = encryption
        self.refreshInterval = refreshInterval
    }

    /// The active key pair, which signs.
    public func current() async throws -> SigningKeyPair { try await ring().active }

    /// The keys in use.
    public func ring() async throws -> SigningKeyRing {
        if let cached {
            if ContinuousClock.now - cached.loadedAt < refreshInterval { return cached.ring }
            // Keys change only with the generation: one read of it, and the keys (opened and signed for) only when it moved.
            if try await SigningKeyStore.generation(client: client, logger: logger) == cached.ring.generation {
                self.cached = (cached.ring, cached.announcement, .now)
                return cached.ring
            }
        }
        let loaded = try await SigningKeyStore.loadOrCreateRing(client: client, encryption: encryption, logger: logger)
        cached = (loaded, try loaded.announcement(), .now)
        return loaded
    }

    /// The key set as agents are told about it, signed.
    public func announcement() async throws -> [SignedDocument] {
        _ = try await ring()
        return cached?.announcement ?? []
    }
}

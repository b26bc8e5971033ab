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

/// Keeps the control plane's signing key pair in its database: created once,
/// at first start (replicas serialize on an advisory lock), then loaded.
public enum SigningKeyStore {
    static let lockKey: Int64 = 0x6C61_7264_6572_0004

    /// The key pair, created now if there is none yet. With `encryption`, the
    /// key is stored sealed, and one found in clear is sealed now (in the same
    /// transaction); without it, a sealed key cannot be read.
    public static func loadOrCreate(
        client: PostgresClient, encryption: SigningKeyEncryption? = nil, logger: Logger
    ) async throws -> SigningKeyPair {
        try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                try await connection.query("SELECT pg_advisory_xact_lock(\(lockKey))", logger: logger)
                let rows = try await connection.query("SELECT private_key FROM signing_keys WHERE id = 1", logger: logger)
                var stored: Data?
                for try await value in rows.decode(Data.self) { stored = value }
                if let stored {
                    if SigningKeyEncryption.isSealed(stored) {
                        guard let encryption else {
                            throw SigningKeyEncryption.Failure(
                                description: "the signing key is stored encrypted: set LARDER_SIGNING_KEY_FILE to the key that sealed it")
                        }
                        return try SigningKeyPair(rawPrivateKey: try encryption.open(stored))
                    }
                    let keys = try SigningKeyPair(rawPrivateKey: stored)
                    if let encryption {
                        try await connection.query(
                            "UPDATE signing_keys SET private_key = \(try encryption.seal(stored)) WHERE id = 1", logger: logger)
                        logger.notice("sealed the signing key stored in clear with LARDER_SIGNING_KEY_FILE")
                    } else {
                        logger.warning("the signing key is stored in clear in the database; set LARDER_SIGNING_KEY_FILE to seal it")
                    }
                    return keys
                }
                let created = SigningKeyPair.generate()
                let value = try encryption?.seal(created.rawPrivateKey) ?? created.rawPrivateKey
                try await connection.query(
                    "INSERT INTO signing_keys (id, private_key, public_key) VALUES (1, \(value), \(created.publicKey.description))",
                    logger: logger)
                logger.notice("created the control plane's signing key", metadata: [
                    "larder.key_fingerprint": .string(created.publicKey.fingerprint), "larder.sealed": .string(encryption == nil ? "no" : "yes"),
                ])
                return created
            }
        }
    }
}

/// The signing key pair, loaded (or created) from the database on first use
/// and then kept in memory.
public actor SigningKeys {
    let client: PostgresClient
    let logger: Logger
    let encryption: SigningKeyEncryption?
    private var cached: SigningKeyPair?

    /// Creates a loader over the registry database; `encryption` seals the key at rest.
    public init(client: PostgresClient, encryption: SigningKeyEncryption? = nil, logger: Logger) {
        self.client = client
        self.logger = logger
        self.encryption = encryption
    }

    /// The key pair.
    public func current() async throws -> SigningKeyPair {
        if let cached { return cached }
        let loaded = try await SigningKeyStore.loadOrCreate(client: client, encryption: encryption, logger: logger)
        cached = loaded
        return loaded
    }
}

import Foundation
import Logging
import PostgresNIO
import Shared

/// Keeps the control plane's signing key pair in its database: created once,
/// at first start (replicas serialize on an advisory lock), then loaded.
public enum SigningKeyStore {
    static let lockKey: Int64 = 0x6C61_7264_6572_0004

    /// The key pair, created now if there is none yet.
    public static func loadOrCreate(client: PostgresClient, logger: Logger) async throws -> SigningKeyPair {
        try await client.withConnection { connection in
            try await connection.inTransaction(logger: logger) { connection in
                try await connection.query("SELECT pg_advisory_xact_lock(\(lockKey))", logger: logger)
                let rows = try await connection.query("SELECT private_key FROM signing_keys WHERE id = 1", logger: logger)
                for try await raw in rows.decode(Data.self) { return try SigningKeyPair(rawPrivateKey: raw) }
                let created = SigningKeyPair.generate()
                try await connection.query(
                    "INSERT INTO signing_keys (id, private_key, public_key) VALUES (1, \(created.rawPrivateKey), \(created.publicKey.description))",
                    logger: logger)
                logger.notice("created the control plane's signing key", metadata: ["larder.key_fingerprint": .string(created.publicKey.fingerprint)])
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
    private var cached: SigningKeyPair?

    /// Creates a loader over the registry database.
    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// The key pair.
    public func current() async throws -> SigningKeyPair {
        if let cached { return cached }
        let loaded = try await SigningKeyStore.loadOrCreate(client: client, logger: logger)
        cached = loaded
        return loaded
    }
}

import Foundation
import ControlPlane
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

@Suite("Signing key")
struct SigningKeyTests {
    @Test("replicas starting together create one key pair and all load it; it signs what agents verify")
    func oneKeyPair() async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            let logger = Logger(label: "test")
            let client = PostgresClient(configuration: url.clientConfiguration(), backgroundLogger: logger)
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await client.run() }
                try await MigrationRunner().run(on: client, logger: logger)
                let keys = try await withThrowingTaskGroup(of: SigningPublicKey.self) { starts in
                    for _ in 0..<4 { starts.addTask { try await SigningKeyStore.loadOrCreate(client: client, logger: logger).publicKey } }
                    return try await starts.reduce(into: []) { $0.append($1) }
                }
                #expect(Set(keys).count == 1)
                let again = try await SigningKeyStore.loadOrCreate(client: client, logger: logger)
                #expect(again.publicKey == keys[0])
                let document = try again.sign(.object(["job": .integer(1)]))
                #expect(try document.verified(with: keys[0]) == .object(["job": .integer(1)]))
                group.cancelAll()
            }
        }
    }
}

@Suite("Signing key sealed at rest")
struct SealedSigningKeyTests {
    /// What the database holds as the private key.
    static func stored(_ client: PostgresClient) async throws -> Data {
        for try await value in try await client.query("SELECT private_key FROM signing_keys WHERE id = 1", logger: Logger(label: "test")).decode(Data.self) {
            return value
        }
        return Data()
    }

    @Test("with LARDER_SIGNING_KEY_FILE the database holds the key only sealed; a clear key is refused until sealed on purpose; without the file, or with another, a sealed key is refused")
    func sealedAtRest() async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            let logger = Logger(label: "test")
            let client = PostgresClient(configuration: url.clientConfiguration(), backgroundLogger: logger)
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await client.run() }
                try await MigrationRunner().run(on: client, logger: logger)
                // A key created in clear (an install from before), then sealed by a start with the key file.
                let clear = try await SigningKeyStore.loadOrCreate(client: client, logger: logger)
                #expect(try await Self.stored(client) == clear.rawPrivateKey)
                let folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-kek-\(UUID().uuidString)")
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                defer { try? FileManager.default.removeItem(at: folder) }
                let file = folder.appendingPathComponent("kek")
                try Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString().write(to: file, atomically: true, encoding: .utf8)
                let encryption = try SigningKeyEncryption(file: file.path)
                // A key in clear is not taken up by a start with the key file (whoever can write the database could
                // have put it there): it is sealed on purpose, with `larder-control key seal`.
                await #expect(throws: SigningKeyEncryption.Failure.self) {
                    _ = try await SigningKeyStore.loadOrCreate(client: client, encryption: encryption, logger: logger)
                }
                #expect(try await Self.stored(client) == clear.rawPrivateKey)
                #expect(try await SigningKeyStore.seal(client: client, encryption: encryption, logger: logger) == 1)
                let sealed = try await SigningKeyStore.loadOrCreate(client: client, encryption: encryption, logger: logger)
                #expect(sealed.publicKey == clear.publicKey)
                let bytes = try await Self.stored(client)
                #expect(bytes != clear.rawPrivateKey && bytes.range(of: clear.rawPrivateKey) == nil && bytes.count > 32)
                // Loaded again with the file: the same key. Without it, or with another: refused, nothing changed.
                #expect(try await SigningKeyStore.loadOrCreate(client: client, encryption: encryption, logger: logger).publicKey == clear.publicKey)
                await #expect(throws: SigningKeyEncryption.Failure.self) { _ = try await SigningKeyStore.loadOrCreate(client: client, logger: logger) }
                let other = folder.appendingPathComponent("other")
                try String(repeating: "ab", count: 32).write(to: other, atomically: true, encoding: .utf8)
                await #expect(throws: SigningKeyEncryption.Failure.self) {
                    _ = try await SigningKeyStore.loadOrCreate(client: client, encryption: try SigningKeyEncryption(file: other.path), logger: logger)
                }
                #expect(try await Self.stored(client) == bytes)
                // A key of someone's own written over the sealed one, in clear: refused with the key file.
                let planted = SigningKeyPair.generate()
                try await client.query(
                    "UPDATE signing_keys SET private_key = \(planted.rawPrivateKey), public_key = \(planted.publicKey.description) WHERE id = 1",
                    logger: logger)
                await #expect(throws: SigningKeyEncryption.Failure.self) {
                    _ = try await SigningKeyStore.loadOrCreate(client: client, encryption: encryption, logger: logger)
                }
                // A key file that is not 32 bytes is refused with the setting's name.
                let short = folder.appendingPathComponent("short")
                try "c2hvcnQ=".write(to: short, atomically: true, encoding: .utf8)
                #expect(throws: SigningKeyEncryption.Failure.self) { _ = try SigningKeyEncryption(file: short.path) }
                group.cancelAll()
            }
        }
    }
}

@Suite("Signing key rotation")
struct SigningKeyRotationTests {
    @Test("rotate, activate, retire: one key per state, the generation grows at each step, steps out of order are refused, the retired private key is erased, replicas see the change")
    func rotation() async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            let logger = Logger(label: "test")
            let client = PostgresClient(configuration: url.clientConfiguration(), backgroundLogger: logger)
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await client.run() }
                try await MigrationRunner().run(on: client, logger: logger)
                let replica = SigningKeys(client: client, refreshInterval: .zero, logger: logger)
                let first = try await replica.ring()
                #expect(first.generation == 1 && first.next == nil && first.previous == nil)
                await #expect(throws: SigningKeyRefusal.self) { _ = try await SigningKeyStore.activate(client: client, encryption: nil, logger: logger) }
                await #expect(throws: SigningKeyRefusal.self) { _ = try await SigningKeyStore.retire(client: client, encryption: nil, logger: logger) }

                let rotated = try await SigningKeyStore.rotate(client: client, encryption: nil, logger: logger)
                let new = try #require(rotated.next)
                #expect(rotated.generation == 2 && rotated.active.publicKey == first.active.publicKey)
                await #expect(throws: SigningKeyRefusal.self) { _ = try await SigningKeyStore.rotate(client: client, encryption: nil, logger: logger) }
                // Announced, signed by the active key only; the new key signs nothing yet.
                let announced = try await replica.announcement()
                #expect(announced.count == 1)
                let set = try SigningKeySet(verified: try announced[0].verified(with: first.active.publicKey))
                #expect(set.generation == 2 && Set(set.keys) == [first.active.publicKey.description, new.description])
                #expect(try await replica.current().publicKey == first.active.publicKey)

                let activated = try await SigningKeyStore.activate(client: client, encryption: nil, logger: logger)
                #expect(activated.generation == 3 && activated.active.publicKey == new && activated.previous?.publicKey == first.active.publicKey)
                #expect(try await replica.current().publicKey == new)
                // Signed by both, so an agent that still trusts only the old key can follow.
                let both = try await replica.announcement()
                #expect(both.count == 2)
                for (document, key) in zip(both, [new, first.active.publicKey]) {
                    #expect(try SigningKeySet(verified: try document.verified(with: key)).generation == 3)
                }
                await #expect(throws: SigningKeyRefusal.self) { _ = try await SigningKeyStore.rotate(client: client, encryption: nil, logger: logger) }

                let retired = try await SigningKeyStore.retire(client: client, encryption: nil, logger: logger)
                #expect(retired.ring.generation == 4 && retired.ring.previous == nil && retired.ring.accepted == [new])
                let listed = try await SigningKeyStore.list(client: client, logger: logger)
                #expect(listed.map(\.state) == [.active, .retired])
                var erased: [Data] = []
                for try await bytes in try await client.query(
                    "SELECT private_key FROM signing_keys WHERE state = 'retired'", logger: logger).decode(Data.self) { erased.append(bytes) }
                #expect(erased == [Data()])
                #expect(try await replica.ring().accepted == [new])
                // And round again: a new rotation may start.
                #expect(try await SigningKeyStore.rotate(client: client, encryption: nil, logger: logger).generation == 5)
                group.cancelAll()
            }
        }
    }
}

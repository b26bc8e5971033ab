import DataPlane
import Foundation
import Shared
import Testing

@Suite("Trusted signing keys (an agent following key rotations)")
struct TrustedSigningKeysTests {
    /// A key set of `generation` with `active` and the other `keys`, signed by each of `signers`.
    static func announcement(_ generation: Int64, active: SigningKeyPair, keys: [SigningKeyPair], signers: [SigningKeyPair]) throws -> [SignedDocument] {
        let set = SigningKeySet(generation: generation, active: active.publicKey.description, keys: keys.map(\.publicKey.description))
        return try signers.map { try $0.sign(try set.jsonValue()) }
    }

    static func folder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("larder-trust-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    @Test("rotate, activate, retire: trust follows each step, is kept on disk, and a retired key is refused from the network but not for documents held")
    func followsRotation() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("signing-keys.json")
        let old = SigningKeyPair.generate(), new = SigningKeyPair.generate()
        let trust = TrustedSigningKeys(pinned: old.publicKey, file: file)
        #expect(trust.generation == 0 && trust.current == [old.publicKey])
        let fromNew = try new.sign(try AccessSnapshotFixture.payload())
        #expect(throws: SignedDocument.Refusal.self) { _ = try trust.verify(fromNew) }

        // rotate: the old key announces both.
        let rotated = try trust.accept(try Self.announcement(2, active: old, keys: [old, new], signers: [old]))
        #expect(rotated?.added == [new.publicKey.description] && rotated?.dropped == [])
        #expect(try trust.verify(fromNew) == (try AccessSnapshotFixture.payload()))
        // The same set again changes nothing.
        #expect(try trust.accept(try Self.announcement(2, active: old, keys: [old, new], signers: [old])) == nil)

        // activate, then retire: the old key is dropped for what comes from the control plane.
        try trust.accept(try Self.announcement(3, active: new, keys: [new, old], signers: [new, old]))
        let retired = try trust.accept(try Self.announcement(4, active: new, keys: [new], signers: [new]))
        #expect(retired?.dropped == [old.publicKey.description])
        let fromOld = try old.sign(try AccessSnapshotFixture.payload())
        #expect(throws: SignedDocument.Refusal.self) { _ = try trust.verify(fromOld) }
        #expect(try trust.verify(fromOld, held: true) == (try AccessSnapshotFixture.payload()))

        // Kept on disk: a restarted agent (same pinned key) trusts what it had accepted.
        let restarted = TrustedSigningKeys(pinned: old.publicKey, file: file)
        #expect(restarted.generation == 4 && restarted.current == [new.publicKey])
        // An older key set (a replica that has not read the rotation) is ignored; the old key cannot come back.
        #expect(try restarted.accept(try Self.announcement(3, active: new, keys: [new, old], signers: [new, old])) == nil)
        #expect(restarted.current == [new.publicKey])
        // Pinning another key in the settings starts over from it.
        let repinned = TrustedSigningKeys(pinned: new.publicKey, file: file)
        #expect(repinned.generation == 0 && repinned.current == [new.publicKey])
    }

    @Test("an agent away for the whole rotation, or offered keys by a stranger, accepts nothing; away during rotate and activate only, it catches up")
    func refusesWhatNoTrustedKeySigned() throws {
        let old = SigningKeyPair.generate(), new = SigningKeyPair.generate(), stranger = SigningKeyPair.generate()
        // Away through retire: the key set is signed by the new key only.
        let away = TrustedSigningKeys(pinned: old.publicKey, file: nil)
        #expect(throws: TrustedSigningKeys.Refusal.self) { try away.accept(try Self.announcement(4, active: new, keys: [new], signers: [new])) }
        #expect(away.current == [old.publicKey] && away.generation == 0)
        // A stranger's key set, even one naming the trusted key, with a higher generation: refused.
        #expect(throws: TrustedSigningKeys.Refusal.self) {
            try away.accept(try Self.announcement(9, active: stranger, keys: [stranger, old], signers: [stranger]))
        }
        // A key set signed by a trusted key but of another signing domain (a snapshot's signature reused): refused.
        let snapshot = try old.sign(try AccessSnapshotFixture.payload())
        #expect(throws: TrustedSigningKeys.Refusal.self) { try away.accept([snapshot]) }
        // Away during rotate and activate: the previous key still vouches for the new one.
        #expect(try away.accept(try Self.announcement(3, active: new, keys: [new, old], signers: [new, old])) != nil)
        #expect(Set(away.current) == [new.publicKey, old.publicKey])
    }
}

/// A small signed payload of another domain than key sets.
enum AccessSnapshotFixture {
    static func payload() throws -> JSONValue {
        try AccessSnapshot(workspace: "w", version: 1, issuedAt: Date(timeIntervalSince1970: 0), expiresAt: Date(timeIntervalSince1970: 60), entries: []).jsonValue()
    }
}

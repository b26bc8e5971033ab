import Foundation
import Testing
@testable import Shared

@Suite("Signed documents")
struct SignedDocumentTests {
    static let spec: JSONValue = .object([
        "kind": "materialize", "view": "driver_hourly_stats", "version": .integer(3),
        "interval": .object(["start": "2025-01-01T00:00:00Z", "end": "2025-01-01T01:00:00Z"]),
    ])

    @Test("a signed spec verifies with the signer's public key and yields the same payload")
    func roundTrip() throws {
        let keys = SigningKeyPair.generate()
        let document = try keys.sign(Self.spec)
        #expect(try document.verified(with: keys.publicKey) == Self.spec)
        let pinned = try SigningPublicKey(parsing: keys.publicKey.description)
        #expect(pinned == keys.publicKey)
        #expect(try document.verified(with: pinned) == Self.spec)
        #expect(keys.publicKey.fingerprint.split(separator: ":").count == 8)
        let restored = try SigningKeyPair(rawPrivateKey: keys.rawPrivateKey)
        #expect(restored.publicKey == keys.publicKey)
    }

    @Test("any change to the payload or signature, or another key, is refused", arguments: Array(0..<40))
    func tampering(seed: Int) throws {
        let keys = SigningKeyPair.generate()
        let document = try keys.sign(Self.spec)
        var tampered = document
        var bytes = Array(document.payload.utf8)
        let index = seed % bytes.count
        bytes[index] = bytes[index] == UInt8(ascii: "1") ? UInt8(ascii: "2") : UInt8(ascii: "1")
        tampered.payload = String(decoding: bytes, as: UTF8.self)
        #expect(throws: SignedDocument.Refusal.self) { try tampered.verified(with: keys.publicKey) }

        var badSignature = document
        var signature = Array(Data(base64URL: document.signature)!)
        signature[seed % signature.count] ^= 0x01
        badSignature.signature = Data(signature).base64URL
        #expect(throws: SignedDocument.Refusal.self) { try badSignature.verified(with: keys.publicKey) }

        #expect(throws: SignedDocument.Refusal.self) { try document.verified(with: SigningKeyPair.generate().publicKey) }
    }

    @Test("malformed public keys are rejected", arguments: ["", "ed25519:", "rsa:AAAA", "ed25519:not base64!", "ed25519:AAAA"])
    func badKeys(text: String) {
        #expect(throws: SigningPublicKey.Invalid.self) { try SigningPublicKey(parsing: text) }
    }
}

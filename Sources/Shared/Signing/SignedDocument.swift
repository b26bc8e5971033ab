import Crypto
import Foundation

/// The control plane's Ed25519 public key, as agents pin it:
/// `ed25519:<base64url of the 32 raw bytes>`.
public struct SigningPublicKey: Sendable, Hashable, CustomStringConvertible {
    let key: Curve25519.Signing.PublicKey

    /// Why a key text could not be read.
    public struct Invalid: Error, Sendable, CustomStringConvertible {
        /// What is wrong.
        public let description: String
    }

    init(key: Curve25519.Signing.PublicKey) { self.key = key }

    /// Reads `ed25519:<base64url>`.
    public init(parsing text: String) throws(Invalid) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.hasPrefix("ed25519:"), let raw = Data(base64URL: String(trimmed.dropFirst("ed25519:".count))), raw.count == 32,
              let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw)
        else { throw Invalid(description: "a public key looks like ed25519:<43 base64url characters>") }
        self.key = key
    }

    /// The key as pinned in agent configuration.
    public var description: String { "ed25519:" + key.rawRepresentation.base64URL }

    /// A short fingerprint to compare out of band: the first 16 bytes of the
    /// key's SHA-256, as hex in groups of four (`3f2a:91c0:…`).
    public var fingerprint: String {
        let hex = DefinitionCanonicalizer.hexadecimal(SHA256.hash(data: key.rawRepresentation).prefix(16))
        return stride(from: 0, to: hex.count, by: 4).map { offset in
            let start = hex.index(hex.startIndex, offsetBy: offset)
            return String(hex[start..<hex.index(start, offsetBy: 4)])
        }.joined(separator: ":")
    }

    public static func == (lhs: SigningPublicKey, rhs: SigningPublicKey) -> Bool { lhs.key.rawRepresentation == rhs.key.rawRepresentation }
    public func hash(into hasher: inout Hasher) { hasher.combine(key.rawRepresentation) }
}

/// The control plane's Ed25519 key pair, which signs job specs.
public struct SigningKeyPair: Sendable {
    let privateKey: Curve25519.Signing.PrivateKey

    /// A new random key pair.
    public static func generate() -> SigningKeyPair { SigningKeyPair(privateKey: Curve25519.Signing.PrivateKey()) }

    /// Restores a key pair from its 32 raw private-key bytes.
    public init(rawPrivateKey: Data) throws {
        privateKey = try Curve25519.Signing.PrivateKey(rawRepresentation: rawPrivateKey)
    }

    init(privateKey: Curve25519.Signing.PrivateKey) { self.privateKey = privateKey }

    /// The 32 raw private-key bytes, for the control plane's own storage only.
    public var rawPrivateKey: Data { privateKey.rawRepresentation }

    /// The public half, which agents pin.
    public var publicKey: SigningPublicKey { SigningPublicKey(key: privateKey.publicKey) }

    /// Signs `payload`: its canonical JSON text, and the signature over exactly those bytes.
    public func sign(_ payload: JSONValue) throws -> SignedDocument {
        let text = payload.canonicalString
        let signature = try privateKey.signature(for: Data(text.utf8))
        return SignedDocument(payload: text, signature: Data(signature).base64URL, keyFingerprint: publicKey.fingerprint)
    }
}

/// A signed JSON document as it crosses the boundary: the canonical payload
/// text, and an Ed25519 signature over its UTF-8 bytes.
public struct SignedDocument: Sendable, Codable, Hashable {
    /// The payload's canonical JSON text.
    public var payload: String
    /// The signature, base64url.
    public var signature: String
    /// The fingerprint of the key that signed it, to say which key was expected.
    public var keyFingerprint: String

    /// Creates a document.
    public init(payload: String, signature: String, keyFingerprint: String) {
        self.payload = payload
        self.signature = signature
        self.keyFingerprint = keyFingerprint
    }

    /// Why a document was refused.
    public enum Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        /// The signature does not verify with the pinned key (tampered, or signed by another key).
        case badSignature(expectedKey: String, signedBy: String)
        /// The payload is not JSON.
        case malformedPayload

        public var description: String {
            switch self {
            case .badSignature(let expected, let signedBy):
                return "the signature does not verify with the pinned key \(expected) (document claims key \(signedBy))"
            case .malformedPayload:
                return "the signed payload is not JSON"
            }
        }
    }

    /// The payload, if the signature verifies with `key`; never the payload of
    /// a document that does not verify.
    public func verified(with key: SigningPublicKey) throws(Refusal) -> JSONValue {
        guard let signatureBytes = Data(base64URL: signature), key.key.isValidSignature(signatureBytes, for: Data(payload.utf8)) else {
            throw .badSignature(expectedKey: key.fingerprint, signedBy: keyFingerprint)
        }
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(payload.utf8)) else { throw .malformedPayload }
        return value
    }
}

/// A value the control plane signs (a job spec, an access snapshot): its
/// Swift property names and ISO-8601 dates, as canonical JSON, with the
/// value's signing domain in the signed bytes (`signing_domain`), so a
/// signature made for one kind of document never passes for another.
public protocol SignedPayload: Codable {
    /// What kind of signed document this is, such as `larder.job-spec.v1`.
    static var signingDomain: String { get }
}

/// Why a verified payload is not a value of the expected kind.
public struct SigningDomainMismatch: Error, Sendable, CustomStringConvertible {
    /// The domain expected, and the one the payload carries (nil: none).
    public let expected: String, found: String?
    public var description: String {
        "the signed document is \(found.map { "a \($0)" } ?? "of no signing domain"), not a \(expected): refused"
    }
}

extension SignedPayload {
    /// The value as the JSON that is signed, its signing domain included.
    public func jsonValue() throws -> JSONValue {
        let encoder = APICoding.makeEncoder()
        encoder.keyEncodingStrategy = .useDefaultKeys
        guard case .object(var members) = try JSONDecoder().decode(JSONValue.self, from: encoder.encode(self)) else {
            throw SigningDomainMismatch(expected: Self.signingDomain, found: nil)
        }
        members["signing_domain"] = .string(Self.signingDomain)
        return .object(members)
    }

    /// Reads the value from a verified payload, which must carry this type's signing domain.
    public init(verified payload: JSONValue) throws {
        guard case .object(let members) = payload, case .string(Self.signingDomain)? = members["signing_domain"] else {
            var found: String?
            if case .object(let members) = payload, case .string(let domain)? = members["signing_domain"] { found = domain }
            throw SigningDomainMismatch(expected: Self.signingDomain, found: found)
        }
        let decoder = APICoding.makeDecoder()
        decoder.keyDecodingStrategy = .useDefaultKeys
        self = try decoder.decode(Self.self, from: Data(payload.canonicalString.utf8))
    }
}

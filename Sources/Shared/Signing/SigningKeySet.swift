import Foundation

/// The control plane's signing keys as it announces them to agents (in the
/// hello answer and in every heartbeat answer), signed by its active key and,
/// during a rotation, by the key before it as well: an agent accepts a key set
/// signed by a key it already trusts, so trust passes from one key to the next
/// without anyone editing an agent's settings.
public struct SigningKeySet: SignedPayload, Sendable, Hashable {
    public static let signingDomain = "larder.signing-keys.v1"

    /// Grows with every change of the keys; an agent never goes back to a lower one.
    public var generation: Int64
    /// The key that signs job specs and snapshots now (`ed25519:…`).
    public var active: String
    /// Every key an agent should accept: the active one, the one coming (made
    /// by `larder-control key rotate`, not yet signing) and the one going.
    public var keys: [String]

    /// Creates a key set.
    public init(generation: Int64, active: String, keys: [String]) {
        self.generation = generation
        self.active = active
        self.keys = keys
    }
}

extension SignedDocument {
    /// The payload, if the signature verifies with one of `keys` (the one the
    /// document names first); never the payload of a document that does not verify.
    public func verified(withAnyOf keys: [SigningPublicKey]) throws(Refusal) -> JSONValue {
        let ordered = keys.filter { $0.fingerprint == keyFingerprint } + keys.filter { $0.fingerprint != keyFingerprint }
        var refusal = Refusal.badSignature(expectedKey: keys.map(\.fingerprint).joined(separator: " or "), signedBy: keyFingerprint)
        for key in ordered {
            do { return try verified(with: key) } catch {
                if case .malformedPayload = error { refusal = error }
            }
        }
        throw refusal
    }
}

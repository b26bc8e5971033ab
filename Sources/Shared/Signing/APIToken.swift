import Crypto
import Foundation

/// A bearer token: `lrd_<public id>_<secret>`. The control plane issues and
/// checks them; agents check them too, against their access snapshot.
///
/// The public id (12 characters) finds the token and is safe to show; the
/// secret (256 random bits, base64url) is shown once at creation and stored
/// only as its SHA-256 hash. Secrets have full entropy, so a fast hash is
/// enough; comparison is constant-time.
public struct APIToken: Sendable, Hashable {
    /// The prefix every token starts with, so secret scanners can spot leaked tokens.
    public static let prefix = "lrd_"
    /// The prefix of enrollment tokens: one-time secrets exchanged for an agent's credentials.
    public static let enrollmentPrefix = "lre_"
    static let publicIDAlphabet = Array("abcdefghijkmnpqrstuvwxyz23456789")

    /// The public id.
    public let publicID: String
    /// The secret.
    let secret: String
    /// `lrd_` for API tokens, `lre_` for enrollment tokens.
    public let prefix: String

    /// The token as sent in `Authorization: Bearer …`.
    public var text: String { "\(prefix)\(publicID)_\(secret)" }

    /// A new random token (an API token unless another prefix is given).
    public static func generate(prefix: String = APIToken.prefix) -> APIToken {
        var generator = SystemRandomNumberGenerator()
        let publicID = String((0..<12).map { _ in publicIDAlphabet.randomElement(using: &generator)! })
        let secret = SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }.base64URL
        return APIToken(publicID: publicID, secret: secret, prefix: prefix)
    }

    /// Reads a token with `prefix` (an API token by default); nil when it does not have the token's shape.
    public init?(parsing text: String, prefix: String = APIToken.prefix) {
        guard text.hasPrefix(prefix) else { return nil }
        let rest = text.dropFirst(prefix.count)
        guard let separator = rest.firstIndex(of: "_") else { return nil }
        let publicID = String(rest[..<separator])
        let secret = String(rest[rest.index(after: separator)...])
        // Byte checks: tokens arrive with every feature read, and `Character` properties are slow.
        guard publicID.utf8.count == 12, publicID.allSatisfy({ Self.publicIDAlphabet.contains($0) }),
              secret.utf8.count == 43,
              secret.utf8.allSatisfy({ byte in
                  (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                      || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
              })
        else { return nil }
        self.init(publicID: publicID, secret: secret, prefix: prefix)
    }

    init(publicID: String, secret: String, prefix: String = APIToken.prefix) {
        self.publicID = publicID
        self.secret = secret
        self.prefix = prefix
    }

    /// The SHA-256 of the secret: what is stored.
    public var secretHash: [UInt8] { Array(SHA256.hash(data: Data(secret.utf8))) }

    /// Whether `storedHash` is this token's secret hash, in constant time.
    public func matches(storedHash: [UInt8]) -> Bool {
        ConstantTime.equals(secretHash, storedHash)
    }
}

extension APIToken: CustomStringConvertible, CustomReflectable {
    /// The token with its secret left out, so printing or dumping it leaks nothing.
    public var description: String { "\(prefix)\(publicID)_…" }
    public var customMirror: Mirror { Mirror(self, children: ["publicID": publicID]) }
}

/// Comparisons whose duration does not depend on where inputs differ.
public enum ConstantTime {
    /// Whether `a` and `b` hold the same bytes, looking at every byte.
    public static func equals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.withUnsafeBufferPointer { x in b.withUnsafeBufferPointer { y in equals(x, y) } }
    }

    /// Whether `a` and `b` hold the same UTF-8 bytes, looking at every byte
    /// (only the lengths are compared first). Strings are not normalized.
    public static func equals(_ a: String, _ b: String) -> Bool {
        // Over the strings' contiguous UTF-8 (a header read from a request already is): no per-byte iterator.
        var a = a, b = b
        return a.withUTF8 { x in b.withUTF8 { y in equals(x, y) } }
    }

    private static func equals(_ x: UnsafeBufferPointer<UInt8>, _ y: UnsafeBufferPointer<UInt8>) -> Bool {
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for index in 0..<x.count { difference |= x[index] ^ y[index] }
        return difference == 0
    }
}

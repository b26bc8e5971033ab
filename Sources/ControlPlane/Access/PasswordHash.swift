import Crypto
import CryptoExtras
import Foundation
import Shared

/// Users' passwords, stored as scrypt hashes: `scrypt$N$r$p$salt$hash`
/// (salt and hash base64url). Service accounts and agents have none.
enum PasswordHash {
    /// The shortest password accepted.
    static let minimumLength = 12
    static let rounds = 1 << 14, blockSize = 8, parallelism = 1

    /// A hash of a random password nobody knows, to verify against when a
    /// user has none, so that both cases cost the same time.
    static let dummy: String = (try? make(APIToken.generate().text)) ?? "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

    static func make(_ password: String) throws -> String {
        let salt = SymmetricKey(size: .bits128).withUnsafeBytes { Data($0) }
        let key = try KDF.Scrypt.deriveKey(
            from: Data(password.utf8), salt: salt, outputByteCount: 32, rounds: rounds, blockSize: blockSize, parallelism: parallelism)
        let hash = key.withUnsafeBytes { Data($0) }
        return "scrypt$\(rounds)$\(blockSize)$\(parallelism)$\(salt.base64URL)$\(hash.base64URL)"
    }

    /// Whether `password` matches `stored`, compared in constant time.
    static func verify(_ password: String, against stored: String) -> Bool {
        let parts = stored.split(separator: "$").map(String.init)
        guard parts.count == 6, parts[0] == "scrypt", let rounds = Int(parts[1]), let blockSize = Int(parts[2]),
              let parallelism = Int(parts[3]), let salt = Data(base64URL: parts[4]), let expected = Data(base64URL: parts[5]),
              let key = try? KDF.Scrypt.deriveKey(
                  from: Data(password.utf8), salt: salt, outputByteCount: expected.count, rounds: rounds, blockSize: blockSize,
                  parallelism: parallelism)
        else { return false }
        return ConstantTime.equals(key.withUnsafeBytes { Array($0) }, Array(expected))
    }
}

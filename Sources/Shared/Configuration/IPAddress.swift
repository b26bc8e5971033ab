import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address, read with `inet_pton` (so `127.evil.example` is
/// no address at all). An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is
/// read as the IPv4 address it carries.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6.
    public let bytes: [UInt8]

    /// Reads `text`: dotted IPv4 or IPv6 text, optionally in brackets (`[::1]`), with no port or zone.
    public init?(_ text: String) {
        var text = text.trimmingCharacters(in: .whitespaces)
        if text.hasPrefix("["), text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let raw = withUnsafeBytes(of: &v6) { Array($0) }
        if raw[0..<10].allSatisfy({ $0 == 0 }), raw[10] == 0xFF, raw[11] == 0xFF {
            bytes = Array(raw[12..<16])
        } else {
            bytes = raw
        }
    }

    /// Whether this is an IPv4 address (IPv4-mapped ones included).
    public var isIPv4: Bool { bytes.count == 4 }

    /// Whether this is a loopback address: 127.0.0.0/8 or ::1.
    public var isLoopback: Bool { isIPv4 ? bytes[0] == 127 : bytes == Array(repeating: 0, count: 15) + [1] }

    public var description: String {
        if isIPv4 { return bytes.map(String.init).joined(separator: ".") }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        var raw = in6_addr()
        withUnsafeMutableBytes(of: &raw) { $0.copyBytes(from: bytes) }
        return inet_ntop(AF_INET6, &raw, &buffer, socklen_t(buffer.count)) != nil ? String(cString: buffer) : "?"
    }

    /// The first `bits` bits of the address, the rest zero.
    public func prefix(_ bits: Int) -> IPAddress {
        var masked = bytes
        for index in masked.indices {
            let keep = min(8, max(0, bits - index * 8))
            masked[index] &= keep == 8 ? 0xFF : UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
        }
        return IPAddress(bytes: masked)
    }

    init(bytes: [UInt8]) { self.bytes = bytes }
}

/// A network in CIDR notation (`10.0.0.0/8`, `fd00::/8`; a lone address is a /32 or /128).
public struct IPNetwork: Sendable, Hashable, CustomStringConvertible {
    public let address: IPAddress
    public let bits: Int

    /// Reads `text`; nil when it is not an address with an optional prefix length in range.
    public init?(_ text: String) {
        let parts = text.trimmingCharacters(in: .whitespaces).split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let address = IPAddress(String(parts[0])) else { return nil }
        let maximum = address.bytes.count * 8
        let bits = parts.count == 2 ? Int(parts[1]) : maximum
        guard let bits, (0...maximum).contains(bits) else { return nil }
        self.address = address.prefix(bits)
        self.bits = bits
    }

    /// Whether `address` is in this network.
    public func contains(_ address: IPAddress) -> Bool {
        address.bytes.count == self.address.bytes.count && address.prefix(bits) == self.address
    }

    public var description: String { "\(address)/\(bits)" }
}

import Foundation
import HTTPTypes
import Shared

/// Which address a request comes from: the connection's peer, unless the
/// peer is one of the trusted proxies (`LARDER_TRUSTED_PROXIES`), in which
/// case the address the proxies recorded in `Forwarded` (or, without it,
/// `X-Forwarded-For`): read from the right, the first address that is not
/// itself a trusted proxy. What a client writes into those headers is never
/// believed: only entries appended by trusted proxies are reached.
struct ClientAddresses: Sendable {
    let trustedProxies: [IPNetwork]

    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!
    static let forwarded = HTTPField.Name("Forwarded")!

    /// The client's address for a request from `peer` with `headers`.
    func resolve(peer: String?, headers: HTTPFields) -> String? {
        guard let peer, let peerAddress = IPAddress(peer) else { return peer }
        guard isTrusted(peerAddress) else { return peerAddress.description }
        var hops: [String] = []
        let forwarded = headers[values: Self.forwarded]
        if !forwarded.isEmpty {
            for element in forwarded.joined(separator: ",").split(separator: ",") {
                for pair in element.split(separator: ";") {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    if parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces).lowercased() == "for" {
                        hops.append(Self.host(of: parts[1].trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\""))))
                    }
                }
            }
        } else {
            hops = headers[values: Self.forwardedFor].joined(separator: ",").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        }
        var client = peerAddress
        for hop in hops.reversed() {
            // A hop that is no address ("unknown", an obfuscated name): the last trusted proxy is as far as we can see.
            guard let address = IPAddress(hop) else { break }
            client = address
            if !isTrusted(address) { break }
        }
        return client.description
    }

    func isTrusted(_ address: IPAddress) -> Bool { trustedProxies.contains { $0.contains(address) } }

    /// The host of a `Forwarded` node: `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]:4711`.
    static func host(of node: String) -> String {
        if node.hasPrefix("["), let end = node.firstIndex(of: "]") { return String(node[node.index(after: node.startIndex)..<end]) }
        if node.filter({ $0 == ":" }).count == 1, let colon = node.firstIndex(of: ":") { return String(node[..<colon]) }
        return node
    }
}

import Foundation
import Synchronization
import Testing
@testable import ControlPlane
@testable import Shared

/// A clock tests move by hand.
final class ManualClock: Sendable {
    private let current = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
    var now: Date { current.withLock { $0 } }
    func advance(_ seconds: TimeInterval) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }
}

@Suite("Access building blocks")
struct AccessUnitTests {
    @Test("tokens round-trip through their text, hide their secret when printed, and match only their own hash")
    func tokens() throws {
        let token = APIToken.generate()
        let parsed = try #require(APIToken(parsing: token.text))
        #expect(parsed == token)
        #expect(token.matches(storedHash: token.secretHash))
        #expect(!token.matches(storedHash: APIToken.generate().secretHash))
        #expect(!"\(token)".contains(token.secret) && !String(reflecting: token).contains(token.secret))
        for bad in ["", "lrd_", token.text + "x", token.text.replacingOccurrences(of: "lrd_", with: "tok_"), "lrd_SHOUTINGIDS_" + token.secret] {
            #expect(APIToken(parsing: bad) == nil)
        }
        #expect(Set((0..<200).map { _ in APIToken.generate().publicID }).count == 200)
    }

    @Test("constant-time comparison: equal only for the same bytes, whatever their length or where they differ")
    func constantTimeEquality() {
        let header = "Bearer " + APIToken.generate().text
        #expect(ConstantTime.equals(header, String(header)))
        #expect(ConstantTime.equals("", ""))
        var random = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var bytes = Array(header.utf8)
            let position = Int.random(in: 0..<bytes.count, using: &random)
            bytes[position] ^= UInt8.random(in: 1...127, using: &random)
            #expect(!ConstantTime.equals(header, String(decoding: bytes, as: UTF8.self)), "differs at \(position)")
        }
        #expect(!ConstantTime.equals(header, header + " "))
        #expect(!ConstantTime.equals(header, String(header.dropLast())))
        // Canonically equal but different bytes (NFC and NFD) are different headers.
        #expect(!ConstantTime.equals("Bearer caf\u{E9}", "Bearer cafe\u{301}"))
        #expect(ConstantTime.equals([1, 2, 3], [1, 2, 3]) && !ConstantTime.equals([1, 2, 3], [1, 2, 4]) && !ConstantTime.equals([1, 2], [1, 2, 3]))
    }

    @Test("passwords verify against their scrypt hash only")
    func passwords() throws {
        let hash = try PasswordHash.make("correct horse battery")
        #expect(hash.hasPrefix("scrypt$"))
        #expect(PasswordHash.verify("correct horse battery", against: hash))
        #expect(!PasswordHash.verify("correct horse batterz", against: hash))
        #expect(!PasswordHash.verify("anything", against: "not a hash"))
        #expect(try PasswordHash.make("correct horse battery") != hash, "salted")
    }

    @Test("the limiter blocks an address after a burst, for the rest of the window, per IPv6 /64")
    func limiter() {
        let clock = ManualClock()
        let limiter = FailedAuthenticationLimiter(burst: 3, window: 60, maximumAddresses: 100, now: { clock.now })
        for _ in 0..<2 { limiter.recordFailure("10.0.0.1") }
        #expect(limiter.retryAfter("10.0.0.1") == nil)
        limiter.recordFailure("10.0.0.1")
        #expect(limiter.retryAfter("10.0.0.1") == 60)
        #expect(limiter.retryAfter("10.0.0.2") == nil)
        clock.advance(45)
        #expect(limiter.retryAfter("10.0.0.1") == 15)
        clock.advance(16)
        #expect(limiter.retryAfter("10.0.0.1") == nil)

        for host in ["2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2:ffff::1"] { limiter.recordFailure(host) }
        #expect(limiter.retryAfter("2001:db8:1:2::99") != nil, "one /64 is one bucket")
        #expect(limiter.retryAfter("2001:db8:1:3::1") == nil)
        #expect(FailedAuthenticationLimiter.key("::1") == "0:0:0:0::/64")
    }

    @Test("the limiter tracks at most its bound of addresses, forgetting the stalest")
    func limiterBound() {
        let clock = ManualClock()
        let limiter = FailedAuthenticationLimiter(burst: 1, window: 600, maximumAddresses: 50, now: { clock.now })
        for index in 0..<500 {
            limiter.recordFailure("10.1.\(index / 256).\(index % 256)")
            clock.advance(0.01)
        }
        #expect(limiter.retryAfter("10.1.1.243") != nil, "the newest address is still tracked")
        #expect(limiter.retryAfter("10.1.0.0") == nil, "the oldest was forgotten")
    }

    @Test("the policy: roles include the ones the docs list, agents only reach the agent protocol")
    func authorizer() {
        let viewer = Caller(name: "v", kind: .user, isAdmin: false, roles: ["a": WorkspaceRole.viewer.granted], agentWorkspace: nil, tokenPublicID: "x")
        let editor = Caller(name: "e", kind: .serviceAccount, isAdmin: false, roles: ["a": WorkspaceRole.editor.granted], agentWorkspace: nil, tokenPublicID: "x")
        let agent = Caller(name: "g", kind: .agent, isAdmin: false, roles: [:], agentWorkspace: "a", tokenPublicID: "x")
        #expect(Authorizer.decide(.workspace(.editor), caller: viewer, workspace: "a", targetPrincipal: nil) == .forbidden)
        #expect(Authorizer.decide(.workspace(.consumer), caller: editor, workspace: "a", targetPrincipal: nil) == .allowed)
        #expect(Authorizer.decide(.workspace(.owner), caller: editor, workspace: "a", targetPrincipal: nil) == .forbidden)
        #expect(Authorizer.decide(.workspace(.viewer), caller: editor, workspace: "b", targetPrincipal: nil) == .hidden)
        #expect(Authorizer.decide(.selfOrAdmin, caller: viewer, workspace: nil, targetPrincipal: "v") == .allowed)
        #expect(Authorizer.decide(.selfOrAdmin, caller: viewer, workspace: nil, targetPrincipal: "e") == .forbidden)
        #expect(Authorizer.decide(.agentProtocol, caller: agent, workspace: "a", targetPrincipal: nil) == .allowed)
        #expect(Authorizer.decide(.agentProtocol, caller: agent, workspace: "b", targetPrincipal: nil) == .hidden)
        #expect(Authorizer.decide(.workspace(.viewer), caller: agent, workspace: "a", targetPrincipal: nil) == .forbidden)
        #expect(Authorizer.decide(.agentProtocol, caller: editor, workspace: "a", targetPrincipal: nil) == .forbidden)
        #expect(Authorizer.decide(.authenticated, caller: nil, workspace: nil, targetPrincipal: nil) == .unauthenticated)
        #expect(Set(WorkspaceRole.editor.granted) == [.viewer, .consumer, .operator, .editor])
        #expect(!WorkspaceRole.operator.granted.contains(.consumer))
    }
}

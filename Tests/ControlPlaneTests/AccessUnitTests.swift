import Foundation
import Synchronization
import Testing
@testable import ControlPlane
@testable import Shared
import HTTPTypes
import TestSupport

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

    @Test("the throttle: a subject's attempts come back one per window/burst; IPv6 by /64, IPv4-mapped as IPv4; reservations before the work")
    func throttle() {
        let clock = ManualClock()
        let throttle = AuthenticationThrottle(burst: 3, window: 60, capacity: 100, now: { clock.now })
        let address = AuthenticationThrottle.Subject.client("10.0.0.1")
        for _ in 0..<2 { throttle.recordFailure(address) }
        #expect(throttle.retryAfter(address) == nil)
        throttle.recordFailure(address)
        #expect(throttle.retryAfter(address) == 20, "one attempt comes back every 60/3 s")
        #expect(throttle.retryAfter(.client("10.0.0.2")) == nil)
        #expect(throttle.retryAfter(.token("abc")) == nil, "subjects are apart")
        clock.advance(15)
        #expect(throttle.retryAfter(address) == 5)
        clock.advance(6)
        #expect(throttle.retryAfter(address) == nil)

        for host in ["2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2:ffff::1"] { throttle.recordFailure(.client(host)) }
        #expect(throttle.retryAfter(.client("2001:db8:1:2::99")) != nil, "one /64 is one bucket")
        #expect(throttle.retryAfter(.client("2001:db8:1:3::1")) == nil)
        // A dual-stack listener sees IPv4 clients as IPv4-mapped IPv6: each is its own IPv4 address.
        #expect(AuthenticationThrottle.Subject.client("::ffff:192.0.2.7") == .client("192.0.2.7"))
        for _ in 0..<3 { throttle.recordFailure(.client("::ffff:192.0.2.7")) }
        #expect(throttle.retryAfter(.client("::ffff:192.0.2.8")) == nil)

        // Reservations: at most `burst` pass at once; a refund gives one back; a reset forgets the subject's failures.
        let user = AuthenticationThrottle.Subject.user("ada")
        #expect((0..<5).map { _ in throttle.reserve(user) == nil } == [true, true, true, false, false])
        throttle.refund(user)
        #expect(throttle.reserve(user) == nil)
        throttle.reset(user)
        #expect(throttle.reserve(user) == nil && throttle.reserve(user) == nil)
    }

    @Test("the throttle, property-style: over random failures and clock steps, a subject is held back exactly when a brute-force count of its attempts says so")
    func throttleAgainstModel() {
        var random = SeededGenerator(seed: 26)
        for round in 0..<40 {
            let clock = ManualClock()
            let burst = Int.random(in: 1...6, using: &random), window = Double(Int.random(in: 10...120, using: &random))
            let throttle = AuthenticationThrottle(burst: burst, window: window, capacity: 1_000, now: { clock.now })
            // The model: the allowance as a continuous token bucket, kept per subject in a dictionary.
            var model: [String: (available: Double, at: Double)] = [:]
            var time = 0.0
            for _ in 0..<200 {
                let subject = "s\(Int.random(in: 0..<4, using: &random))"
                if Bool.random(using: &random) {
                    let step = Double(Int.random(in: 0...Int(window), using: &random)) / 4
                    clock.advance(step)
                    time += step
                }
                var bucket = model[subject] ?? (Double(burst), time)
                bucket = (min(Double(burst), bucket.available + (time - bucket.at) * Double(burst) / window), time)
                let held = throttle.retryAfter(.token(subject)) != nil
                #expect(held == (bucket.available < 1), "round \(round): \(subject) at \(time)")
                throttle.recordFailure(.token(subject))
                model[subject] = (max(0, bucket.available - 1), time)
            }
        }
    }

    @Test("the throttle tracks at most its capacity of subjects, forgetting the one tracked longest")
    func throttleBound() {
        let clock = ManualClock()
        let throttle = AuthenticationThrottle(burst: 1, window: 600, capacity: 50, now: { clock.now })
        for index in 0..<5_000 {
            throttle.recordFailure(.client("10.1.\(index / 256 % 256).\(index % 256)"))
            clock.advance(0.01)
        }
        #expect(throttle.trackedCount == 50)
        #expect(throttle.retryAfter(.client("10.1.19.135")) != nil, "the newest address is still tracked")
        #expect(throttle.retryAfter(.client("10.1.0.0")) == nil, "the oldest was forgotten")
    }

    @Test("client addresses: the peer, unless it is a trusted proxy; then the rightmost forwarded address that is not one; what a client writes is never believed")
    func clientAddresses() {
        let addresses = ClientAddresses(trustedProxies: [IPNetwork("10.0.0.0/8")!, IPNetwork("fd00::/8")!])
        var headers = HTTPFields()
        headers[ClientAddresses.forwardedFor] = "198.51.100.1, 203.0.113.9, 10.0.0.7"
        #expect(addresses.resolve(peer: "10.0.0.2", headers: headers) == "203.0.113.9")
        #expect(addresses.resolve(peer: "192.0.2.50", headers: headers) == "192.0.2.50", "an untrusted peer's headers are ignored")
        #expect(addresses.resolve(peer: "::ffff:10.0.0.2", headers: headers) == "203.0.113.9", "IPv4-mapped peers are IPv4")
        var forwarded = HTTPFields()
        forwarded[ClientAddresses.forwarded] = #"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711", for=fd00::1"#
        forwarded[ClientAddresses.forwardedFor] = "198.51.100.200"
        #expect(addresses.resolve(peer: "fd00::2", headers: forwarded) == "2001:db8:cafe::17", "Forwarded wins over X-Forwarded-For")
        var unknown = HTTPFields()
        unknown[ClientAddresses.forwardedFor] = "203.0.113.9, unknown"
        #expect(addresses.resolve(peer: "10.0.0.2", headers: unknown) == "10.0.0.2", "no address past the proxy: the proxy's")
        #expect(ClientAddresses(trustedProxies: []).resolve(peer: "10.0.0.2", headers: headers) == "10.0.0.2")
        #expect(IPNetwork("10.0.0.0/33") == nil && IPNetwork("nonsense") == nil && IPNetwork("2001:db8::/48")?.contains(IPAddress("2001:db8:0:ffff::1")!) == true)
        // The CLI's loopback check reads addresses, not name prefixes.
        #expect(ControlPlaneConnection.isLoopback(host: "127.0.0.1") && ControlPlaneConnection.isLoopback(host: "[::1]") && ControlPlaneConnection.isLoopback(host: "localhost"))
        #expect(!ControlPlaneConnection.isLoopback(host: "127.evil.example") && !ControlPlaneConnection.isLoopback(host: "127.0.0.1.nip.io"))
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

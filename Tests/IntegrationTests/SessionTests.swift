import ControlPlane
import Foundation
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

@Suite("Sessions, passwords and the bootstrap token")
struct SessionTests {
    static func expiry(of publicID: String, _ server: RunningControlPlane) async throws -> Date? {
        try await TestDatabase.withClient(server.database) { client in
            for try await expires in try await client.query(
                "SELECT expires_at FROM api_tokens WHERE public_id = \(publicID)", logger: Logger(label: "test")).decode(Date?.self) { return expires }
            return nil
        }
    }

    @Test("a session mints tokens that end with it unless the password is given again; a wrong one is refused")
    func sessionTokensEndWithTheSession() async throws {
        try await TestControlPlane.withControlPlane { server in
            _ = try await server.client.createPrincipal(CreatePrincipalRequest(name: "ada", kind: .user, password: "correct horse battery staple"))
            let session = try await ControlPlaneClient(baseURL: server.baseURL).login(name: "ada", password: "correct horse battery staple", expiresInSeconds: 3_600)
            let ada = ControlPlaneClient(baseURL: server.baseURL, token: session.token)
            let sessionEnd = try #require(try await Self.expiry(of: session.resource.publicId, server))
            // No expiry asked, and one past the session: both end with the session.
            for asked in [nil, 30 * 86_400] as [Int?] {
                let minted = try await ada.createToken(for: "ada", expiresInSeconds: asked)
                #expect(try await Self.expiry(of: minted.resource.publicId, server) == sessionEnd)
            }
            // A shorter one stays shorter.
            let short = try await ada.createToken(for: "ada", expiresInSeconds: 600)
            #expect(try #require(try await Self.expiry(of: short.resource.publicId, server)) < sessionEnd)
            // With the password again: as asked (here, none).
            let lasting = try await ada.createToken(for: "ada", password: "correct horse battery staple")
            #expect(try await Self.expiry(of: lasting.resource.publicId, server) == nil)
            await #expect { _ = try await ada.createToken(for: "ada", password: "not my password at all") } throws: {
                ($0 as? ProblemDetails)?.field == "password"
            }
            // A token made with a non-session token (the admin's) is as asked.
            let byAdmin = try await server.client.createToken(for: "ada")
            #expect(try await Self.expiry(of: byAdmin.resource.publicId, server) == nil)
        }
    }

    @Test("changing one's password needs the current one and ends one's other sessions; an admin's reset ends them all")
    func passwordChange() async throws {
        try await TestControlPlane.withControlPlane { server in
            _ = try await server.client.createPrincipal(CreatePrincipalRequest(name: "ada", kind: .user, password: "correct horse battery staple"))
            func login(_ password: String) async throws -> ControlPlaneClient {
                ControlPlaneClient(baseURL: server.baseURL, token: try await ControlPlaneClient(baseURL: server.baseURL).login(name: "ada", password: password).token)
            }
            let here = try await login("correct horse battery staple"), elsewhere = try await login("correct horse battery staple")
            let apiToken = ControlPlaneClient(baseURL: server.baseURL, token: try await server.client.createToken(for: "ada").token)
            for current in [nil, "a wrong current password"] as [String?] {
                await #expect { try await here.setPassword("a brand new passphrase", for: "ada", current: current) } throws: {
                    ($0 as? ProblemDetails)?.field == "current_password"
                }
            }
            #expect(try await elsewhere.whoami().principal.name == "ada", "a refused change ends nothing")
            try await here.setPassword("a brand new passphrase", for: "ada", current: "correct horse battery staple")
            #expect(try await here.whoami().principal.name == "ada", "the session that changed it goes on")
            await #expect { _ = try await elsewhere.whoami() } throws: { ($0 as? ProblemDetails)?.status == 401 }
            #expect(try await apiToken.whoami().principal.name == "ada", "API tokens are not sessions")
            // An admin resets it without the current one; every session of the user ends.
            try await server.client.setPassword("reset by the admin, 2026", for: "ada")
            await #expect { _ = try await here.whoami() } throws: { ($0 as? ProblemDetails)?.status == 401 }
            _ = try await login("reset by the admin, 2026")
        }
    }

    @Test("the bootstrap token expires after LARDER_BOOTSTRAP_TTL and stops once an admin of one's own exists")
    func bootstrapTokenEnds() async throws {
        try await TestControlPlane.withControlPlane { server in
            let bootstrap = ControlPlaneClient(baseURL: server.baseURL, token: server.bootstrapToken)
            let admin = try await bootstrap.whoami()
            let expires = try #require(try await Self.expiry(of: admin.tokenPublicId, server))
            #expect(abs(expires.timeIntervalSinceNow - 86_400) < 600)
            // The operator makes an admin of their own; the bootstrap token ends in the same step (and no other).
            _ = try await bootstrap.createPrincipal(CreatePrincipalRequest(name: "ops", kind: .user, admin: true, password: "the operators' own passphrase"))
            await #expect { _ = try await bootstrap.whoami() } throws: { ($0 as? ProblemDetails)?.status == 401 }
            #expect(try await server.client.whoami().principal.name == "admin")
            let ops = try await ControlPlaneClient(baseURL: server.baseURL).login(name: "ops", password: "the operators' own passphrase")
            #expect(try await ControlPlaneClient(baseURL: server.baseURL, token: ops.token).whoami().principal.name == "ops")
        }
    }
}

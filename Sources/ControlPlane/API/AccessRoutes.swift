import Foundation
import Hummingbird
import Shared

/// Identity and access: login, whoami, principals and their tokens,
/// workspace role bindings, agents, and the audit log.
struct AccessRoutes {
    let store: any AccessStore
    let throttle: AuthenticationThrottle
    let passwords: PasswordWork
    let failures: FailedAttemptAudit
    let now: @Sendable () -> Date

    /// The longest user name a login may claim (a longer one cannot exist).
    static let maximumNameLength = 256

    /// The longest session `POST /v1/login` hands out.
    static let maximumSession: TimeInterval = 30 * 86_400
    /// The longest lifetime a token may be given (ten years); longer means no expiry.
    static let maximumTokenLifetime = 3_650 * 86_400
    /// Names that would read like something else in the audit log.
    static let reservedNames: Set<String> = ["anonymous", "bootstrap"]

    /// The login route audits itself, so the record names the user tried.
    func audit(_ context: ControlPlaneRequestContext, principal: String, status: Int, outcome: String) async {
        let record = AuditRecord(
            principal: principal, action: "POST /v1/login", resource: "/v1/login", workspace: nil, outcome: outcome,
            status: status, requestID: context.requestID, clientAddress: context.clientAddress)
        // Failed logins are counted per source, name and minute rather than written one by one.
        if outcome == "denied" {
            await failures.record(record)
            return
        }
        do {
            try await store.appendAudit(record)
        } catch {
            context.logger.error("could not write the audit log", metadata: ["larder.error": .string(String(describing: error))])
        }
    }

    func register(on routes: inout APIRouteBuilder) {
        let store = self.store, throttle = self.throttle, passwords = self.passwords, now = self.now

        let loginAuditor = self
        routes.add(.post, "/v1/login", permission: .publicAccess) { request, context in
            let body = try await request.decodeBody(as: LoginRequest.self, context: context)
            let lifetime = TimeInterval(body.expiresInSeconds ?? 12 * 3_600)
            guard lifetime >= 60, lifetime <= Self.maximumSession else {
                throw AccessError.invalidArgument(field: "expires_in_seconds", detail: "a session lasts from 60 seconds to 30 days")
            }
            guard body.name.count <= Self.maximumNameLength, body.password.count <= 4_096 else {
                throw AccessError.invalidArgument(
                    field: body.name.count > Self.maximumNameLength ? "name" : "password", detail: "too long to be a user's name or password")
            }
            // The attempt is taken from the user's and the address's allowance before the work, so
            // parallel guesses for one user are cut at the allowance, however many arrive at once.
            let user = AuthenticationThrottle.Subject.user(body.name), address = AuthenticationThrottle.Subject.client(context.clientAddress)
            if let seconds = throttle.reserve(user) {
                await loginAuditor.audit(context, principal: body.name, status: 429, outcome: "denied")
                throw AccessError.tooManyFailures(retryAfterSeconds: seconds)
            }
            if let seconds = throttle.reserve(address) {
                throttle.refund(user)
                await loginAuditor.audit(context, principal: body.name, status: 429, outcome: "denied")
                throw AccessError.tooManyFailures(retryAfterSeconds: seconds)
            }
            let valid: Bool
            do {
                valid = try await Self.verifyPassword(body.password, of: body.name, store: store, passwords: passwords)
            } catch is PasswordWork.Busy {
                throttle.refund(user)
                throttle.refund(address)
                throw AccessError.tooManyFailures(retryAfterSeconds: 1)
            }
            guard valid else {
                await loginAuditor.audit(context, principal: body.name, status: 401, outcome: "denied")
                throw AccessError.unauthenticated("wrong user name or password")
            }
            throttle.reset(user)
            throttle.refund(address)
            let token = APIToken.generate()
            let resource = try await store.createToken(
                token, for: body.name, description: "session from larder login", expiresAt: now().addingTimeInterval(lifetime),
                audience: .controlPlane, session: true, by: body.name)
            await loginAuditor.audit(context, principal: body.name, status: 201, outcome: "success")
            return try APIResponse.json(CreatedToken(token: token.text, resource: resource), status: .created)
        }
        routes.add(.get, "/v1/whoami", permission: .identity) { _, context in
            guard let caller = context.caller else { throw AccessError.unauthenticated("no token") }
            let principal = try await store.principal(named: caller.name)
            let roles = caller.roles.mapValues { $0.sorted() }
            return try APIResponse.json(WhoAmIResource(principal: principal, roles: roles, tokenPublicId: caller.tokenPublicID))
        }

        routes.add(.get, "/v1/principals", permission: .instanceAdmin) { _, _ in
            try APIResponse.json(try await store.principals(agentsOf: nil))
        }
        routes.add(.post, "/v1/principals", permission: .instanceAdmin) { request, context in
            let body = try await request.decodeBody(as: CreatePrincipalRequest.self, context: context)
            guard PrincipalName.isValid(body.name) else {
                throw AccessError.invalidArgument(
                    field: "name", detail: "'\(body.name)' is not a valid name: lowercase letters, digits, '.', '_', '-' and '@'")
            }
            guard !Self.reservedNames.contains(body.name) else {
                throw AccessError.invalidArgument(field: "name", detail: "'\(body.name)' is reserved")
            }
            guard body.kind != .agent else {
                throw AccessError.invalidArgument(field: "kind", detail: "agents are created with POST /v1/workspaces/{workspace}/agents")
            }
            var hash: String?
            if let password = body.password {
                guard body.kind == .user else {
                    throw AccessError.invalidArgument(field: "password", detail: "service accounts have no password; give them tokens")
                }
                hash = try await Self.hashPassword(password, with: passwords)
            }
            return try APIResponse.json(try await store.createPrincipal(body, passwordHash: hash, by: context.principal), status: .created)
        }
        routes.add(.get, "/v1/principals/{principal}", permission: .selfOrAdmin) { _, context in
            try APIResponse.json(try await store.principal(named: try context.pathParameter("principal")))
        }
        routes.add(.delete, "/v1/principals/{principal}", permission: .instanceAdmin) { _, context in
            let name = try context.pathParameter("principal")
            guard name != context.principal else {
                throw AccessError.invalidArgument(field: "principal", detail: "you cannot disable yourself")
            }
            try await store.disablePrincipal(named: name)
            return APIResponse.empty(.noContent)
        }
        routes.add(.put, "/v1/principals/{principal}/password", permission: .selfOrAdmin) { request, context in
            let body = try await request.decodeBody(as: SetPasswordRequest.self, context: context)
            let principal = try context.pathParameter("principal")
            // One's own password changes only with the current one (a stolen session cannot take the account);
            // an admin resets another user's without it.
            if principal == context.principal {
                try await Self.checkPassword(
                    body.currentPassword, of: principal, field: "current_password", store: store, throttle: throttle, passwords: passwords, context: context)
            }
            try await store.setPasswordHash(try await Self.hashPassword(body.password, with: passwords), for: principal)
            // The user's other sessions end: whoever held one loses it with the old password.
            let ended = try await store.revokeSessions(of: principal, except: principal == context.principal ? context.caller?.tokenPublicID : nil)
            context.logger.notice("password changed", metadata: ["larder.principal": .string(principal), "larder.sessions_ended": "\(ended)"])
            return APIResponse.empty(.noContent)
        }
        routes.add(.get, "/v1/principals/{principal}/tokens", permission: .selfOrAdmin) { _, context in
            try APIResponse.json(try await store.tokens(of: try context.pathParameter("principal")))
        }
        routes.add(.post, "/v1/principals/{principal}/tokens", permission: .selfOrAdmin) { request, context in
            let body = try await request.decodeBody(as: CreateTokenRequest.self, context: context)
            var expiresAt: Date?
            if let seconds = body.expiresInSeconds {
                guard (60...Self.maximumTokenLifetime).contains(seconds) else {
                    throw AccessError.invalidArgument(
                        field: "expires_in_seconds", detail: "from 60 seconds to \(Self.maximumTokenLifetime / 86_400) days; omit it for no expiry")
                }
                expiresAt = now().addingTimeInterval(TimeInterval(seconds))
            }
            let principal = try context.pathParameter("principal")
            let audience = body.audience ?? .controlPlane
            if audience != .controlPlane, try await store.principal(named: principal).kind == .agent {
                throw AccessError.invalidArgument(field: "audience", detail: "an agent's tokens work on the control plane only")
            }
            // A session mints tokens that end with it, unless the password is given again: a stolen
            // session cannot be turned into a token that outlives it.
            if let caller = context.caller, caller.isSession {
                if body.password != nil {
                    try await Self.checkPassword(
                        body.password, of: caller.name, field: "password", store: store, throttle: throttle, passwords: passwords, context: context)
                } else if let end = caller.tokenExpiresAt, expiresAt.map({ $0 > end }) ?? true {
                    expiresAt = end
                }
            }
            let token = APIToken.generate()
            let resource = try await store.createToken(
                token, for: principal, description: body.description, expiresAt: expiresAt, audience: audience, session: false, by: context.principal)
            return try APIResponse.json(CreatedToken(token: token.text, resource: resource), status: .created)
        }
        routes.add(.delete, "/v1/principals/{principal}/tokens/{token}", permission: .selfOrAdmin) { _, context in
            try APIResponse.json(try await store.revokeToken(
                publicID: try context.pathParameter("token"), of: try context.pathParameter("principal")))
        }

        routes.add(.get, "/v1/workspaces/{workspace}/access", permission: .workspace(.owner)) { _, context in
            try APIResponse.json(try await store.bindings(in: try context.pathParameter("workspace")))
        }
        routes.add(.post, "/v1/workspaces/{workspace}/access", permission: .workspace(.owner)) { request, context in
            let body = try await request.decodeBody(as: GrantRequest.self, context: context)
            let binding = try await store.grant(body.role, to: body.principal, in: try context.pathParameter("workspace"), by: context.principal)
            return try APIResponse.json(binding, status: .created)
        }
        routes.add(.delete, "/v1/workspaces/{workspace}/access/{principal}/{role}", permission: .workspace(.owner)) { _, context in
            let text = try context.pathParameter("role")
            guard let role = WorkspaceRole(rawValue: text) else {
                throw AccessError.invalidArgument(field: "role", detail: "unknown role '\(text)'")
            }
            try await store.revoke(role, from: try context.pathParameter("principal"), in: try context.pathParameter("workspace"))
            return APIResponse.empty(.noContent)
        }

        routes.add(.post, "/v1/workspaces/{workspace}/agents", permission: .instanceAdmin) { request, context in
            let body = try await request.decodeBody(as: CreateAgentRequest.self, context: context)
            guard PrincipalName.isValid(body.name), !Self.reservedNames.contains(body.name) else {
                throw AccessError.invalidArgument(field: "name", detail: "'\(body.name)' is not a valid name")
            }
            guard Identifier.isValidWorkspace(body.environment) else {
                throw AccessError.invalidArgument(field: "environment", detail: "'\(body.environment)' is not a valid environment name")
            }
            let agent = try await store.createAgent(body, workspace: try context.pathParameter("workspace"), by: context.principal)
            return try APIResponse.json(agent, status: .created)
        }

        routes.add(.get, "/v1/audit", permission: .auditRead) { request, _ in
            var since: Date?
            if let text = request.queryString("since") {
                guard let date = RFC3339.parse(text) else { throw AccessError.invalidArgument(field: "since", detail: "an RFC 3339 timestamp") }
                since = date
            }
            var before: Int64?
            if let cursor = request.queryString("cursor") {
                guard let id = Int64(try PageCursor.decode(cursor, parts: 1)[0]) else {
                    throw RegistryError.invalidArgument(field: "cursor", detail: "the cursor is not one this server issued")
                }
                before = id
            }
            let outcome = request.queryString("outcome")
            if let outcome, !["success", "failure", "denied"].contains(outcome) {
                throw AccessError.invalidArgument(field: "outcome", detail: "'outcome' is success, failure or denied")
            }
            let filter = AuditFilter(
                workspace: request.queryString("workspace"), principal: request.queryString("principal"),
                outcome: outcome, since: since, before: before,
                limit: try request.queryInteger("limit", default: 100, range: 1...1000))
            return try APIResponse.json(try await store.audit(filter))
        }
    }

    /// Checks `password` as `name`'s current password (throttled like a login): 401 naming `field` when it is wrong or missing.
    static func checkPassword(
        _ password: String?, of name: String, field: String, store: any AccessStore, throttle: AuthenticationThrottle, passwords: PasswordWork,
        context: ControlPlaneRequestContext
    ) async throws {
        guard let password, !password.isEmpty, password.count <= 4_096 else {
            throw AccessError.invalidArgument(field: field, detail: "give your current password")
        }
        let user = AuthenticationThrottle.Subject.user(name)
        if let seconds = throttle.reserve(user) { throw AccessError.tooManyFailures(retryAfterSeconds: seconds) }
        let valid: Bool
        do {
            valid = try await verifyPassword(password, of: name, store: store, passwords: passwords)
        } catch is PasswordWork.Busy {
            throttle.refund(user)
            throw AccessError.tooManyFailures(retryAfterSeconds: 1)
        }
        guard valid else { throw AccessError.invalidArgument(field: field, detail: "that is not your current password") }
        throttle.refund(user)
    }

    /// Whether `password` is user `name`'s, checked on the password pool. Unknown users (and users
    /// without a password) are checked against a dummy hash, so the answer takes as long and names do not leak.
    static func verifyPassword(_ password: String, of name: String, store: any AccessStore, passwords: PasswordWork) async throws -> Bool {
        let stored = try await store.passwordHash(of: name)
        return try await passwords.run { PasswordHash.verify(password, against: stored ?? PasswordHash.dummy) } && stored != nil
    }

    static func hashPassword(_ password: String, with passwords: PasswordWork) async throws -> String {
        guard password.count >= PasswordHash.minimumLength else {
            throw AccessError.invalidArgument(field: "password", detail: "a password has at least \(PasswordHash.minimumLength) characters")
        }
        guard password.count <= 4_096 else { throw AccessError.invalidArgument(field: "password", detail: "a password has at most 4,096 characters") }
        do {
            return try await passwords.run { try PasswordHash.make(password) }
        } catch is PasswordWork.Busy {
            throw AccessError.tooManyFailures(retryAfterSeconds: 1)
        }
    }
}

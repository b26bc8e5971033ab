import Foundation

extension ControlPlaneClient {
    /// Exchanges a user's password for a session token.
    public func login(name: String, password: String, expiresInSeconds: Int? = nil) async throws -> CreatedToken {
        try await send(.POST, "/v1/login", body: LoginRequest(name: name, password: password, expiresInSeconds: expiresInSeconds))
    }

    /// Who the token belongs to.
    public func whoami() async throws -> WhoAmIResource {
        try await send(.GET, "/v1/whoami")
    }

    /// Every principal (admins).
    public func principals() async throws -> [PrincipalResource] {
        try await send(.GET, "/v1/principals")
    }

    /// One principal.
    public func principal(_ name: String) async throws -> PrincipalResource {
        try await send(.GET, "/v1/principals/\(Self.segment(name))")
    }

    /// Creates a user or service account.
    public func createPrincipal(_ request: CreatePrincipalRequest) async throws -> PrincipalResource {
        try await send(.POST, "/v1/principals", body: request)
    }

    /// Disables a principal.
    public func disablePrincipal(_ name: String) async throws {
        try await sendRaw(.DELETE, "/v1/principals/\(Self.segment(name))")
    }

    /// Sets a user's password (one's own needs the current one).
    public func setPassword(_ password: String, for name: String, current: String? = nil) async throws {
        try await sendRaw(.PUT, "/v1/principals/\(Self.segment(name))/password", body: SetPasswordRequest(password: password, currentPassword: current))
    }

    /// A principal's tokens.
    public func tokens(of principal: String) async throws -> [TokenResource] {
        try await send(.GET, "/v1/principals/\(Self.segment(principal))/tokens")
    }

    /// Creates a token for a principal; the secret is in the answer only.
    public func createToken(
        for principal: String, description: String? = nil, expiresInSeconds: Int? = nil, audience: TokenAudience? = nil, password: String? = nil
    ) async throws -> CreatedToken {
        try await send(
            .POST, "/v1/principals/\(Self.segment(principal))/tokens",
            body: CreateTokenRequest(description: description, expiresInSeconds: expiresInSeconds, audience: audience, password: password))
    }

    /// Revokes a token.
    @discardableResult
    public func revokeToken(_ publicID: String, of principal: String) async throws -> TokenResource {
        try await send(.DELETE, "/v1/principals/\(Self.segment(principal))/tokens/\(Self.segment(publicID))")
    }

    /// A workspace's role bindings.
    public func bindings(workspace: String) async throws -> [RoleBindingResource] {
        try await send(.GET, "/v1/workspaces/\(Self.segment(workspace))/access")
    }

    /// Grants a role.
    @discardableResult
    public func grant(_ role: WorkspaceRole, to principal: String, workspace: String) async throws -> RoleBindingResource {
        try await send(.POST, "/v1/workspaces/\(Self.segment(workspace))/access", body: GrantRequest(principal: principal, role: role))
    }

    /// Revokes a role.
    public func revoke(_ role: WorkspaceRole, from principal: String, workspace: String) async throws {
        try await sendRaw(.DELETE, "/v1/workspaces/\(Self.segment(workspace))/access/\(Self.segment(principal))/\(role.rawValue)")
    }

    /// Registers an agent of a workspace.
    public func createAgent(name: String, environment: String, workspace: String) async throws -> PrincipalResource {
        try await send(.POST, "/v1/workspaces/\(Self.segment(workspace))/agents", body: CreateAgentRequest(name: name, environment: environment))
    }

    /// Creates a one-time enrollment token for installing an agent (workspace owners).
    public func createEnrollmentToken(_ request: CreateEnrollmentTokenRequest, workspace: String) async throws -> EnrollmentTokenResource {
        try await send(.POST, "/v1/workspaces/\(Self.segment(workspace))/enrollment-tokens", body: request)
    }

    /// Exchanges an enrollment token for a new agent's credentials (no bearer token needed).
    public func enroll(_ request: EnrollRequest) async throws -> EnrollResponse {
        try await send(.POST, "/v1/enroll", body: request)
    }

    /// As an agent: replaces this client's token with a new one; the old one expires after `graceSeconds`.
    public func rotateCredentials(graceSeconds: Int64? = nil) async throws -> RotateCredentialsResponse {
        try await send(.POST, "/v1/agent/credentials", body: RotateCredentialsRequest(graceSeconds: graceSeconds))
    }

    /// Removes an agent of a workspace: it is disabled and its tokens revoked at once.
    public func removeAgent(_ name: String, workspace: String) async throws {
        try await sendRaw(.DELETE, "/v1/workspaces/\(Self.segment(workspace))/agents/\(Self.segment(name))")
    }

    /// One page of the audit log, newest first.
    public func audit(
        workspace: String? = nil, principal: String? = nil, outcome: String? = nil, since: Date? = nil, cursor: String? = nil, limit: Int = 100
    ) async throws -> Page<AuditEntry> {
        try await send(
            .GET, "/v1/audit",
            query: [
                ("workspace", workspace), ("principal", principal), ("outcome", outcome), ("since", since.map(RFC3339.format)),
                ("cursor", cursor), ("limit", "\(limit)"),
            ])
    }
}

import Shared

/// What authorization decided for one request.
public enum AccessDecision: Sendable, Equatable {
    /// Go ahead.
    case allowed
    /// No (valid) credentials: 401.
    case unauthenticated
    /// Known caller, not allowed: 403.
    case forbidden
    /// The caller may not know the workspace exists: answered as 404.
    case hidden
    /// The caller's token works only on agents' feature servers: 403.
    case wrongAudience
}

/// Decides who may do what: the whole access policy, as pure logic.
/// The table in `docs/access-control.md` describes the same rules.
public enum Authorizer {
    /// The decision for `caller` (nil: anonymous) needing `permission`, with
    /// the workspace and principal the request names, if any.
    public static func decide(_ permission: Permission, caller: Caller?, workspace: String?, targetPrincipal: String?) -> AccessDecision {
        if permission == .publicAccess { return .allowed }
        guard let caller else { return .unauthenticated }
        // A scrape token reads /metrics (and says whose it is), nothing else.
        if caller.audience == .metrics { return permission == .metrics || permission == .identity ? .allowed : .wrongAudience }
        // A data-plane token (a model server's, which agents see) is worth nothing here but
        // to say whose it is: one that leaks at an agent cannot be replayed against this API.
        if !caller.audience.includesControlPlane { return permission == .identity ? .allowed : .wrongAudience }
        if caller.kind == .agent {
            // Agents act only through the agent protocol, and only for their own
            // workspace (which their token names when the path does not).
            guard permission == .agentProtocol else { return .forbidden }
            return workspace == nil || workspace == caller.agentWorkspace ? .allowed : .hidden
        }
        switch permission {
        case .publicAccess:
            return .allowed
        case .agentProtocol:
            return .forbidden
        case .authenticated, .identity:
            return .allowed
        case .instanceAdmin, .metrics:
            return caller.isAdmin ? .allowed : .forbidden
        case .selfOrAdmin:
            return caller.isAdmin || (targetPrincipal != nil && targetPrincipal == caller.name) ? .allowed : .forbidden
        case .workspace(let role):
            guard let workspace else { return .forbidden }
            if caller.isAdmin { return .allowed }
            guard caller.canSee(workspace: workspace) else { return .hidden }
            return caller.roles[workspace, default: []].contains(role) ? .allowed : .forbidden
        case .auditRead:
            if caller.isAdmin { return .allowed }
            guard let workspace else { return .forbidden }
            guard caller.canSee(workspace: workspace) else { return .hidden }
            return caller.roles[workspace, default: []].contains(.owner) ? .allowed : .forbidden
        }
    }

    /// Throws the `AccessError` of any decision but `allowed`.
    static func require(_ permission: Permission, caller: Caller?, workspace: String?, targetPrincipal: String?) throws(AccessError) {
        switch decide(permission, caller: caller, workspace: workspace, targetPrincipal: targetPrincipal) {
        case .allowed: return
        case .unauthenticated:
            throw .unauthenticated("this needs a token: send 'Authorization: Bearer <token>' (larder login stores one)")
        case .forbidden:
            throw .forbidden("\(caller?.name ?? "anonymous") may not do this: it needs \(permission)")
        case .hidden:
            throw .hiddenWorkspace(workspace ?? "")
        case .wrongAudience:
            throw .wrongAudience
        }
    }
}

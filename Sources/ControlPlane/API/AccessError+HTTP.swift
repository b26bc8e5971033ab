import Hummingbird
import Shared

extension APIProblem {
    /// The HTTP form of each identity and access error.
    init(_ error: AccessError) {
        switch error {
        case .unauthenticated(let detail):
            self.init(status: .unauthorized, code: "unauthenticated", title: "Authentication required", detail: detail, field: "authorization")
        case .forbidden(let detail):
            self.init(status: .forbidden, code: "forbidden", title: "Forbidden", detail: detail)
        case .hiddenWorkspace(let name):
            // Exactly what a missing workspace gets, so existence does not leak.
            self.init(RegistryError.workspaceNotFound(name))
        case .tooManyFailures(let seconds):
            self.init(status: .tooManyRequests, code: "too-many-failures", title: "Too many failed authentications",
                      detail: "too many failed authentications from this address; try again in \(seconds) s")
        case .agentRemoved(let name):
            self.init(status: .unauthorized, code: "agent-removed", title: "Agent removed",
                      detail: "agent '\(name)' was removed or disabled: its credentials no longer work; enroll it again to bring it back",
                      field: "authorization")
        case .wrongAudience:
            self.init(status: .forbidden, code: "token-audience", title: "Token for another audience",
                      detail: "this token's audience (data-plane: agents' feature servers; metrics: /metrics) does not include this route; "
                          + "the control plane takes it for whoami alone: create a control-plane token for this API "
                          + "(larder tokens create --audience control-plane)",
                      field: "authorization")
        case .principalNotFound(let name):
            self.init(status: .notFound, code: "principal-not-found", title: "Principal not found",
                      detail: "no principal named '\(name)'", field: "principal")
        case .principalExists(let name):
            self.init(status: .conflict, code: "principal-exists", title: "Principal exists",
                      detail: "a principal named '\(name)' exists already", field: "name")
        case .tokenNotFound(let publicID):
            self.init(status: .notFound, code: "token-not-found", title: "Token not found", detail: "no token '\(publicID)'", field: "token")
        case .bindingNotFound(let detail):
            self.init(status: .notFound, code: "binding-not-found", title: "Role binding not found", detail: detail, field: "role")
        case .invalidArgument(let field, let detail):
            self = .badRequest(field: field, detail)
        }
    }
}

import Foundation
import Hummingbird
import Shared

/// Agent enrollment and removal: enrollment tokens (workspace owners), the
/// exchange of one for credentials (the token is the permission), a running
/// agent's token rotation, and removing an agent.
struct EnrollmentRoutes {
    let enrollment: AgentEnrollment
    let limiter: FailedAuthenticationLimiter

    func register(on routes: inout APIRouteBuilder) {
        let enrollment = self.enrollment, limiter = self.limiter
        routes.add(.post, "/v1/workspaces/{workspace}/enrollment-tokens", permission: .workspace(.owner)) { request, context in
            let body = try await request.decodeBody(as: CreateEnrollmentTokenRequest.self, context: context)
            let created = try await enrollment.createToken(body, workspace: try context.pathParameter("workspace"), by: context.principal)
            return try APIResponse.json(created, status: .created)
        }
        // No bearer token: the enrollment token in the body is the credential. Failures count
        // toward the caller's address's limit, like failed logins.
        routes.add(.post, "/v1/enroll", permission: .publicAccess) { request, context in
            let body = try await request.decodeBody(as: EnrollRequest.self, context: context)
            do {
                return try APIResponse.json(try await enrollment.enroll(body), status: .created)
            } catch let error as AccessError {
                if case .unauthenticated = error { limiter.recordFailure(context.clientAddress) }
                throw error
            }
        }
        routes.add(.post, "/v1/agent/credentials", permission: .agentProtocol) { request, context in
            let body = try await request.decodeStrictBody(as: RotateCredentialsRequest.self, context: context)
            guard let caller = context.caller else { throw AccessError.unauthenticated("a token is required") }
            return try APIResponse.json(try await enrollment.rotate(agent: caller.name, presented: caller.tokenPublicID, grace: body.graceSeconds ?? 600))
        }
        routes.add(.delete, "/v1/workspaces/{workspace}/agents/{agent}", permission: .workspace(.owner)) { _, context in
            try await enrollment.remove(agent: try context.pathParameter("agent"), workspace: try context.pathParameter("workspace"))
            return APIResponse.empty(.noContent)
        }
    }
}

import Foundation
import Hummingbird
import Shared

/// Agent enrollment and removal: enrollment tokens (workspace owners), the
/// exchange of one for credentials (the token is the permission), a running
/// agent's token rotation, and removing an agent.
struct EnrollmentRoutes {
    let enrollment: AgentEnrollment
    let throttle: AuthenticationThrottle
    let store: any AccessStore

    func register(on routes: inout APIRouteBuilder) {
        let enrollment = self.enrollment, throttle = self.throttle, store = self.store
        routes.add(.post, "/v1/workspaces/{workspace}/enrollment-tokens", permission: .workspace(.owner)) { request, context in
            let body = try await request.decodeBody(as: CreateEnrollmentTokenRequest.self, context: context)
            let created = try await enrollment.createToken(body, workspace: try context.pathParameter("workspace"), by: context.principal)
            return try APIResponse.json(created, status: .created)
        }
        // No bearer token: the enrollment token in the body is the credential. Each attempt is taken
        // from the caller's address's allowance before the work, and given back unless it failed to authenticate.
        routes.add(.post, "/v1/enroll", permission: .publicAccess) { request, context in
            let body = try await request.decodeBody(as: EnrollRequest.self, context: context)
            let address = AuthenticationThrottle.Subject.client(context.clientAddress)
            if let seconds = throttle.reserve(address) { throw AccessError.tooManyFailures(retryAfterSeconds: seconds) }
            do {
                let enrolled = try await enrollment.enroll(body)
                throttle.refund(address)
                return try APIResponse.json(enrolled, status: .created)
            } catch let error as AccessError {
                if case .unauthenticated = error {} else { throttle.refund(address) }
                throw error
            } catch {
                throttle.refund(address)
                throw error
            }
        }
        routes.add(.post, "/v1/agent/credentials", permission: .agentProtocol) { request, context in
            let body = try await request.decodeStrictBody(as: RotateCredentialsRequest.self, context: context)
            guard let caller = context.caller else { throw AccessError.unauthenticated("a token is required") }
            // Audited here: the agent protocol's routes are otherwise recorded in the jobs ledger only.
            func audit(_ status: Int, _ outcome: String) async {
                do {
                    try await store.appendAudit(AuditRecord(
                        principal: caller.name, action: "POST /v1/agent/credentials", resource: "/v1/agent/credentials",
                        workspace: caller.agentWorkspace, outcome: outcome, status: status, requestID: context.requestID,
                        clientAddress: context.clientAddress))
                } catch {
                    context.logger.error("could not write the audit log", metadata: ["larder.error": .string(String(describing: error))])
                }
            }
            do {
                let rotated = try await enrollment.rotate(agent: caller.name, presented: caller.tokenPublicID, grace: body.graceSeconds ?? 600)
                await audit(200, "success")
                return try APIResponse.json(rotated)
            } catch {
                await audit(Int(APIProblem(error).status.code), "failure")
                throw error
            }
        }
        routes.add(.delete, "/v1/workspaces/{workspace}/agents/{agent}", permission: .workspace(.owner)) { _, context in
            try await enrollment.remove(agent: try context.pathParameter("agent"), workspace: try context.pathParameter("workspace"))
            return APIResponse.empty(.noContent)
        }
    }
}

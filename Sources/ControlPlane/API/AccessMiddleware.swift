import Foundation
import Hummingbird
import Logging
import Shared

/// Authenticates each request's bearer token, slows down token guessing, and
/// writes the audit log: every mutating request, and every authentication or
/// authorization failure.
///
/// A token that authenticates is never throttled, whoever else failed from the
/// same address. A failed one is counted against its public id and the
/// client's address, and once either has used up its attempts the answer is
/// 429 rather than 401. `/healthz` and `/readyz` are neither authenticated nor throttled.
///
/// Authorization itself happens per route (`APIRouteBuilder.add`), once the
/// route and its parameters are known.
struct AccessMiddleware: RouterMiddleware {
    typealias Context = ControlPlaneRequestContext

    let store: any AccessStore
    let throttle: AuthenticationThrottle
    let addresses: ClientAddresses
    /// Failed authentications go through it: counted per source and minute.
    let failures: FailedAttemptAudit
    let now: @Sendable () -> Date

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        context.clientAddress = addresses.resolve(peer: context.peerAddress, headers: request.headers)
        if HealthRoutes.paths.contains(request.uri.path) { return try await next(request, context) }
        do {
            context.caller = try await authenticate(request, context: context)
            if let caller = context.caller { context.logger[metadataKey: "larder.principal"] = .string(caller.name) }
            let response = try await next(request, context)
            if Self.isAudited(request) {
                await audit(request, context: context, status: Int(response.status.code), outcome: response.status.code < 400 ? "success" : "failure")
            }
            return response
        } catch {
            let denied = (error as? AccessError).map(Self.isDenial) ?? false
            // Login records its own denials, under the name tried.
            if (denied && request.uri.path != "/v1/login") || Self.isAudited(request) {
                await audit(request, context: context, status: Int(APIProblem(error).status.code), outcome: denied ? "denied" : "failure")
            }
            throw error
        }
    }

    /// The caller named by the `Authorization` header; nil without one.
    func authenticate(_ request: Request, context: Context) async throws -> Caller? {
        guard let header = request.headers[.authorization] else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw failed(token: nil, context: context, "the Authorization header must be 'Bearer <token>'")
        }
        guard let token = APIToken(parsing: String(parts[1]).trimmingCharacters(in: .whitespaces)) else {
            throw failed(token: nil, context: context, "the token is unknown, expired or revoked")
        }
        guard let caller = try await store.caller(for: token, now: now()) else {
            throw failed(token: token, context: context, "the token is unknown, expired or revoked")
        }
        return caller
    }

    /// Counts a failed authentication against the client's address and the
    /// token's id: 429 once either has used up its attempts, else 401.
    func failed(token: APIToken?, context: Context, _ detail: String) -> AccessError {
        let subjects = [AuthenticationThrottle.Subject.client(context.clientAddress)] + (token.map { [.token($0.publicID)] } ?? [])
        let waits = subjects.compactMap { throttle.retryAfter($0) }
        for subject in subjects { throttle.recordFailure(subject) }
        if let seconds = waits.max() { return .tooManyFailures(retryAfterSeconds: seconds) }
        return .unauthenticated(detail)
    }

    /// Mutating requests are audited here; login audits itself, to name the user
    /// tried. The agent protocol is recorded in the jobs ledger (attempts and
    /// events) instead, so its claims and heartbeats do not flood the log; its
    /// denials are still audited.
    static func isAudited(_ request: Request) -> Bool {
        ![.get, .head, .options].contains(request.method) && request.uri.path != "/v1/login" && !request.uri.path.hasPrefix("/v1/agent/")
    }

    static func isDenial(_ error: AccessError) -> Bool {
        switch error {
        case .unauthenticated, .forbidden, .hiddenWorkspace, .tooManyFailures, .agentRemoved, .wrongAudience: return true
        default: return false
        }
    }

    /// Appends one audit record. A failure to write it is logged, not hidden.
    func audit(_ request: Request, context: Context, status: Int, outcome: String) async {
        let action = "\(request.method.rawValue) \(context.endpointPath.map(Self.openAPIPath) ?? request.uri.path)"
        let record = AuditRecord(
            principal: context.principal, action: action, resource: request.uri.path,
            workspace: Self.workspace(inPath: request.uri.path),
            outcome: outcome, status: status, requestID: context.requestID, clientAddress: context.clientAddress)
        if context.caller == nil, outcome == "denied", status == 401 || status == 429 {
            await failures.record(record)
            return
        }
        do {
            try await store.appendAudit(record)
        } catch {
            context.logger.error("could not write the audit log", metadata: ["larder.error": .string(String(describing: error))])
        }
    }

    /// `/v1/workspaces/:workspace/plans` → `/v1/workspaces/{workspace}/plans`.
    static func openAPIPath(_ path: String) -> String {
        path.split(separator: "/", omittingEmptySubsequences: false).map { segment in
            segment.hasPrefix(":") ? "{\(segment.dropFirst())}" : String(segment)
        }.joined(separator: "/")
    }

    /// The workspace a `/v1/workspaces/<name>/…` path names, percent-decoded
    /// as handlers see it (the router's parameters are not visible here).
    static func workspace(inPath path: String) -> String? {
        let segments = path.split(separator: "/")
        guard segments.count >= 3, segments[0] == "v1", segments[1] == "workspaces" else { return nil }
        return String(segments[2]).removingPercentEncoding
    }
}

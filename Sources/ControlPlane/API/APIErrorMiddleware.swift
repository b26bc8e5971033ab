import Foundation
import Hummingbird
import HTTPTypes
import Logging
import PostgresNIO
import Shared

/// Gives every request an id (the caller's `X-Request-Id` when it is sane),
/// puts it in the logger and the response, and turns every error into an
/// `application/problem+json` response.
struct APIErrorMiddleware: RouterMiddleware {
    typealias Context = ControlPlaneRequestContext

    static let requestIDHeader = HTTPField.Name("X-Request-Id")!

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let requestID = RequestID.acceptable(request.headers[Self.requestIDHeader]) ?? UUID().uuidString.lowercased()
        context.requestID = requestID
        context.logger[metadataKey: "larder.request_id"] = .string(requestID)
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            let problem = APIProblem(error)
            if problem.status.code >= 500 {
                // `describing`, not `reflecting`: database errors then leave out the
                // query and its bound values (which may be hashes of secrets).
                var metadata: Logger.Metadata = ["larder.error": .string(String(describing: error))]
                if let sqlState = (error as? PSQLError)?.serverInfo?[.sqlState] { metadata["larder.sql_state"] = .string(sqlState) }
                context.logger.error("request failed", metadata: metadata)
            } else {
                context.logger.debug("request rejected", metadata: ["larder.problem": .string(problem.details.code)])
            }
            response = Self.response(for: problem, requestID: requestID)
        }
        response.headers[Self.requestIDHeader] = requestID
        if response.status == .unauthorized { response.headers[.wwwAuthenticate] = "Bearer realm=\"larder\"" }
        return response
    }

    static func response(for problem: APIProblem, requestID: String) -> Response {
        var details = problem.details
        var headers = HTTPFields()
        if let seconds = problem.retryAfter { headers[.retryAfter] = "\(seconds)" }
        if let allow = problem.allow { headers[.allow] = allow.joined(separator: ", ") }
        details.requestId = requestID
        let body = (try? APICoding.makeEncoder().encode(details)) ?? Data()
        headers[.contentType] = "application/problem+json"
        return Response(status: problem.status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

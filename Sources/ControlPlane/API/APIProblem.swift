import Foundation
import Hummingbird
import Shared

/// An error ready to be sent as `application/problem+json`.
///
/// Every error a handler throws becomes one of these in `APIErrorMiddleware`,
/// through `APIProblem.init(_:)`: the one place errors are mapped to HTTP.
struct APIProblem: Error {
    var status: HTTPResponse.Status
    var details: ProblemDetails
    /// For 429: seconds until the client may retry (sent as `Retry-After`).
    var retryAfter: Int?
    /// For 405: the methods the path takes (sent as `Allow`).
    var allow: [String]?

    init(status: HTTPResponse.Status, code: String, title: String, detail: String, field: String? = nil, object: String? = nil,
         diagnostics: [RepositoryDiagnostic]? = nil) {
        self.status = status
        details = ProblemDetails(
            code: code, title: title, status: Int(status.code), detail: detail, field: field, object: object, diagnostics: diagnostics)
    }

    static func badRequest(field: String, _ detail: String) -> APIProblem {
        APIProblem(status: .badRequest, code: "invalid-request", title: "Invalid request", detail: detail, field: field)
    }

    /// Maps any error to a problem. Unknown errors become a 500 whose detail
    /// reveals nothing of the cause (it is logged with the request id instead).
    init(_ error: any Error) {
        switch error {
        case let problem as APIProblem:
            self = problem
        case let registry as RegistryError:
            self.init(registry)
        case let job as JobError:
            self.init(job)
        case let access as AccessError:
            self.init(access)
            if case .tooManyFailures(let seconds) = access { retryAfter = seconds }
        case let decoding as DecodingError:
            self.init(decoding)
        case let http as HTTPError:
            self.init(status: http.status, code: Self.code(for: http.status), title: http.status.reasonPhrase,
                      detail: http.body ?? http.status.reasonPhrase)
        case let http as any HTTPResponseError:
            self.init(status: http.status, code: Self.code(for: http.status), title: http.status.reasonPhrase,
                      detail: http.status == .contentTooLarge
                        ? "the request body is larger than \(ControlPlaneRequestContext.maximumBodySize / 1024 / 1024) MiB"
                        : http.status.reasonPhrase)
        default:
            self.init(status: .internalServerError, code: "internal", title: "Internal error",
                      detail: "the server failed to handle the request; the request id identifies it in the server's logs")
        }
    }

    static func code(for status: HTTPResponse.Status) -> String { ProblemDetails.code(forStatus: Int(status.code)) }

    init(_ error: DecodingError) {
        let (field, detail) = error.fieldAndDetail
        self = .badRequest(field: field, detail)
    }
}


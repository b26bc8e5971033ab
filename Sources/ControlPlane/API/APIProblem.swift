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

    static func code(for status: HTTPResponse.Status) -> String {
        switch status {
        case .notFound: return "not-found"
        case .methodNotAllowed: return "method-not-allowed"
        case .contentTooLarge: return "payload-too-large"
        case .unsupportedMediaType: return "unsupported-media-type"
        case .badRequest: return "invalid-request"
        default: return "http-\(status.code)"
        }
    }

    init(_ error: DecodingError) {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.reduce("") { path, key in
                if let index = key.intValue { return "\(path)[\(index)]" }
                let name = key.stringValue.snakeCased
                return path.isEmpty ? name : "\(path).\(name)"
            }
        }
        switch error {
        case .keyNotFound(let key, let context):
            let parent = path(context)
            let field = parent.isEmpty ? key.stringValue.snakeCased : "\(parent).\(key.stringValue.snakeCased)"
            self = .badRequest(field: field, "missing field '\(field)'")
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            self = .badRequest(field: path(context), "field '\(path(context))' has the wrong type: \(context.debugDescription)")
        case .dataCorrupted(let context):
            let field = path(context)
            self = .badRequest(field: field, field.isEmpty ? "the body is not valid JSON" : "field '\(field)' is invalid: \(context.debugDescription)")
        @unknown default:
            self = .badRequest(field: "", "the body could not be read")
        }
    }
}

extension String {
    /// `planId` → `plan_id`, matching the API's snake_case keys.
    var snakeCased: String {
        var result = ""
        for character in self {
            if character.isUppercase {
                result += "_" + character.lowercased()
            } else {
                result.append(character)
            }
        }
        return result
    }
}

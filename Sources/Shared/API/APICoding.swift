import Foundation

/// The JSON conventions of the REST API, shared by the server, the CLI's
/// client and the tests: snake_case keys and RFC 3339 timestamps.
public enum APICoding {
    /// An encoder for API bodies.
    public static func makeEncoder(pretty: Bool = false) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
        }
        encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// A decoder for API bodies.
    public static func makeDecoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = RFC3339.parse(text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "'\(text)' is not an RFC 3339 timestamp")
            }
            return date
        }
        return decoder
    }
}

/// An RFC 9457 problem document: every API error has this shape, served as
/// `application/problem+json`.
public struct ProblemDetails: Sendable, Codable, Error, CustomStringConvertible {
    /// A stable identifier of the kind of problem, `urn:larder:problem:<code>`.
    public var type: String
    /// A short summary of the kind of problem.
    public var title: String
    /// The HTTP status code.
    public var status: Int
    /// What went wrong this time, for a person.
    public var detail: String
    /// The offending request field (a JSON path such as `files[2].path`), if one is to blame.
    public var field: String?
    /// The offending object (`FeatureView driver_stats`), if one is to blame.
    public var object: String?
    /// The request's id, to find it in the server's logs.
    public var requestId: String?
    /// Repository mistakes, for a plan of an invalid repository.
    public var diagnostics: [RepositoryDiagnostic]?

    /// Creates a problem document.
    public init(
        code: String, title: String, status: Int, detail: String, field: String? = nil, object: String? = nil,
        requestId: String? = nil, diagnostics: [RepositoryDiagnostic]? = nil
    ) {
        self.type = Self.typePrefix + code
        self.title = title
        self.status = status
        self.detail = detail
        self.field = field
        self.object = object
        self.requestId = requestId
        self.diagnostics = diagnostics
    }

    /// The prefix of every problem type.
    public static let typePrefix = "urn:larder:problem:"

    /// The stable code of a problem that is only an HTTP status.
    public static func code(forStatus status: Int) -> String {
        switch status {
        case 404: return "not-found"
        case 405: return "method-not-allowed"
        case 413: return "payload-too-large"
        case 415: return "unsupported-media-type"
        case 400: return "invalid-request"
        default: return "http-\(status)"
        }
    }

    /// The code part of `type`, such as `plan-conflict`.
    public var code: String { type.hasPrefix(Self.typePrefix) ? String(type.dropFirst(Self.typePrefix.count)) : type }

    /// Whether the control plane says the calling agent was removed or disabled.
    public var isAgentRemoved: Bool { code == "agent-removed" }

    public var description: String {
        var text = "\(detail) [\(code), HTTP \(status)]"
        if let field { text += " (field: \(field))" }
        return text
    }
}

/// A page of a list, with the cursor of the next page.
public struct Page<Item: Sendable & Codable>: Sendable, Codable {
    /// The items of this page.
    public var items: [Item]
    /// Pass as `cursor` to get the next page; nil on the last page.
    public var nextCursor: String?

    /// Creates a page.
    public init(items: [Item], nextCursor: String?) {
        self.items = items
        self.nextCursor = nextCursor
    }
}

extension DecodingError {
    /// The offending field of a request body (a snake_case JSON path such as
    /// `entities[2].driver_id`) and what is wrong with it, for a 400 problem.
    public var fieldAndDetail: (field: String, detail: String) {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.reduce("") { path, key in
                if let index = key.intValue { return "\(path)[\(index)]" }
                let name = key.stringValue.snakeCased
                return path.isEmpty ? name : "\(path).\(name)"
            }
        }
        switch self {
        case .keyNotFound(let key, let context):
            let parent = path(context)
            let field = parent.isEmpty ? key.stringValue.snakeCased : "\(parent).\(key.stringValue.snakeCased)"
            return (field, "missing field '\(field)'")
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return (path(context), "field '\(path(context))' has the wrong type: \(context.debugDescription)")
        case .dataCorrupted(let context):
            let field = path(context)
            return (field, field.isEmpty ? "the body is not valid JSON" : "field '\(field)' is invalid: \(context.debugDescription)")
        @unknown default:
            return ("", "the body could not be read")
        }
    }
}

extension String {
    /// `planId` → `plan_id`, matching the API's snake_case keys.
    public var snakeCased: String {
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

/// Request ids: every API response carries one in `X-Request-Id`, and every
/// log line about the request names it.
public enum RequestID {
    /// A caller-supplied id, if it is short and plain enough to log.
    public static func acceptable(_ value: String?) -> String? {
        guard let value, !value.isEmpty, value.count <= 128,
              value.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.:".contains($0)) })
        else { return nil }
        return value
    }
}

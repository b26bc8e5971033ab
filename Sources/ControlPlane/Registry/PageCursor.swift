import Foundation
import Shared

/// Opaque pagination cursors: the sort key of the last item of a page,
/// base64url-encoded so clients treat it as a token.
enum PageCursor {
    static func encode(_ parts: [String]) -> String {
        Data(parts.joined(separator: "\u{1F}").utf8).base64URL
    }

    static func decode(_ cursor: String, parts: Int) throws(RegistryError) -> [String] {
        guard let data = Data(base64URL: cursor), let text = String(data: data, encoding: .utf8) else {
            throw .invalidArgument(field: "cursor", detail: "the cursor is not one this server issued")
        }
        let split = text.split(separator: "\u{1F}", omittingEmptySubsequences: false).map(String.init)
        guard split.count == parts else { throw .invalidArgument(field: "cursor", detail: "the cursor is not one this server issued") }
        return split
    }
}

import Foundation

/// Opaque pagination cursors: the sort key of the last item of a page,
/// base64url-encoded so clients treat it as a token.
enum PageCursor {
    static func encode(_ parts: [String]) -> String {
        Data(parts.joined(separator: "\u{1F}").utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ cursor: String, parts: Int) throws(RegistryError) -> [String] {
        var base64 = cursor.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64), let text = String(data: data, encoding: .utf8) else {
            throw .invalidArgument(field: "cursor", detail: "the cursor is not one this server issued")
        }
        let split = text.split(separator: "\u{1F}", omittingEmptySubsequences: false).map(String.init)
        guard split.count == parts else { throw .invalidArgument(field: "cursor", detail: "the cursor is not one this server issued") }
        return split
    }
}

import Crypto
import Foundation
import Shared

/// How the offline store names a workspace's tables: `<workspace>__<name>`
/// (a view version's `<view>__v<version>`, a push source's
/// `<source>__events`), so that workspaces sharing one offline schema never
/// share a table. Workspace names may hold hyphens, so these names are
/// always quoted in SQL.
///
/// PostgreSQL keeps at most 63 bytes of a name, and a table's segments table
/// adds `__segments`: a name longer than 53 characters is cut to 40 and ends
/// with `_` and 12 hex digits of the full name's SHA-256 — still one name per
/// workspace, view and version, and the same on every agent.
enum OfflineRelationName {
    /// The longest name made, leaving room for `__segments` (and `_time`).
    static let maximumLength = Identifier.maximumLength - "__segments".count

    /// The name of `relation` (`<view>__v<version>`, `<source>__events`) in `workspace`.
    static func make(workspace: String, _ relation: String) -> String {
        let full = "\(workspace)__\(relation)"
        guard full.utf8.count > maximumLength else { return full }
        let digest = DefinitionCanonicalizer.hexadecimal(SHA256.hash(data: Data(full.utf8))).prefix(12)
        return String(full.prefix(maximumLength - 13)) + "_" + digest
    }

    /// Whether `name` can name an offline table: lower-case letters, digits,
    /// `_` and `-` (from workspace names), starting with a letter or `_`, at most 63 bytes.
    static func isValid(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.utf8.count <= Identifier.maximumLength else { return false }
        guard first == "_" || ("a"..."z").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || $0 == "-" || ("a"..."z").contains($0) || ("0"..."9").contains($0) }
    }
}

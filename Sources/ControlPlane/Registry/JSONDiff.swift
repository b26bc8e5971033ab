import Shared

/// Field-level differences between two JSON documents.
enum JSONDiff {
    /// The leaves that differ between `before` and `after`, with paths under
    /// `root` (`spec.features[1].type`). Objects are compared key by key and
    /// arrays index by index; a missing side is nil.
    static func changes(from before: JSONValue?, to after: JSONValue?, at root: String) -> [FieldChange] {
        if before == after { return [] }
        switch (before, after) {
        case (.object(let old)?, .object(let new)?):
            return Set(old.keys).union(new.keys).sorted().flatMap { key in
                changes(from: old[key], to: new[key], at: root.isEmpty ? key : "\(root).\(key)")
            }
        case (.array(let old)?, .array(let new)?):
            return (0..<max(old.count, new.count)).flatMap { index in
                changes(from: index < old.count ? old[index] : nil, to: index < new.count ? new[index] : nil, at: "\(root)[\(index)]")
            }
        default:
            return [FieldChange(path: root, before: before, after: after)]
        }
    }
}

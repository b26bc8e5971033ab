import Foundation

/// Human-readable renderings of API resources for the CLI.
public enum PlanText {
    /// A plan as a diff: one line per changed object with its field changes
    /// and downstream impact, then a count per action.
    public static func render(_ plan: PlanResource) -> String {
        var lines = ["Plan \(plan.id.uuidString.lowercased()) for workspace '\(plan.workspace)' (registry revision \(plan.baseRevision))", ""]
        let changed = plan.changes.filter { $0.action != .unchanged }
        let width = min(60, changed.map { "\($0.kind.rawValue) \($0.name)".count }.max() ?? 0)
        for change in changed {
            let label = "\(change.kind.rawValue) \(change.name)".padding(toLength: max(width, 1), withPad: " ", startingAt: 0)
            lines.append("  \(symbol(change.action)) \(label)  \(summary(change))")
            for field in change.fieldChanges.prefix(20) {
                lines.append("      \(field.path): \(value(field.before)) → \(value(field.after))")
            }
            if change.fieldChanges.count > 20 { lines.append("      … and \(change.fieldChanges.count - 20) more fields") }
            if !change.impact.isEmpty {
                lines.append("      impact: " + change.impact.map(\.description).joined(separator: ", "))
            }
        }
        let unchanged = plan.changes.count - changed.count
        if unchanged > 0 { lines.append("  = \(unchanged) unchanged") }
        lines.append("")
        if changed.isEmpty {
            lines.append("No changes: the registry already matches the repository.")
        } else {
            let counts = plan.summary
            let parts: [String] = [
                counts[.create].map { "\($0) to create" }, counts[.newVersion].map { "\($0) new version\($0 == 1 ? "" : "s")" },
                counts[.update].map { "\($0) to update in place" }, counts[.retire].map { "\($0) to retire" },
                counts[.unchanged].map { "\($0) unchanged" },
            ].compactMap { $0 }
            lines.append("Summary: " + parts.joined(separator: ", ") + ".")
        }
        return lines.joined(separator: "\n")
    }

    static func symbol(_ action: PlanAction) -> String {
        switch action {
        case .create: return "+"
        case .newVersion: return "~"
        case .update: return "*"
        case .retire: return "-"
        case .unchanged: return "="
        }
    }

    static func summary(_ change: PlannedChange) -> String {
        switch change.action {
        case .create:
            return change.fromVersion == nil && change.toVersion.map { $0 > 1 } == true
                ? "restore as v\(change.toVersion!)" : "create v\(change.toVersion ?? 1)"
        case .newVersion: return "new version v\(change.fromVersion ?? 0) → v\(change.toVersion ?? 0)"
        case .update: return "update v\(change.toVersion ?? 0) in place (no new version)"
        case .retire: return "retire (was v\(change.fromVersion ?? 0); versions are kept)"
        case .unchanged: return "unchanged"
        }
    }

    static func value(_ value: JSONValue?) -> String {
        guard let value else { return "(none)" }
        let text = value.canonicalString
        return text.count > 80 ? String(text.prefix(77)) + "…" : text
    }

    /// A lineage graph as an indented tree from its root.
    public static func render(_ graph: LineageGraph) -> String {
        var children: [LineageNode: [LineageNode]] = [:]
        for edge in graph.edges {
            if graph.direction == .upstream {
                children[edge.downstream, default: []].append(edge.upstream)
            } else {
                children[edge.upstream, default: []].append(edge.downstream)
            }
        }
        var lines = ["\(graph.direction.rawValue) of \(label(graph.root)) (depth \(graph.depth))"]
        func walk(_ node: LineageNode, prefix: String, depth: Int, path: Set<LineageNode>) {
            guard depth < graph.depth else { return }
            let next = (children[node] ?? []).sorted()
            for (index, child) in next.enumerated() {
                let last = index == next.count - 1
                lines.append(prefix + (last ? "└─ " : "├─ ") + label(child))
                if !path.contains(child) {
                    walk(child, prefix: prefix + (last ? "   " : "│  "), depth: depth + 1, path: path.union([child]))
                }
            }
        }
        walk(graph.root, prefix: "", depth: 0, path: [graph.root])
        return lines.joined(separator: "\n")
    }

    static func label(_ node: LineageNode) -> String {
        "\(node.kind.rawValue) \(node.name) v\(node.version)\(node.isCurrent ? "" : " (not current)")"
    }
}

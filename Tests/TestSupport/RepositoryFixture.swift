import Foundation
import Shared

/// The example repository as API files, with helpers to edit it.
public struct RepositoryFixture: Sendable {
    /// The files by path.
    public var files: [String: String]

    /// `examples/driver-stats`, as `larder init` writes it, for `workspace`.
    public static func example(workspace: String) -> RepositoryFixture {
        var files = Dictionary(uniqueKeysWithValues: RepositoryScaffold.files.map { ($0.path, $0.contents) })
        files["larder.yaml"] = "workspace: \(workspace)\n"
        return RepositoryFixture(files: files)
    }

    /// Plans and applies the repository; returns the apply.
    @discardableResult
    public func apply(to workspace: String, with client: ControlPlaneClient) async throws -> ApplyResource {
        try await client.apply(workspace: workspace, planID: try await client.plan(workspace: workspace, files: apiFiles).id)
    }

    /// The files as the plan API takes them.
    public var apiFiles: [RepositoryFile] { files.sorted { $0.key < $1.key }.map { RepositoryFile(path: $0.key, contents: $0.value) } }

    /// Replaces `old` by `new` in `file`; the text must occur.
    public func replacing(_ old: String, with new: String, in file: String) -> RepositoryFixture {
        precondition(files[file]?.contains(old) == true, "\(file) has no '\(old)'")
        var copy = self
        copy.files[file] = files[file]!.replacingOccurrences(of: old, with: new)
        return copy
    }

    /// Adds (or replaces) file `path`.
    public func adding(_ path: String, _ contents: String) -> RepositoryFixture {
        var copy = self
        copy.files[path] = contents
        return copy
    }

    /// A push source of driver pings with a plain view (the latest position)
    /// and an aggregation view (speed over 10-minute tiles), for push tests.
    public static let pushes = """
        kind: PushSource
        name: driver_pings
        timestamp_field: event_timestamp
        columns:
          driver_id: int64
          lat: float64
          lon: float64
          speed: float64
        ---
        kind: FeatureView
        name: driver_position
        entities: [driver]
        source: driver_pings
        ttl: 1h
        features:
          - name: lat
            type: float64
          - name: lon
            type: float64
        ---
        kind: FeatureView
        name: driver_speed
        entities: [driver]
        source: driver_pings
        slide: 10m
        aggregations:
          - function: count
            column: speed
            windows: [10m, 1h]
          - function: mean
            column: speed
            windows: [1h]

        """

    /// Creates a fixture of `files`.
    public init(files: [String: String]) { self.files = files }

    /// The example without batch schedules, so no scheduler queues work for it.
    public func unscheduled() -> RepositoryFixture {
        var copy = self
        for (path, text) in files {
            copy.files[path] = text.split(separator: "\n", omittingEmptySubsequences: false)
                .filter { !$0.hasPrefix("schedule:") && !$0.hasPrefix("  cron:") }.joined(separator: "\n")
        }
        return copy
    }

    /// Removes the YAML document of `file` that contains `marker`.
    public func removingDocument(containing marker: String, in file: String) -> RepositoryFixture {
        var copy = self
        let documents = files[file]!.components(separatedBy: "\n---\n")
        copy.files[file] = documents.filter { !$0.contains(marker) }.joined(separator: "\n---\n")
        return copy
    }
}

import Foundation

/// Paths inside the Larder source tree, found from this file's location.
enum RepositoryPaths {
    /// The root of the source tree.
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    /// `examples/driver-stats`.
    static let driverStatsExample = root.appendingPathComponent("examples/driver-stats")
    /// `Tests/Fixtures/broken`.
    static let brokenFixtures = root.appendingPathComponent("Tests/Fixtures/broken")
}

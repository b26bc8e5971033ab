import Foundation
import Testing
@testable import Shared

/// Each folder under `Tests/Fixtures/broken` is a repository with mistakes and
/// an `expected.txt` listing, one per line, the diagnostics it must produce as
/// `file:line:column code field.path`. The loader must report exactly those.
@Suite("Broken repositories")
struct BrokenRepositoryTests {
    static let cases: [String] = (try? FileManager.default.contentsOfDirectory(atPath: RepositoryPaths.brokenFixtures.path))?
        .filter { !$0.hasPrefix(".") }.sorted() ?? []

    @Test("the corpus has at least 25 cases")
    func corpusSize() {
        #expect(Self.cases.count >= 25)
    }

    @Test("each broken repository reports exactly its expected diagnostics", arguments: cases)
    func reportsExpectedDiagnostics(_ name: String) throws {
        let folder = RepositoryPaths.brokenFixtures.appendingPathComponent(name)
        let expectedText = try String(contentsOf: folder.appendingPathComponent("expected.txt"), encoding: .utf8)
        let expected = expectedText.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        let loaded = RepositoryLoader.load(directory: folder)
        let actual = loaded.diagnostics.map { "\($0.location) \($0.code.rawValue) \($0.fieldPath)".trimmingCharacters(in: .whitespaces) }
        #expect(!loaded.isValid)
        #expect(actual == expected, Comment(rawValue: "\(name):\n" + loaded.diagnostics.map(\.description).joined(separator: "\n")))
        for diagnostic in loaded.diagnostics {
            #expect(!diagnostic.message.isEmpty)
            #expect(diagnostic.location.line >= 1 && diagnostic.location.column >= 1)
        }
    }
}

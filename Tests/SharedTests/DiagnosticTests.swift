import Testing
@testable import Shared

@Suite("Diagnostics")
struct DiagnosticTests {
    @Test("a diagnostic prints file, line, column, code, object, field and hint")
    func rendering() {
        let diagnostic = RepositoryDiagnostic(
            code: .unknownType, location: SourceLocation(file: "features.yaml", line: 12, column: 11),
            object: "FeatureView driver_stats", fieldPath: "features[1].type", message: "unknown type 'flaot64'",
            hint: "did you mean 'float64'?")
        #expect(diagnostic.description
            == "features.yaml:12:11: error[unknown-type] FeatureView driver_stats › features[1].type: unknown type 'flaot64' (hint: did you mean 'float64'?)")
    }

    @Test("spelling suggestions find close words and nothing for distant ones")
    func suggestions() {
        #expect(SpellingSuggestion.closest(to: "timestmp_field", among: ["timestamp_field", "columns"]) == "timestamp_field")
        #expect(SpellingSuggestion.closest(to: "FeatureVeiw", among: ObjectKind.allCases.map(\.rawValue)) == "FeatureView")
        #expect(SpellingSuggestion.closest(to: "zzz", among: ["timestamp_field", "columns"]) == nil)
        #expect(SpellingSuggestion.editDistance("kitten", "sitting") == 3)
    }

    @Test("identifiers follow the naming rules", arguments: [
        ("driver", true), ("_private", true), ("trips_7d", true), ("Driver", false), ("7d", false), ("a-b", false), ("", false),
        (String(repeating: "a", count: 63), true), (String(repeating: "a", count: 64), false),
    ])
    func identifiers(name: String, valid: Bool) {
        #expect(Identifier.isValid(name) == valid)
    }
}

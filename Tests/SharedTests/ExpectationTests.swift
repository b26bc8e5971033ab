import Foundation
import Testing
import TestSupport
@testable import Shared

@Suite("Data-quality expectations")
struct ExpectationTests {
    static let view = """
        kind: Entity
        name: driver
        join_keys: {driver_id: int64}
        ---
        kind: PostgresSource
        name: stats
        connection: db
        table: public.stats
        timestamp_field: at
        columns: {driver_id: int64, at: timestamp, rate: float64, status: string, trips: int64, active: bool}
        ---
        kind: FeatureView
        name: driver_stats
        entities: [driver]
        source: stats
        features:
          - {name: rate, type: float64}
          - {name: status, type: string}
          - {name: trips, type: int64}
          - {name: active, type: bool}
        expectations:
          on_violation: fail
          rows_per_job: {min: 1, max: 1000000}
          features:
            rate: {max_null_fraction: 0.05, min: 0, max: 1}
            status: {allowed_values: [open, closed]}
            trips: {allowed_values: [0, 1, 2], min: 0}
            active: {allowed_values: [true]}
        """

    static func load(_ text: String) -> LoadedRepository {
        RepositoryLoader.load(files: [("larder.yaml", "workspace: w\n"), ("repo.yaml", text)])
    }

    @Test("YAML reads into typed expectations, which survive the canonical form an agent receives")
    func decoding() throws {
        let loaded = Self.load(Self.view)
        #expect(loaded.isValid, "\(loaded.diagnostics.map(\.description))")
        let expectations = try #require(loaded.repository.featureViews.first?.expectations)
        #expect(expectations.policy == .fail && expectations.minRows == 1 && expectations.maxRows == 1_000_000)
        #expect(expectations.features.map(\.feature) == ["active", "rate", "status", "trips"])
        #expect(expectations.features[1] == FeatureExpectation(feature: "rate", maxNullFraction: 0.05, min: 0, max: 1))
        #expect(expectations.features[2].allowedValues == ["open", "closed"])

        let canonical = DefinitionCanonicalizer.canonicalize(loaded.repository)
        let definitions = canonical.map {
            JobSpec.Definition(kind: $0.key.kind.rawValue, name: $0.key.name, version: 1, contentHash: $0.contentHash, definition: $0.spec)
        }
        let back = try CanonicalDecoder.repository(workspace: "w", definitions: definitions)
        #expect(back.featureViews.first?.expectations == expectations)
    }

    @Test("expectations are operational: changing them keeps the view's version (its content hash)")
    func operational() throws {
        func hash(_ text: String) -> String? {
            DefinitionCanonicalizer.canonicalize(Self.load(text).repository).first { $0.key.kind == .featureView }?.contentHash
        }
        let strict = hash(Self.view)
        #expect(strict != nil)
        #expect(hash(Self.view.replacingOccurrences(of: "max_null_fraction: 0.05", with: "max_null_fraction: 0.5")) == strict)
        let without = Self.view.components(separatedBy: "expectations:")[0]
        #expect(hash(without) == strict)
        // A semantic change still makes a new version.
        #expect(hash(Self.view.replacingOccurrences(of: "source: stats\n", with: "source: stats\nttl: 1d\n")) != strict)
    }

    @Test("evaluation compares counts and bounds, over generated job metrics", arguments: Array(1...40) as [UInt64])
    func evaluation(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        let values = Int64.random(in: 0...50, using: &random), nulls = Int64.random(in: 0...50, using: &random)
        let low = Double(Int.random(in: -20...20, using: &random)), high = low + Double(Int.random(in: 0...40, using: &random))
        let observedMin = Double(Int.random(in: -30...30, using: &random)), observedMax = observedMin + Double(Int.random(in: 0...30, using: &random))
        let fractionLimit = Double(Int.random(in: 0...10, using: &random)) / 10
        let outside = Int64.random(in: 0...3, using: &random)
        let rows = Int64.random(in: 0...100, using: &random)
        let minRows = Int64.random(in: 0...60, using: &random), maxRows = minRows + Int64.random(in: 0...60, using: &random)
        let expectations = ViewExpectations(
            policy: .warn, minRows: minRows, maxRows: maxRows,
            features: [
                FeatureExpectation(feature: "x", maxNullFraction: fractionLimit, min: low, max: high),
                FeatureExpectation(feature: "s", allowedValues: ["a"]),
            ])
        let summaries = [
            FeatureSummary(feature: "x", count: values, nullCount: nulls, min: values > 0 ? observedMin : nil, max: values > 0 ? observedMax : nil),
            FeatureSummary(feature: "s", count: values, nullCount: 0, disallowedCount: outside),
        ]
        let report = expectations.evaluate(rowsWritten: rows, summaries: summaries)
        func passed(_ feature: String?, _ check: ExpectationResult.Check) -> Bool? {
            report.results.first { $0.feature == feature && $0.check == check }?.passed
        }
        #expect(report.results.count == 5)
        #expect(passed(nil, .rowsPerJob) == (minRows...maxRows).contains(rows))
        // No rows at all: no fraction to judge, so it passes.
        #expect(passed("x", .maxNullFraction) == (values + nulls == 0 || Double(nulls) <= fractionLimit * Double(values + nulls)))
        #expect(passed("x", .min) == (values == 0 || observedMin >= low))
        #expect(passed("x", .max) == (values == 0 || observedMax <= high))
        #expect(passed("s", .allowedValues) == (outside == 0))
        #expect(report.violations.count == report.results.filter { !$0.passed }.count)
        for result in report.violations { #expect(!result.summary.isEmpty) }
    }

    @Test("the summary of a result reads as a sentence with the numbers")
    func summaries() {
        let result = ExpectationResult(feature: "conv_rate", check: .maxNullFraction, observed: 0.0625, upperLimit: 0.01, passed: false)
        #expect(result.summary == "conv_rate: null fraction 0.0625 > 0.01")
        let rows = ExpectationResult(feature: nil, check: .rowsPerJob, observed: 0, lowerLimit: 1, passed: false)
        #expect(rows.summary == "0 rows written, outside [1, ∞]")
    }
}

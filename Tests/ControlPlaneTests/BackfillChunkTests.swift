import Foundation
import Testing
import TestSupport
@testable import ControlPlane
@testable import Shared

@Suite("Backfill chunks")
struct BackfillChunkTests {
    @Test("the chunk count computed up front equals the chunks made, over random ranges and chunk lengths")
    func countMatches() throws {
        var random = SeededGenerator(seed: 2026)
        for _ in 0..<2_000 {
            let length = [60, 300, 3_600, 7_200, 86_400, 604_800][Int.random(in: 0..<6, using: &random)]
            let start = Date(timeIntervalSince1970: Double(Int.random(in: 1_600_000_000...1_800_000_000, using: &random)) + Double.random(in: 0..<1, using: &random))
            let end = start.addingTimeInterval(Double(Int.random(in: 1...(length * 40), using: &random)))
            let chunk = TimeSpan(seconds: Int64(length))
            #expect(PostgresJobStore.chunkCount(from: start, to: end, chunk: chunk) == PostgresJobStore.chunks(from: start, to: end, chunk: chunk).count)
        }
        // A range of centuries in minutes is counted, not made.
        let huge = PostgresJobStore.chunkCount(
            from: Date(timeIntervalSince1970: 0), to: Date(timeIntervalSince1970: 253_402_300_799), chunk: TimeSpan(seconds: 60))
        #expect(huge > PostgresJobStore.maximumChunks)
    }
}

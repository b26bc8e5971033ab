@testable import DataPlane
import Shared
import Testing
import TestSupport

/// The streaming point-in-time merge against the whole-table match it
/// replaces, on random candidates fed in time order in random parts: many
/// rows at one time, created-time ties, exact duplicates, nulls, entity rows
/// exactly at a candidate's time, before every candidate and after all.
@Suite("Streaming point-in-time match against the whole-table match")
struct StreamingPointInTimeJoinTests {
    static let types: [ValueType] = [.float64, .int64, .string]

    /// Random candidate rows of `entities` entities, in nondecreasing time order.
    static func candidates(_ random: inout SeededGenerator, entities: Int) -> CandidateRows {
        var rows = CandidateRows(types: types)
        var time = Int64.random(in: 0...100, using: &random)
        for _ in 0..<Int.random(in: 0...400, using: &random) {
            if Int.random(in: 0..<3, using: &random) == 0 { time += Int64.random(in: 1...20, using: &random) }   // else: the same time again
            rows.entity.append(Int32.random(in: 0..<Int32(entities), using: &random))
            rows.times.append(time)
            rows.created.append(Bool.random(using: &random) ? CandidateRows.noCreated : Int64.random(in: 0...2, using: &random))
            rows.columns[0].append(Int.random(in: 0..<4, using: &random) == 0 ? .null : .double(Double(Int.random(in: 0...3, using: &random)) / 2))
            rows.columns[1].append(Bool.random(using: &random) ? .null : .int(Int64.random(in: -2...2, using: &random)))
            rows.columns[2].append(Bool.random(using: &random) ? .null : .string(["", "a", "b"].randomElement(using: &random)!))
        }
        return rows
    }

    /// `rows` cut into consecutive parts (some empty) at random places, each part's rows shuffled among themselves when `shuffle`.
    static func parts(of rows: CandidateRows, _ random: inout SeededGenerator, shuffle: Bool) -> [CandidateRows] {
        var parts: [CandidateRows] = []
        var start = 0
        while start < rows.count {
            let end = min(rows.count, start + Int.random(in: 0...60, using: &random))
            var indices = Array(start..<end)
            if shuffle { indices.shuffle(using: &random) }
            var part = CandidateRows(types: types)
            for row in indices { part.append(row: row, of: rows) }
            parts.append(part)
            start = end
        }
        return parts
    }

    @Test("the same matches as the whole-table match, whatever the parts", arguments: Array(1...40) as [UInt64])
    func agreesWithWholeTableMatch(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let distinct = Int.random(in: 1...12, using: &random)
        let rows = Self.candidates(&random, entities: distinct)
        // Entity rows: random times around the candidates', some exactly at one, some with no entity (-1).
        var entities: [Int32] = [], times: [Int64] = []
        for _ in 0..<Int.random(in: 1...200, using: &random) {
            entities.append(Int.random(in: 0..<10, using: &random) == 0 ? -1 : Int32.random(in: 0..<Int32(distinct), using: &random))
            if rows.count > 0, Bool.random(using: &random) {
                times.append(rows.times[Int.random(in: 0..<rows.count, using: &random)])
            } else {
                times.append(Int64.random(in: -10...((rows.times.last ?? 0) + 30), using: &random))
            }
        }
        let expected = PointInTimeJoin.match(entities: entities, times: times, distinctEntities: distinct, rows: rows)
        var join = StreamingPointInTimeJoin(
            entities: entities, times: times, order: StreamingPointInTimeJoin.timeOrder(times), distinctEntities: distinct, types: Self.types)
        for part in Self.parts(of: rows, &random, shuffle: Bool.random(using: &random)) { try join.feed(part) }
        join.finish()
        var found = 0
        for row in entities.indices {
            let want = expected[row], got = join.matches[row]
            #expect((want < 0) == (got < 0), "seed \(seed) entity row \(row): a match on one side only")
            guard want >= 0, got >= 0 else { continue }
            found += 1
            // The same row content: neither is newer than the other.
            #expect(!rows.newer(Int(want), than: Int(got), of: join.matched) && !join.matched.newer(Int(got), than: Int(want), of: rows),
                    "seed \(seed) entity row \(row)")
            #expect(join.matched.entity[Int(got)] == entities[row])
        }
        // Not vacuous: an entity row with a candidate of its entity at or before its time has a match.
        let reachable = entities.indices.contains { row in
            entities[row] >= 0 && (0..<rows.count).contains { rows.entity[$0] == entities[row] && rows.times[$0] <= times[row] }
        }
        #expect(found > 0 || !reachable)
        // Each matched row is copied once for all the entity rows that share it.
        #expect(join.matched.count == Set(join.matches.filter { $0 >= 0 }).count)
    }

    @Test("a part that starts before the last time fed is refused")
    func refusesEarlierPart() throws {
        var later = CandidateRows(types: Self.types), earlier = CandidateRows(types: Self.types)
        for (rows, time) in [(0, Int64(50)), (1, Int64(49))] {
            var part = CandidateRows(types: Self.types)
            part.entity.append(0)
            part.times.append(time)
            part.created.append(CandidateRows.noCreated)
            for index in part.columns.indices { part.columns[index].append(.null) }
            if rows == 0 { later = part } else { earlier = part }
        }
        var join = StreamingPointInTimeJoin(entities: [0], times: [100], order: [0], distinctEntities: 1, types: Self.types)
        try join.feed(later)
        #expect(throws: StreamingPointInTimeJoin.OutOfOrder.self) { try join.feed(earlier) }
        // A part at the same time as the last one is taken.
        try join.feed(later)
    }
}

extension CandidateRows {
    /// Appends row `row` of `other` (rows of the same view).
    mutating func append(row: Int, of other: CandidateRows) {
        entity.append(other.entity[row])
        times.append(other.times[row])
        created.append(other.created[row])
        for index in columns.indices { columns[index].append(row: row, of: other.columns[index]) }
    }
}

import DataPlane
import Foundation
import Shared
import Testing
import TestSupport

@Suite("CSV file source reader")
struct CSVReaderTests {
    static func write(_ text: String) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("larder-csv-\(UUID().uuidString).csv")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    static func readAll(_ path: String, _ schema: [(String, ValueType)], batchSize: Int = 65_536, chunkSize: Int = 1 << 20) throws -> [ColumnBatch] {
        var reader = try CSVReader(path: path, schema: schema.map { (name: $0.0, type: $0.1) }, batchSize: batchSize, chunkSize: chunkSize)
        var batches: [ColumnBatch] = []
        while let batch = try reader.next() { batches.append(batch) }
        return batches
    }

    @Test("typed columns by header name, nulls, quotes, CRLF, extra columns ignored, a last line without a break")
    func reads() throws {
        let path = try Self.write(
            "event_timestamp,driver_id,ignored,conv_rate,note,active\r\n"
            + "2025-01-01T00:00:00Z,1001,x,0.5,\"a, \"\"quoted\"\"\nnote\",true\r\n"
            + "2025-01-01T01:30:00.25+01:00,-7,,,,\r\n"
            + "2025-01-01T02:00:00Z,1003,y,1e-3,plain,false")
        let batches = try Self.readAll(path, [("driver_id", .int64), ("conv_rate", .float64), ("event_timestamp", .timestamp), ("note", .string), ("active", .bool)])
        #expect(batches.count == 1)
        let batch = try #require(batches.first)
        #expect(batch.count == 3)
        #expect(batch.column("driver_id") == .int64([1001, -7, 1003]))
        #expect(batch.column("conv_rate") == .float64([0.5, nil, 0.001]))
        #expect(batch.column("event_timestamp") == .timestamp([1_735_689_600_000_000, 1_735_691_400_250_000, 1_735_696_800_000_000]))
        #expect(batch.column("note") == .string(["a, \"quoted\"\nnote", nil, "plain"]))
        #expect(batch.column("active") == .bool([true, nil, false]))
    }

    @Test("a malformed value names the file, the line and the column; a missing column names the header")
    func errors() throws {
        let path = try Self.write("driver_id,conv_rate\n1,0.5\n\"two\nlines\",0.1\n3,abc\n")
        #expect {
            _ = try Self.readAll(path, [("driver_id", .string), ("conv_rate", .float64)])
        } throws: { error in
            let failure = error as? CSVReader.Failure
            return failure?.line == 5 && failure?.column == "conv_rate" && failure?.description == "\(path):5: column conv_rate: 'abc' is not a number"
        }
        #expect {
            _ = try Self.readAll(path, [("driver_id", .int64), ("avg_daily_trips", .int64)])
        } throws: { ($0 as? CSVReader.Failure)?.line == 1 && ($0 as? CSVReader.Failure)?.column == "avg_daily_trips" }
        let badTime = try Self.write("t\n2025-13-01T00:00:00Z\n")
        #expect { _ = try Self.readAll(badTime, [("t", .timestamp)]) } throws: { ($0 as? CSVReader.Failure)?.line == 2 }
        let overflow = try Self.write("n\n99999999999999999999\n")
        #expect { _ = try Self.readAll(overflow, [("n", .int64)]) } throws: { ($0 as? CSVReader.Failure)?.message.contains("not an integer") == true }
        let unclosed = try Self.write("s\n\"never closed\n")
        #expect { _ = try Self.readAll(unclosed, [("s", .string)]) } throws: { ($0 as? CSVReader.Failure)?.message.contains("not closed") == true }
    }

    /// A random table (ids, rates, timestamps, notes with commas, quotes, line breaks) and its CSV text.
    struct RandomTable {
        var ids: [Int64?] = [], rates: [Double?] = [], notes: [String?] = [], times: [Int64?] = []
        var text = "id,rate,at,note\r\n"

        /// `specialShare`: the share of notes drawn with commas, quotes and line
        /// breaks; the others are plain letters, written unquoted or quoted at
        /// random (all unquoted when the share is 0: a file without a quote).
        /// `malformedRow`, when set, gets the rate `1.2.3`.
        init(rows: Int, specialShare: Double = 1, malformedRow: Int? = nil, using random: inout SeededGenerator) {
            let special = Array("ab ,\"\n\r\u{e9}z"), plain = Array("abz\u{e9}")
            var unquoted = Set<Int>()
            for _ in 0..<rows {
                ids.append(Int.random(in: 0..<10, using: &random) == 0 ? nil : Int64.random(in: Int64.min...Int64.max, using: &random))
                rates.append(Int.random(in: 0..<10, using: &random) == 0 ? nil : Double(Int.random(in: -1_000_000...1_000_000, using: &random)) / 1_000)
                let length = Int.random(in: 0...8, using: &random)
                let isSpecial = Double.random(in: 0..<1, using: &random) < specialShare
                let alphabet = isSpecial ? special : plain
                let note = String((0..<length).map { _ in alphabet.randomElement(using: &random)! })
                if !isSpecial, specialShare == 0 || Bool.random(using: &random) { unquoted.insert(notes.count) }
                notes.append(note.isEmpty ? nil : note)
                times.append(Int.random(in: 0..<10, using: &random) == 0 ? nil : Int64.random(in: 0...4_000_000_000, using: &random) * 1_000_000)
            }
            func quoted(_ text: String) -> String { "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
            // The note is the last field of each line, so quoted line breaks and CRs meet the line's end.
            for row in 0..<rows {
                let time = times[row].map { RFC3339.format(Date(timeIntervalSince1970: Double($0 / 1_000_000))) } ?? ""
                text += "\(ids[row].map(String.init) ?? ""),\(row == malformedRow ? "1.2.3" : rates[row].map { String($0) } ?? ""),\(time),\(notes[row].map { unquoted.contains(row) ? $0 : quoted($0) } ?? "")"
                text += Bool.random(using: &random) ? "\r\n" : "\n"
            }
        }

        static let schema: [(String, ValueType)] = [("id", .int64), ("rate", .float64), ("note", .string), ("at", .timestamp)]

        /// Each row as one comparable line.
        var rows: [String] {
            ids.indices.map { "\(String(describing: ids[$0]))|\(String(describing: rates[$0]))|\(String(describing: notes[$0]))|\(String(describing: times[$0]))" }
        }

        static func rows(of batches: [ColumnBatch]) -> [String] {
            batches.flatMap { batch -> [String] in
                guard case .int64(let ids) = batch.columns[0], case .float64(let rates) = batch.columns[1],
                    case .string(let notes) = batch.columns[2], case .timestamp(let times) = batch.columns[3]
                else { return ["bad batch"] }
                return ids.indices.map { "\(String(describing: ids[$0]))|\(String(describing: rates[$0]))|\(String(describing: notes[$0]))|\(String(describing: times[$0]))" }
            }
        }
    }

    @Test("random tables survive writing and reading at any chunk and batch size", arguments: Array(1...25) as [UInt64])
    func roundTrip(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let table = RandomTable(
            rows: Int.random(in: 0...120, using: &random), specialShare: [1, 0.1, 0].randomElement(using: &random)!, using: &random)
        let path = try Self.write(table.text)
        let batchSize = Int.random(in: 1...50, using: &random), chunkSize = Int.random(in: 1...64, using: &random)
        let batches = try Self.readAll(path, RandomTable.schema, batchSize: batchSize, chunkSize: chunkSize)
        #expect(batches.allSatisfy { $0.count <= batchSize })
        func joined<T>(_ pick: (ColumnBatch) -> [T]) -> [T] { batches.flatMap(pick) }
        #expect(joined { if case .int64(let v) = $0.columns[0] { v } else { [] } } == table.ids)
        #expect(joined { if case .float64(let v) = $0.columns[1] { v } else { [] } } == table.rates)
        #expect(joined { if case .string(let v) = $0.columns[2] { v } else { [] } } == table.notes)
        #expect(joined { if case .timestamp(let v) = $0.columns[3] { v } else { [] } } == table.times)
    }

    @Test("read in parallel parts cut at record boundaries: the same rows, whatever quotes and line breaks the cuts fall near", arguments: Array(1...40) as [UInt64])
    func parallelParts(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let table = RandomTable(
            rows: Int.random(in: 0...150, using: &random), specialShare: [1, 0.1, 0.01, 0].randomElement(using: &random)!, using: &random)
        let path = try Self.write(table.text)
        var reader = try ParallelCSVReader(
            path: path, schema: RandomTable.schema.map { (name: $0.0, type: $0.1) }, parts: Int.random(in: 2...6, using: &random),
            batchSize: Int.random(in: 1...40, using: &random), chunkSize: Int.random(in: 1...64, using: &random), minimumPartBytes: 1)
        #expect(table.ids.count < 10 || reader.partCount > 1)
        var batches: [ColumnBatch] = []
        while let batch = try reader.next() { batches.append(batch) }
        #expect(RandomTable.rows(of: batches).sorted() == table.rows.sorted())
    }

    @Test("a malformed value read by a later part names the same line as the sequential reader does")
    func parallelErrorLines() throws {
        var random = SeededGenerator(seed: 99)
        var table = RandomTable(rows: 200, using: &random)
        table.text += "1,not-a-number,,x\n"
        let path = try Self.write(table.text)
        let sequential = #expect(throws: CSVReader.Failure.self) { _ = try Self.readAll(path, RandomTable.schema) }
        var reader = try ParallelCSVReader(path: path, schema: RandomTable.schema.map { (name: $0.0, type: $0.1) }, parts: 3, minimumPartBytes: 1)
        let parallel = #expect(throws: CSVReader.Failure.self) { while try reader.next() != nil {} }
        #expect(parallel == sequential)
        #expect(parallel?.column == "rate")
    }

    @Test("parts name the same line as the sequential reader for a malformed value anywhere, quoted line breaks or not", arguments: Array(1...30) as [UInt64])
    func parallelErrorLinesAnywhere(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let table = RandomTable(
            rows: 120, specialShare: [0.2, 0.02, 0].randomElement(using: &random)!, malformedRow: Int.random(in: 0..<120, using: &random),
            using: &random)
        let path = try Self.write(table.text)
        let sequential = #expect(throws: CSVReader.Failure.self) { _ = try Self.readAll(path, RandomTable.schema) }
        var reader = try ParallelCSVReader(
            path: path, schema: RandomTable.schema.map { (name: $0.0, type: $0.1) }, parts: Int.random(in: 2...5, using: &random),
            chunkSize: Int.random(in: 1...200, using: &random), minimumPartBytes: 1)
        let parallel = #expect(throws: CSVReader.Failure.self) { while try reader.next() != nil {} }
        #expect(parallel == sequential)
    }

    @Test("a parallel reader dropped half-way stops its threads (no hang, no crash)")
    func parallelReaderDropped() throws {
        var random = SeededGenerator(seed: 7)
        let table = RandomTable(rows: 300, using: &random)
        let path = try Self.write(table.text)
        for taken in 0..<20 {
            var reader = try ParallelCSVReader(
                path: path, schema: RandomTable.schema.map { (name: $0.0, type: $0.1) }, parts: 3, batchSize: 5, minimumPartBytes: 1)
            for _ in 0..<taken { _ = try reader.next() }
        }
        var whole = try ParallelCSVReader(path: path, schema: RandomTable.schema.map { (name: $0.0, type: $0.1) }, parts: 3, batchSize: 5, minimumPartBytes: 1)
        var batches: [ColumnBatch] = []
        while let batch = try whole.next() { batches.append(batch) }
        #expect(RandomTable.rows(of: batches).sorted() == table.rows.sorted())
    }
}

import Dispatch
import Foundation
import Shared

/// Reads a large CSV file on several cores: the file is cut into parts at
/// record boundaries, and each part is parsed by its own `CSVReader`, one
/// batch of each at a time, in parallel. Batches come out part by part
/// interleaved, so rows are not in file order; memory holds one batch and
/// one read chunk per part.
///
/// **Finding the cuts.** A line break ends a record only outside a quoted
/// field, which cannot be told from the middle of a file. One scan from the
/// start follows the reader's own rules (a quote opens a field only at its
/// start; inside, `""` is a quote and `"` closes it) and takes the first
/// record start at or after each target offset. The scan reads a part's worth
/// of bytes per extra part, much faster than parsing them.
///
/// Errors name the file, line and column as the sequential reader does; when
/// several parts hold malformed values, the one reported may not be the first
/// in the file.
public struct ParallelCSVReader {
    private let parts: [PartReader]
    private var ready: [ColumnBatch] = []

    /// Opens `path`; files smaller than `minimumPartBytes` per part are read by one reader.
    public init(
        path: String, schema: [(name: String, type: ValueType)], parts: Int = ProcessInfo.processInfo.activeProcessorCount,
        batchSize: Int = 65_536, chunkSize: Int = 1 << 20, minimumPartBytes: Int = 4 << 20
    ) throws {
        var first = try CSVReader(path: path, schema: schema, batchSize: batchSize, chunkSize: chunkSize)
        let fieldIndex = try first.header()
        let start = first.offset, line = first.currentLine
        let size = ((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0)
        let count = max(1, min(parts, (size - start) / max(1, minimumPartBytes)))
        guard count > 1 else {
            self.parts = [PartReader(first)]
            return
        }
        let targets = (1..<count).map { start + (size - start) * $0 / count }
        var cuts = [(offset: start, line: line)] + (try Self.recordStarts(path: path, from: start, line: line, targets: targets))
        cuts = cuts.reduce(into: []) { unique, cut in if unique.last?.offset != cut.offset { unique.append(cut) } }
        var readers: [PartReader] = []
        for (index, cut) in cuts.enumerated() {
            let stop = index + 1 < cuts.count ? cuts[index + 1].offset : nil
            readers.append(PartReader(try CSVReader(
                path: path, schema: schema, batchSize: batchSize, chunkSize: chunkSize,
                part: (start: cut.offset, stop: stop, line: cut.line, fieldIndex: fieldIndex))))
        }
        self.parts = readers
    }

    /// How many parts the file is read in.
    public var partCount: Int { parts.count }

    /// The next batch, or nil when every part is read.
    public mutating func next() throws -> ColumnBatch? {
        if ready.isEmpty {
            let active = parts.filter { !$0.finished }
            guard !active.isEmpty else { return nil }
            if active.count == 1 {
                active[0].read()
            } else {
                DispatchQueue.concurrentPerform(iterations: active.count) { active[$0].read() }
            }
            for part in active {
                if let error = part.error { throw error }
                if let batch = part.batch { ready.append(batch) }
            }
            if ready.isEmpty { return nil }
        }
        return ready.removeFirst()
    }

    /// The first record start at or after each of `targets` (ascending), with
    /// its line, scanning from `start` (a record start on line `line`).
    /// Targets past the last record are left out.
    static func recordStarts(path: String, from start: Int, line: Int, targets: [Int]) throws -> [(offset: Int, line: Int)] {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw CSVReader.Failure(file: path, line: 0, column: nil, message: "cannot open the file")
        }
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(start))
        let quote: UInt8 = 0x22, comma: UInt8 = 0x2C, newline: UInt8 = 0x0A
        var found: [(offset: Int, line: Int)] = []
        var next = 0
        var position = start, lines = line
        var inQuotes = false, quoteSeen = false, atFieldStart = true
        while next < targets.count, let data = try handle.read(upToCount: 1 << 20), !data.isEmpty {
            data.withUnsafeBytes { raw in
                for byte in raw.bindMemory(to: UInt8.self) {
                    position += 1
                    if inQuotes {
                        if quoteSeen {
                            quoteSeen = false
                            if byte == quote { continue }   // "" inside a quoted field
                            inQuotes = false                // the closing quote; this byte is outside
                        } else {
                            if byte == quote { quoteSeen = true } else if byte == newline { lines += 1 }
                            continue
                        }
                    }
                    if byte == quote, atFieldStart {
                        inQuotes = true
                        atFieldStart = false
                    } else if byte == comma {
                        atFieldStart = true
                    } else if byte == newline {
                        lines += 1
                        atFieldStart = true
                        while next < targets.count, position >= targets[next] {
                            found.append((position, lines))
                            next += 1
                        }
                    } else {
                        atFieldStart = false
                    }
                }
            }
        }
        return found.reduce(into: []) { unique, cut in if unique.last?.offset != cut.offset { unique.append(cut) } }
    }
}

/// One part's reader and its latest result; used by one thread at a time.
private final class PartReader: @unchecked Sendable {
    var reader: CSVReader
    var batch: ColumnBatch?
    var error: (any Error)?
    var finished = false

    init(_ reader: CSVReader) { self.reader = reader }

    func read() {
        do {
            batch = try reader.next()
            if batch == nil { finished = true }
        } catch {
            self.error = error
            finished = true
        }
    }
}

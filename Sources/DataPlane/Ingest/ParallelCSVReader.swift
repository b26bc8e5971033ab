import Foundation
import Shared

/// Reads a large CSV file on several cores: the file is cut into parts at
/// record boundaries, and each part is parsed by its own `CSVReader` on a
/// thread of its own, ahead of the caller: while the caller stores one batch,
/// the next ones are being parsed. Batches come out of the parts interleaved,
/// so rows are not in file order; memory holds at most two parsed batches
/// and one read chunk per part.
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
    private let owner: PipelineOwner
    /// How many parts the file is read in.
    public let partCount: Int

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
            partCount = 1
            owner = Self.start([first])
            return
        }
        let targets = (1..<count).map { start + (size - start) * $0 / count }
        var cuts = [(offset: start, line: line)] + (try Self.recordStarts(path: path, from: start, line: line, targets: targets, chunkSize: chunkSize))
        cuts = cuts.reduce(into: []) { unique, cut in if unique.last?.offset != cut.offset { unique.append(cut) } }
        var readers: [CSVReader] = []
        for (index, cut) in cuts.enumerated() {
            let stop = index + 1 < cuts.count ? cuts[index + 1].offset : nil
            readers.append(try CSVReader(
                path: path, schema: schema, batchSize: batchSize, chunkSize: chunkSize,
                part: (start: cut.offset, stop: stop, line: cut.line, fieldIndex: fieldIndex)))
        }
        partCount = readers.count
        owner = Self.start(readers)
    }

    private static func start(_ readers: [CSVReader]) -> PipelineOwner {
        let pipeline = Pipeline(readers: readers)
        pipeline.start(readers)
        return PipelineOwner(pipeline)
    }

    /// The next batch, or nil when every part is read. Blocks while the parts
    /// are still parsing.
    public mutating func next() throws -> ColumnBatch? {
        try owner.pipeline.next()
    }

    /// The first record start at or after each of `targets` (ascending), with
    /// its line, scanning from `start` (a record start on line `line`).
    /// Targets past the last record are left out.
    static func recordStarts(path: String, from start: Int, line: Int, targets: [Int], chunkSize: Int = 1 << 20) throws -> [(offset: Int, line: Int)] {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw CSVReader.Failure(file: path, line: 0, column: nil, message: "cannot open the file")
        }
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(start))
        var scanner = RecordStartScanner(position: start, line: line, targets: targets)
        while !scanner.done, let data = try handle.read(upToCount: max(1, chunkSize)), !data.isEmpty {
            data.withUnsafeBytes { raw in scanner.scan(raw.bindMemory(to: UInt8.self)) }
        }
        return scanner.found.reduce(into: []) { unique, cut in if unique.last?.offset != cut.offset { unique.append(cut) } }
    }
}

/// Follows a CSV file chunk by chunk, by the reader's quoting rules, and
/// notes the first record start at or after each target offset.
private struct RecordStartScanner {
    private static let quote: UInt8 = 0x22, comma: UInt8 = 0x2C, newline: UInt8 = 0x0A
    /// The file offset of the next byte.
    private var position: Int
    /// The line of the next byte.
    private var line: Int
    private let targets: [Int]
    private var next = 0
    private var inQuotes = false, quoteSeen = false, atFieldStart = true
    /// The record starts found, with their lines.
    private(set) var found: [(offset: Int, line: Int)] = []

    init(position: Int, line: Int, targets: [Int]) {
        self.position = position
        self.line = line
        self.targets = targets
    }

    /// Whether every target has its record start.
    var done: Bool { next >= targets.count }

    /// Follows the next chunk of the file.
    mutating func scan(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        // Most files quote nothing: a chunk without quotes, entered outside a
        // quoted field, only needs its line breaks found and counted, many
        // times faster than following the quoting rules byte by byte.
        if !inQuotes, memchr(base, Int32(Self.quote), bytes.count) == nil {
            scanUnquoted(bytes, base: base)
        } else {
            scanQuoted(bytes)
        }
    }

    private mutating func scanUnquoted(_ bytes: UnsafeBufferPointer<UInt8>, base: UnsafePointer<UInt8>) {
        let chunkStart = position, chunkEnd = position + bytes.count
        var counted = chunkStart   // line breaks before this offset are counted in `line`
        while next < targets.count, targets[next] <= chunkEnd {
            // The record start at or after a target follows the first line
            // break at or after the byte before it.
            let from = max(targets[next] - 1, counted)
            guard from < chunkEnd, let hit = memchr(base + (from - chunkStart), Int32(Self.newline), chunkEnd - from) else { break }
            let breakOffset = from + (UnsafeRawPointer(hit) - UnsafeRawPointer(base + (from - chunkStart)))
            line += Self.lineBreaks(in: UnsafeBufferPointer(rebasing: bytes[(counted - chunkStart)...(breakOffset - chunkStart)]))
            counted = breakOffset + 1
            while next < targets.count, counted >= targets[next] {
                found.append((counted, line))
                next += 1
            }
        }
        line += Self.lineBreaks(in: UnsafeBufferPointer(rebasing: bytes[(counted - chunkStart)...]))
        position = chunkEnd
        let last = bytes[bytes.count - 1]
        atFieldStart = last == Self.comma || last == Self.newline
    }

    private mutating func scanQuoted(_ bytes: UnsafeBufferPointer<UInt8>) {
        for byte in bytes {
            position += 1
            if inQuotes {
                if quoteSeen {
                    quoteSeen = false
                    if byte == Self.quote { continue }   // "" inside a quoted field
                    inQuotes = false                     // the closing quote; this byte is outside
                } else {
                    if byte == Self.quote { quoteSeen = true } else if byte == Self.newline { line += 1 }
                    continue
                }
            }
            if byte == Self.quote, atFieldStart {
                inQuotes = true
                atFieldStart = false
            } else if byte == Self.comma {
                atFieldStart = true
            } else if byte == Self.newline {
                line += 1
                atFieldStart = true
                while next < targets.count, position >= targets[next] {
                    found.append((position, line))
                    next += 1
                }
            } else {
                atFieldStart = false
            }
        }
    }

    /// How many line feeds `bytes` holds (a loop the compiler vectorizes).
    private static func lineBreaks(in bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var count = 0
        for byte in bytes { count &+= byte == newline ? 1 : 0 }
        return count
    }
}

/// Stops the parts' threads when the reader is dropped (the threads hold the
/// pipeline, not this owner).
private final class PipelineOwner: Sendable {
    let pipeline: Pipeline
    init(_ pipeline: Pipeline) { self.pipeline = pipeline }
    deinit { pipeline.stop() }
}

/// A reader handed to the thread that owns it from then on.
private final class ReaderBox: @unchecked Sendable {
    var reader: CSVReader
    init(_ reader: CSVReader) { self.reader = reader }
}

/// The parts' threads and the batches they parsed. A part's thread parses
/// until two of its batches wait, then waits for the caller to take one.
private final class Pipeline: @unchecked Sendable {
    private let condition = NSCondition()
    private var ready: [(part: Int, batch: ColumnBatch)] = []
    /// Batches parsed and not yet taken, per part.
    private var waiting: [Int]
    private var running: Int
    private var failure: (any Error)?
    private var stopped = false
    static let aheadPerPart = 2

    init(readers: [CSVReader]) {
        waiting = Array(repeating: 0, count: readers.count)
        running = readers.count
    }

    /// Starts one thread per reader.
    func start(_ readers: [CSVReader]) {
        for (index, reader) in readers.enumerated() {
            let box = ReaderBox(reader)
            let thread = Thread { self.produce(part: index, box: box) }
            thread.name = "larder-csv-\(index)"
            thread.start()
        }
    }

    /// Makes the threads stop after the batch they are parsing.
    func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }

    private func produce(part: Int, box: ReaderBox) {
        while true {
            let result = Result { try box.reader.next() }
            condition.lock()
            switch result {
            case .success(let batch?):
                while waiting[part] >= Self.aheadPerPart, !stopped { condition.wait() }
                if !stopped {
                    ready.append((part, batch))
                    waiting[part] += 1
                    condition.broadcast()
                    condition.unlock()
                    continue
                }
            case .success(nil):
                break
            case .failure(let error):
                if failure == nil { failure = error }
            }
            running -= 1
            condition.broadcast()
            condition.unlock()
            return
        }
    }

    func next() throws -> ColumnBatch? {
        condition.lock()
        defer { condition.unlock() }
        while ready.isEmpty, failure == nil, running > 0 { condition.wait() }
        if let failure { throw failure }
        guard !ready.isEmpty else { return nil }
        let (part, batch) = ready.removeFirst()
        waiting[part] -= 1
        condition.broadcast()
        return batch
    }
}

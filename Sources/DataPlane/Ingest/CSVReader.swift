import Foundation
import Shared

/// Reads a CSV file of a `FileSource` in bounded memory, batch by batch,
/// typed by the source's declared columns.
///
/// The format: a header row naming the columns (extra columns are ignored),
/// fields separated by commas, optionally quoted with `"` (a quote inside is
/// doubled; quoted fields may hold commas and line breaks), lines ending in LF
/// or CRLF. An empty field is null. Timestamps are RFC 3339 (`2025-01-01T00:00:00Z`,
/// with optional fractional seconds and offset). A value that does not parse
/// fails the read with the file, line and column.
public struct CSVReader {
    /// Why a file cannot be read: names the file, the line and the column.
    public struct Failure: Error, Sendable, CustomStringConvertible, Equatable {
        /// The file.
        public let file: String
        /// The 1-based line where the record starts.
        public let line: Int
        /// The column, when one is to blame.
        public let column: String?
        /// What is wrong.
        public let message: String
        /// The offending value (at most 64 characters), when one is to blame.
        public let value: String?

        /// Creates a failure.
        public init(file: String, line: Int, column: String?, message: String, value: String? = nil) {
            self.file = file
            self.line = line
            self.column = column
            self.message = message
            self.value = value
        }

        private var place: String { "\(file):\(line)\(column.map { ": column \($0)" } ?? "")" }

        public var description: String { "\(place): \(value.map { "'\($0)' " } ?? "")\(message)" }

        /// The description without the value, for reports that leave the
        /// customer's environment: a value in a source file is customer data.
        public var withoutValue: String { "\(place): \(value == nil ? "" : "the value ")\(message)" }
    }

    let path: String
    let schema: [(name: String, type: ValueType)]
    let batchSize: Int
    let chunkSize: Int
    private let handle: FileHandle
    /// Bytes read but not yet parsed (the start of a record cut by a chunk).
    private var pending: [UInt8] = []
    /// Where the unparsed bytes of `pending` start.
    private var cursor = 0
    private var atEndOfFile = false
    /// For each declared column, its field index in the file.
    private var fieldIndex: [Int] = []
    private var line = 1
    private var finished = false

    /// The file offset of `pending[0]`.
    private var base = 0
    /// Records starting at or after this offset are left to another reader.
    private let stop: Int?

    /// Opens `path` for the declared `schema`. `batchSize` rows per batch;
    /// `chunkSize` bytes per read (the memory bound, with one batch).
    public init(path: String, schema: [(name: String, type: ValueType)], batchSize: Int = 65_536, chunkSize: Int = 1 << 20) throws {
        try self.init(path: path, schema: schema, batchSize: batchSize, chunkSize: chunkSize, part: nil)
    }

    /// A reader of part of the file: the records that start in `part.start..<part.stop`
    /// (a record boundary, on line `part.line`), with the header's column
    /// positions already known.
    init(
        path: String, schema: [(name: String, type: ValueType)], batchSize: Int, chunkSize: Int,
        part: (start: Int, stop: Int?, line: Int, fieldIndex: [Int])?
    ) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw Failure(file: path, line: 0, column: nil, message: "cannot open the file")
        }
        self.path = path
        self.schema = schema
        self.batchSize = max(1, batchSize)
        self.chunkSize = max(1, chunkSize)
        self.handle = handle
        self.stop = part?.stop
        if let part {
            try handle.seek(toOffset: UInt64(part.start))
            base = part.start
            line = part.line
            fieldIndex = part.fieldIndex
        }
    }

    /// Reads the header row (if not read yet); returns each declared column's field position.
    mutating func header() throws -> [Int] {
        if fieldIndex.isEmpty, !schema.isEmpty { try readHeader() }
        return fieldIndex
    }

    /// The file offset where the next record starts.
    var offset: Int { base + cursor }

    /// The line the next record starts on.
    var currentLine: Int { line }

    /// The next batch, or nil at the end of the file.
    public mutating func next() throws -> ColumnBatch? {
        guard !finished else { return nil }
        if fieldIndex.isEmpty, !schema.isEmpty { try readHeader() }
        if fieldPositions.isEmpty, !fieldIndex.isEmpty {
            fieldPositions = Array(repeating: -1, count: fieldIndex.max()! + 1)
            for (position, index) in fieldIndex.enumerated() { fieldPositions[index] = position }
        }
        var columns = builders ?? ColumnBuilders(schema: schema, capacity: batchSize)
        columns.rows = 0
        while columns.rows < batchSize {
            appendPlainRecords(to: &columns)
            guard columns.rows < batchSize, stop.map({ base + cursor < $0 }) ?? true, let recordLine = try nextRecord() else { break }
            if fields.count == 1, fields[0].start == fields[0].end { continue }   // a blank line
            try appendRecord(line: recordLine, to: &columns)
            columns.rows += 1
        }
        if columns.rows == 0 {
            finished = true
            builders = nil
            try? handle.close()
            return nil
        }
        builders = columns
        return ColumnBatch(names: schema.map(\.name), columns: columns.values)
    }

    /// For each field index of the file up to the last declared one, the
    /// declared column's position, or -1 for a field not declared.
    private var fieldPositions: [Int] = []

    /// The fast path: appends the records in the buffer that need no special
    /// handling — no quotes, every value parses, enough fields, not blank —
    /// reading each byte once and parsing each declared value as its field ends.
    /// Stops before the first record that does need it (or is cut by the end of
    /// the buffer, or starts at `stop`), leaving it, with its exact error if any,
    /// to the general path. Returns how many records it appended.
    private mutating func appendPlainRecords(to columns: inout ColumnBuilders) {
        let comma: UInt8 = 0x2C, newline: UInt8 = 0x0A, quote: UInt8 = 0x22, carriageReturn: UInt8 = 0x0D
        let positions = fieldPositions, stopIndex = stop.map { $0 - base } ?? Int.max
        let rowsBefore = columns.rows
        var committed = cursor
        pending.withUnsafeBufferPointer { bytes in
            let count = bytes.count
            var index = committed
            while columns.rows < columns.capacity, index < stopIndex {
                var field = 0
                while true {
                    let position = field < positions.count ? positions[field] : -1
                    // Most values parse as their bytes are scanned.
                    if position >= 0, let delimiter = columns.appendScanning(bytes, from: index, at: position) {
                        field += 1
                        index = delimiter + 1
                        if bytes[delimiter] == newline { break } else { continue }
                    }
                    var scan = index
                    while scan < count {
                        let byte = bytes[scan]
                        if byte == comma || byte == newline || byte == quote { break }
                        scan += 1
                    }
                    guard scan < count, bytes[scan] != quote else { return }
                    let atEnd = bytes[scan] == newline
                    let end = atEnd && scan > index && bytes[scan - 1] == carriageReturn ? scan - 1 : scan
                    if atEnd, field == 0, end == index { return }   // a blank line
                    if position >= 0, !columns.appendPlain(UnsafeBufferPointer(rebasing: bytes[index..<end]), at: position) { return }
                    field += 1
                    index = scan + 1
                    if atEnd { break }
                }
                guard field >= positions.count else { return }
                columns.rows += 1
                committed = index
            }
        }
        cursor = committed
        line += columns.rows - rowsBefore   // a record of the fast path has no line break but its last
    }

    /// The columns being filled, kept from batch to batch (with the last timestamps, which rows often share).
    private var builders: ColumnBuilders?

    /// The column names of `path`'s header row, in file order.
    public static func columnNames(path: String) throws -> [String] {
        var reader = try CSVReader(path: path, schema: [], batchSize: 1, chunkSize: 1 << 16, part: nil)
        guard try reader.nextRecord() != nil else {
            throw Failure(file: path, line: 1, column: nil, message: "the file is empty; it needs a header row naming its columns")
        }
        return reader.fields.map { reader.text($0).trimmingCharacters(in: .whitespaces) }
    }

    private mutating func readHeader() throws {
        guard let headerLine = try nextRecord() else {
            throw Failure(file: path, line: 1, column: nil, message: "the file is empty; it needs a header row naming its columns")
        }
        let names = fields.map { bounds in text(bounds).trimmingCharacters(in: .whitespaces) }
        fieldIndex = try schema.map { column in
            guard let index = names.firstIndex(of: column.name) else {
                throw Failure(
                    file: path, line: headerLine, column: column.name,
                    message: "the header has no column '\(column.name)' (it has \(names.joined(separator: ", ")))")
            }
            return index
        }
    }

    /// Where a field's bytes are in `pending`; `escaped` when doubled quotes must be collapsed.
    struct FieldBounds {
        var start: Int
        var end: Int
        var escaped: Bool
    }

    /// The fields of the current record.
    private var fields: [FieldBounds] = []

    /// Reads more of the file into `pending` (dropping what was parsed); false at the end.
    private mutating func fill() throws -> Bool {
        guard !atEndOfFile else { return false }
        let data = try handle.read(upToCount: chunkSize) ?? Data()
        if data.isEmpty {
            atEndOfFile = true
            return false
        }
        pending.removeFirst(cursor)
        base += cursor
        cursor = 0
        pending.append(contentsOf: data)
        return true
    }

    /// Parses the next record into `fields`; returns the line it starts on, or nil at the end.
    private mutating func nextRecord() throws -> Int? {
        while true {
            if let end = try parseRecord(from: cursor) {
                cursor = end
                let recordLine = line
                line += 1 + linesInRecord
                return recordLine
            }
            if try !fill() {
                guard cursor < pending.count else { return nil }
                // The last record has no line break.
                pending.append(0x0A)
                atEndOfFile = true
            }
        }
    }

    private var linesInRecord = 0

    /// Parses one record starting at `start` into `fields`; returns the index
    /// after its line break, or nil when the record is not complete yet.
    private mutating func parseRecord(from start: Int) throws -> Int? {
        let quote: UInt8 = 0x22, comma: UInt8 = 0x2C, newline: UInt8 = 0x0A, carriageReturn: UInt8 = 0x0D
        fields.removeAll(keepingCapacity: true)
        linesInRecord = 0
        let count = pending.count
        let path = self.path, recordLine = line
        // A second reference to the same bytes, so the loop may fill `fields` while reading them.
        let buffer = pending
        return try buffer.withUnsafeBufferPointer { bytes -> Int? in
            var index = start
            var lines = 0
            while true {
                // One field.
                guard index < count else { return nil }
                if bytes[index] == quote {
                    var scan = index + 1
                    var escaped = false
                    while true {
                        guard scan < count else {
                            if atEndOfFile {
                                throw Failure(file: path, line: recordLine, column: nil, message: "a quoted field is not closed before the end of the file")
                            }
                            return nil
                        }
                        let byte = bytes[scan]
                        if byte == quote {
                            guard scan + 1 < count else { if atEndOfFile { break } else { return nil } }
                            if bytes[scan + 1] == quote {
                                escaped = true
                                scan += 2
                                continue
                            }
                            break
                        }
                        if byte == newline { lines += 1 }
                        scan += 1
                    }
                    fields.append(FieldBounds(start: index + 1, end: scan, escaped: escaped))
                    index = scan + 1
                    if index < count, bytes[index] == carriageReturn {
                        guard index + 1 < count else { return nil }   // need the next byte to know
                        if bytes[index + 1] == newline { index += 1 }
                    }
                    guard index < count else { return nil }
                    let after = bytes[index]
                    if after == comma {
                        index += 1
                        continue
                    }
                    if after == newline {
                        linesInRecord = lines
                        return index + 1
                    }
                    throw Failure(file: path, line: recordLine + lines, column: nil, message: "unexpected text after a closing quote")
                }
                var scan = index
                while scan < count, bytes[scan] != comma, bytes[scan] != newline { scan += 1 }
                guard scan < count else { return nil }
                if bytes[scan] == comma {
                    fields.append(FieldBounds(start: index, end: scan, escaped: false))
                    index = scan + 1
                    continue
                }
                let end = scan > index && bytes[scan - 1] == carriageReturn ? scan - 1 : scan
                fields.append(FieldBounds(start: index, end: end, escaped: false))
                linesInRecord = lines
                return scan + 1
            }
        }
    }

    /// A field's text.
    private func text(_ bounds: FieldBounds) -> String {
        pending.withUnsafeBufferPointer { bytes in
            Self.text(UnsafeBufferPointer(rebasing: bytes[bounds.start..<bounds.end]), escaped: bounds.escaped)
        }
    }

    /// `field`'s text, with doubled quotes collapsed when `escaped`.
    static func text(_ field: UnsafeBufferPointer<UInt8>, escaped: Bool) -> String {
        let raw = String(decoding: field, as: UTF8.self)
        return escaped ? raw.replacingOccurrences(of: "\"\"", with: "\"") : raw
    }

    /// Appends the current record's declared fields to `columns`, typed.
    private func appendRecord(line recordLine: Int, to columns: inout ColumnBuilders) throws {
        let path = self.path, schema = self.schema, fieldIndex = self.fieldIndex
        try fields.withUnsafeBufferPointer { fields in
            try pending.withUnsafeBufferPointer { bytes in
                for position in 0..<fieldIndex.count {
                    let index = fieldIndex[position]
                    guard index < fields.count else {
                        throw Failure(
                            file: path, line: recordLine, column: schema[position].name,
                            message: "the row has \(fields.count) fields; the header has more")
                    }
                    let bounds = fields[index]
                    let field = UnsafeBufferPointer(rebasing: bytes[bounds.start..<bounds.end])
                    func fail(_ type: String) -> Failure {
                        Failure(
                            file: path, line: recordLine, column: schema[position].name, message: "is not \(type)",
                            value: String(Self.text(field, escaped: bounds.escaped).prefix(64)))
                    }
                    try columns.append(field, escaped: bounds.escaped, at: position, fail: fail)
                }
            }
        }
    }
}

extension ColumnBuilders {
    /// Parses an unquoted `field` as column `position`'s type and writes it
    /// in row `rows` (empty is null); false when it does not parse.
    @inline(__always)
    mutating func appendPlain(_ field: UnsafeBufferPointer<UInt8>, at position: Int) -> Bool {
        let slot = slots[position]
        switch kinds[position] {
        case .int64:
            if field.isEmpty { integers[slot].set(row: rows, nil); return true }
            guard let value = FieldParser.integer(field) else { return false }
            integers[slot].set(row: rows, value)
        case .float64:
            if field.isEmpty { doubles[slot].set(row: rows, nil); return true }
            guard let value = FieldParser.double(field) else { return false }
            doubles[slot].set(row: rows, value)
        case .timestamp:
            if field.isEmpty { times[slot].set(row: rows, nil); return true }
            if let value = lastTime(field, slot: slot) {
                times[slot].set(row: rows, value)
                return true
            }
            guard let value = FieldParser.timestamp(field) else { return false }
            lastTimes[slot] = (Array(field), value)
            times[slot].set(row: rows, value)
        case .int32, .bool, .string:
            // A failure is only built if the value does not parse; the general path then reports it.
            return (try? append(field, escaped: false, at: position) { _ in CSVReader.Failure(file: "", line: 0, column: nil, message: "") }) != nil
        }
        return true
    }

    /// Parses the field starting at `bytes[start]` while finding its end, in
    /// the common shapes: a decimal integer, a decimal number of at most 15
    /// digits, a timestamp with the same bytes as the column's last one.
    /// Writes it in row `rows` and returns the index of the comma or line feed
    /// that ends it; nil for any other shape (left to `appendPlain`).
    @inline(__always)
    mutating func appendScanning(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, at position: Int) -> Int? {
        let comma: UInt8 = 0x2C, newline: UInt8 = 0x0A, minus: UInt8 = 0x2D, point: UInt8 = 0x2E
        let count = bytes.count, slot = slots[position]
        switch kinds[position] {
        case .int64, .float64:
            var index = start, negative = false
            if index < count, bytes[index] == minus { negative = true; index += 1 }
            var mantissa: Int64 = 0, digits = 0, fraction = -1
            while index < count {
                let digit = bytes[index] &- 48
                if digit <= 9 {
                    mantissa = mantissa &* 10 &+ Int64(digit)
                    digits += 1
                } else if bytes[index] == point, fraction < 0, kinds[position] == .float64 {
                    fraction = digits
                } else {
                    break
                }
                index += 1
            }
            guard index < count, bytes[index] == comma || bytes[index] == newline, digits > 0, digits <= 15 else { return nil }
            if kinds[position] == .int64 {
                integers[slot].set(row: rows, negative ? -mantissa : mantissa)
            } else {
                let value = fraction < 0 ? Double(mantissa) : Double(mantissa) / FieldParser.powersOfTen[digits - fraction]
                doubles[slot].set(row: rows, negative ? -value : value)
            }
            return index
        case .timestamp:
            return lastTimes[slot].bytes.withUnsafeBufferPointer { last -> Int? in
                let end = start + last.count
                guard !last.isEmpty, end < count, bytes[end] == comma || bytes[end] == newline,
                      memcmp(last.baseAddress!, bytes.baseAddress! + start, last.count) == 0
                else { return nil }
                return end
            }.map { end in
                times[slot].set(row: rows, lastTimes[slot].value)
                return end
            }
        default:
            return nil
        }
    }

    /// The value of timestamp column `slot`'s last field, when `field` has the same bytes.
    @inline(__always)
    func lastTime(_ field: UnsafeBufferPointer<UInt8>, slot: Int) -> Int64? {
        lastTimes[slot].bytes.withUnsafeBufferPointer { last in
            last.count == field.count && memcmp(last.baseAddress!, field.baseAddress!, field.count) == 0
        } ? lastTimes[slot].value : nil
    }

    /// Parses `field` as column `position`'s type and writes it in row `rows` (empty is null).
    @inline(__always)
    mutating func append(_ field: UnsafeBufferPointer<UInt8>, escaped: Bool, at position: Int, fail: (String) -> CSVReader.Failure) throws {
        let slot = slots[position]
        switch kinds[position] {
        case .int64, .int32:
            if field.isEmpty { integers[slot].set(row: rows, nil); return }
            guard let value = FieldParser.integer(field) else { throw fail("an integer") }
            if kinds[position] == .int32, Int32(exactly: value) == nil { throw fail("an int32") }
            integers[slot].set(row: rows, value)
        case .float64:
            if field.isEmpty { doubles[slot].set(row: rows, nil); return }
            guard let value = FieldParser.double(field) else { throw fail("a number") }
            doubles[slot].set(row: rows, value)
        case .bool:
            if field.isEmpty { booleans[slot].set(row: rows, nil); return }
            switch CSVReader.text(field, escaped: escaped).lowercased() {
            case "true", "1", "t": booleans[slot].set(row: rows, true)
            case "false", "0", "f": booleans[slot].set(row: rows, false)
            default: throw fail("true or false")
            }
        case .timestamp:
            if field.isEmpty { times[slot].set(row: rows, nil); return }
            if let value = lastTime(field, slot: slot) {
                times[slot].set(row: rows, value)
                return
            }
            guard let value = FieldParser.timestamp(field) else { throw fail("an RFC 3339 timestamp such as 2025-01-01T00:00:00Z") }
            lastTimes[slot] = (Array(field), value)
            times[slot].set(row: rows, value)
        case .string:
            texts[slot].set(row: rows, field.isEmpty ? nil : CSVReader.text(field, escaped: escaped))
        }
    }
}

/// Parsing of single field values from their bytes, without making strings.
enum FieldParser {
    /// A decimal integer with an optional sign.
    static func integer(_ bytes: UnsafeBufferPointer<UInt8>) -> Int64? {
        var index = 0
        var negative = false
        if bytes.first == 0x2D || bytes.first == 0x2B {
            negative = bytes.first == 0x2D
            index = 1
        }
        guard index < bytes.count else { return nil }
        var value: Int64 = 0
        while index < bytes.count {
            let digit = Int64(bytes[index]) - 48
            guard digit >= 0, digit <= 9 else { return nil }
            let (shifted, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) = negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
            guard !overflow1, !overflow2 else { return nil }
            value = next
            index += 1
        }
        return value
    }

    static let powersOfTen: [Double] = (0...22).map { exponent in (0..<exponent).reduce(1.0) { value, _ in value * 10 } }

    /// A floating-point number (`1.5`, `-2e3`, `nan` and `inf` are refused).
    static func double(_ bytes: UnsafeBufferPointer<UInt8>) -> Double? {
        // The common case, `-123.456` with at most 15 digits, is exact in one division
        // (both operands are exact doubles, so the quotient is correctly rounded).
        var index = 0, negative = false
        if index < bytes.count, bytes[index] == 0x2D { negative = true; index += 1 }
        var mantissa: Int64 = 0, digits = 0, fraction = 0, sawPoint = false, simple = index < bytes.count
        while index < bytes.count {
            let byte = bytes[index]
            if byte >= 48, byte <= 57 {
                mantissa = mantissa * 10 + Int64(byte - 48)
                digits += 1
                if sawPoint { fraction += 1 }
                if digits > 15 { simple = false; break }
            } else if byte == 0x2E, !sawPoint {
                sawPoint = true
            } else {
                simple = false
                break
            }
            index += 1
        }
        if simple, digits > 0 {
            let value = Double(mantissa) / powersOfTen[fraction]
            return negative ? -value : value
        }
        return slowDouble(bytes)
    }

    static func slowDouble(_ bytes: UnsafeBufferPointer<UInt8>) -> Double? {
        guard bytes.count < 64, bytes.allSatisfy({ ($0 >= 48 && $0 <= 57) || $0 == 0x2E || $0 == 0x2D || $0 == 0x2B || $0 == 0x65 || $0 == 0x45 })
        else { return nil }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: bytes.count + 1) { buffer in
            for (index, byte) in bytes.enumerated() { buffer[index] = CChar(bitPattern: byte) }
            buffer[bytes.count] = 0
            var end: UnsafeMutablePointer<CChar>?
            let value = strtod(buffer.baseAddress!, &end)
            guard let end, end == buffer.baseAddress! + bytes.count else { return nil }
            return value
        }
    }

    /// An RFC 3339 timestamp, as microseconds since the epoch.
    static func timestamp(_ bytes: UnsafeBufferPointer<UInt8>) -> Int64? {
        func number(_ from: Int, _ length: Int) -> Int64? {
            guard from + length <= bytes.count else { return nil }
            var value: Int64 = 0
            for index in from..<(from + length) {
                let digit = Int64(bytes[index]) - 48
                guard digit >= 0, digit <= 9 else { return nil }
                value = value * 10 + digit
            }
            return value
        }
        guard bytes.count >= 20, bytes[4] == 0x2D, bytes[7] == 0x2D, bytes[10] == 0x54 || bytes[10] == 0x74 || bytes[10] == 0x20,
              bytes[13] == 0x3A, bytes[16] == 0x3A,
              let year = number(0, 4), let month = number(5, 2), let day = number(8, 2),
              let hour = number(11, 2), let minute = number(14, 2), let second = number(17, 2),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        var index = 19
        var micros: Int64 = 0
        if index < bytes.count, bytes[index] == 0x2E {
            index += 1
            var digits = 0
            while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 {
                if digits < 6 { micros = micros * 10 + Int64(bytes[index] - 48) }
                digits += 1
                index += 1
            }
            guard digits > 0 else { return nil }
            if digits < 6 { for _ in digits..<6 { micros *= 10 } }
        }
        guard index < bytes.count else { return nil }
        var offset: Int64 = 0
        switch bytes[index] {
        case 0x5A, 0x7A:   // Z
            guard index + 1 == bytes.count else { return nil }
        case 0x2B, 0x2D:   // +hh:mm, -hh:mm
            guard index + 6 == bytes.count, bytes[index + 3] == 0x3A, let hours = number(index + 1, 2), let minutes = number(index + 4, 2) else {
                return nil
            }
            offset = (hours * 3_600 + minutes * 60) * (bytes[index] == 0x2D ? -1 : 1)
        default:
            return nil
        }
        // Days since the epoch of a proleptic Gregorian date (Howard Hinnant's algorithm).
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset
        return seconds * 1_000_000 + micros
    }
}

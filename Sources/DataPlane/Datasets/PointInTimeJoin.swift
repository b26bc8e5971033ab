import Shared

/// One feature column of rows read from the offline store, stored compactly:
/// numbers, booleans and times as 64-bit patterns, strings as strings, and a
/// null flag per row.
struct StoredFeatureColumn: Sendable {
    let type: ValueType
    private(set) var bits: [Int64] = []
    private(set) var strings: [String?] = []
    private(set) var nulls: [Bool] = []

    init(type: ValueType) {
        self.type = type
    }

    var isText: Bool { type == .string || type == .bytes }

    mutating func append(_ value: FeatureValue) {
        switch value {
        case .null:
            nulls.append(true)
            if isText { strings.append(nil) } else { bits.append(0) }
            return
        case .int(let number), .timestamp(let number): bits.append(number)
        case .double(let number): bits.append(Int64(bitPattern: number.bitPattern))
        case .bool(let flag): bits.append(flag ? 1 : 0)
        case .string(let text): strings.append(text)
        }
        nulls.append(false)
    }

    /// Appends row `row` of a parsed array column (same type).
    mutating func append(parsed column: ArrayColumns.Parsed, row: Int) {
        if isText {
            strings.append(column.texts[row])
            nulls.append(column.texts[row] == nil)
        } else {
            bits.append(column.bits[row])
            nulls.append(column.nulls[row])
        }
    }

    /// Makes room for `count` values.
    mutating func reserve(_ count: Int) {
        if isText { strings.reserveCapacity(count) } else { bits.reserveCapacity(count) }
        nulls.reserveCapacity(count)
    }

    /// Appends another column's rows (same type).
    mutating func append(_ other: StoredFeatureColumn) {
        bits.append(contentsOf: other.bits)
        strings.append(contentsOf: other.strings)
        nulls.append(contentsOf: other.nulls)
    }

    /// The value of row `row`.
    func value(_ row: Int) -> FeatureValue {
        if nulls[row] { return .null }
        switch type {
        case .int64, .int32: return .int(bits[row])
        case .float64, .float32: return .double(Double(bitPattern: UInt64(bitPattern: bits[row])))
        case .bool: return .bool(bits[row] != 0)
        case .timestamp: return .timestamp(bits[row])
        default: return .string(strings[row] ?? "")
        }
    }

    /// Orders rows `a` and `b` by value (null first): the last tie-break, so
    /// exact duplicates in time resolve the same way whatever order they were read in.
    func compare(_ a: Int, _ b: Int) -> Int {
        if nulls[a] != nulls[b] { return nulls[a] ? -1 : 1 }
        if nulls[a] { return 0 }
        if isText {
            let left = strings[a] ?? "", right = strings[b] ?? ""
            return left == right ? 0 : (left < right ? -1 : 1)
        }
        if type == .float64 || type == .float32 {
            let left = Double(bitPattern: UInt64(bitPattern: bits[a])), right = Double(bitPattern: UInt64(bitPattern: bits[b]))
            return left == right ? 0 : (left < right ? -1 : 1)
        }
        return bits[a] == bits[b] ? 0 : (bits[a] < bits[b] ? -1 : 1)
    }
}

/// The offline rows of one feature view version that a chunk of entity rows
/// can match: each row's entity (an index into the chunk's distinct keys),
/// event time, created time and the features read.
struct CandidateRows: Sendable {
    /// The created time of a row without one.
    static let noCreated = Int64.min

    var entity: [Int32] = []
    /// Event times, microseconds since the epoch.
    var times: [Int64] = []
    /// Created times, microseconds (`noCreated` when null).
    var created: [Int64] = []
    /// One column per feature read, in the view read's order.
    var columns: [StoredFeatureColumn]

    init(types: [ValueType]) {
        columns = types.map(StoredFeatureColumn.init(type:))
    }

    var count: Int { times.count }

    /// Makes room for `count` rows. (Untouched room of a large allocation is
    /// not resident, so an estimate too high costs address space, not memory;
    /// too low, and growing copies the arrays while the old ones are held.)
    mutating func reserve(_ count: Int) {
        entity.reserveCapacity(count)
        times.reserveCapacity(count)
        created.reserveCapacity(count)
        for index in columns.indices { columns[index].reserve(count) }
    }

    /// Appends `other`'s rows (read from the same view).
    mutating func append(_ other: CandidateRows) {
        entity.append(contentsOf: other.entity)
        times.append(contentsOf: other.times)
        created.append(contentsOf: other.created)
        for index in columns.indices { columns[index].append(other.columns[index]) }
    }

    /// Whether row `a` is newer than row `b`: by event time, then created
    /// time, then values (so the choice never depends on read order).
    func newer(_ a: Int, than b: Int) -> Bool {
        if times[a] != times[b] { return times[a] > times[b] }
        if created[a] != created[b] { return created[a] > created[b] }
        for column in columns {
            let order = column.compare(a, b)
            if order != 0 { return order > 0 }
        }
        return false
    }
}

/// Point-in-time matching of entity rows to feature rows.
///
/// For entity row *r* with entity *e* and time *t*, the match is the row of
/// *e* with the greatest (event time, created time) such that
/// `t - ttl <= event time <= t` (no ttl: no lower bound). A row of *e* at or
/// before *t* but older than the ttl makes the cell `expired`; no row at or
/// before *t* makes it `not_found`; both read as null. A feature row after *t*
/// is never seen.
enum PointInTimeJoin {
    /// The matched row of each entity row (-1: none at or before its time).
    /// `entities[r]` is entity row r's entity index (-1: its key has no rows), `times[r]` its time.
    static func match(entities: [Int32], times: [Int64], distinctEntities: Int, rows: CandidateRows) -> [Int32] {
        // Group the candidate rows by entity (a counting sort), newest last within each.
        var starts = [Int32](repeating: 0, count: distinctEntities + 1)
        for entity in rows.entity { starts[Int(entity) + 1] += 1 }
        for index in 0..<distinctEntities { starts[index + 1] += starts[index] }
        var order = [Int32](repeating: 0, count: rows.count)
        var fill = starts
        for (row, entity) in rows.entity.enumerated() {
            order[Int(fill[Int(entity)])] = Int32(row)
            fill[Int(entity)] += 1
        }
        for entity in 0..<distinctEntities {
            let range = Int(starts[entity])..<Int(starts[entity + 1])
            guard range.count > 1 else { continue }
            var sorted = true
            for position in range.dropFirst() where rows.newer(Int(order[position - 1]), than: Int(order[position])) {
                sorted = false
                break
            }
            if !sorted { order[range].sort { rows.newer(Int($1), than: Int($0)) } }
        }
        // Each entity row: the last of its entity's rows at or before its time.
        var matches = [Int32](repeating: -1, count: entities.count)
        for (row, entity) in entities.enumerated() where entity >= 0 {
            var low = Int(starts[Int(entity)]), high = Int(starts[Int(entity) + 1])
            let time = times[row]
            // The first position whose time is after `time`.
            while low < high {
                let middle = (low + high) / 2
                if rows.times[Int(order[middle])] <= time { low = middle + 1 } else { high = middle }
            }
            if low > Int(starts[Int(entity)]) { matches[row] = order[low - 1] }
        }
        return matches
    }

    /// Fills the grid cells of `view`'s reads for each entity row from its match.
    static func fill(
        _ grid: inout FeatureGrid, view: ResolvedRequest.ViewRead, rows: CandidateRows, matches: [Int32], times: [Int64], ttl: Int64?
    ) {
        for (entityRow, match) in matches.enumerated() where match >= 0 {
            let row = Int(match)
            let eventTime = rows.times[row]
            let expired = ttl.map { eventTime < times[entityRow] - $0 } ?? false
            let base = entityRow * grid.width
            for (position, read) in view.reads.enumerated() {
                let cell = base + read.column
                grid.eventTimes[cell] = eventTime
                if expired {
                    grid.statuses[cell] = .expired
                } else {
                    let value = rows.columns[position].value(row)
                    grid.values[cell] = value
                    grid.statuses[cell] = FeatureStatus(of: value)
                }
            }
        }
    }
}

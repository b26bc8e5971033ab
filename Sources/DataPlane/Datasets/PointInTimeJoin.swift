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

    /// Appends every row of a parsed array column (same type).
    mutating func append(parsed column: ArrayColumns.Parsed) {
        if isText {
            strings.append(contentsOf: column.texts)
            nulls.append(contentsOf: column.texts.map { $0 == nil })
        } else {
            bits.append(contentsOf: column.bits)
            nulls.append(contentsOf: column.nulls)
        }
    }

    /// Appends rows `rows` of a parsed array column (same type).
    mutating func append(parsed column: ArrayColumns.Parsed, rows: [Int]) {
        if isText {
            for row in rows {
                strings.append(column.texts[row])
                nulls.append(column.texts[row] == nil)
            }
        } else {
            for row in rows {
                bits.append(column.bits[row])
                nulls.append(column.nulls[row])
            }
        }
    }

    /// Makes room for `count` values.
    mutating func reserve(_ count: Int) {
        if isText { strings.reserveCapacity(count) } else { bits.reserveCapacity(count) }
        nulls.reserveCapacity(count)
    }

    /// Appends row `row` of another column (same type).
    mutating func append(row: Int, of other: StoredFeatureColumn) {
        if isText { strings.append(other.strings[row]) } else { bits.append(other.bits[row]) }
        nulls.append(other.nulls[row])
    }

    /// Sets row `index` to row `row` of another column (same type).
    mutating func set(_ index: Int, to row: Int, of other: StoredFeatureColumn) {
        if isText { strings[index] = other.strings[row] } else { bits[index] = other.bits[row] }
        nulls[index] = other.nulls[row]
    }

    /// Appends, for each pick, a row of `part` (a pick `p >= 0`: its row `p`)
    /// or of `kept` (a pick `p < 0`: its row `-p - 1`); both of the same type.
    mutating func append(picks: [Int32], part: StoredFeatureColumn?, kept: StoredFeatureColumn) {
        let empty = StoredFeatureColumn(type: type)
        let part = part ?? empty
        for pick in picks {
            if pick >= 0 { append(row: Int(pick), of: part) } else { append(row: Int(-pick - 1), of: kept) }
        }
    }

    /// Sets each row `slots[i]` to row `rows[i]` of `other` (same type).
    mutating func set(_ slots: [Int32], to rows: [Int32], of other: StoredFeatureColumn) {
        for (slot, row) in zip(slots, rows) { set(Int(slot), to: Int(row), of: other) }
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
    func compare(_ a: Int, _ b: Int) -> Int { compare(a, with: b, of: self) }

    /// Orders row `a` against row `b` of `other` (same type), as `compare(_:_:)` does.
    func compare(_ a: Int, with b: Int, of other: StoredFeatureColumn) -> Int {
        if nulls[a] != other.nulls[b] { return nulls[a] ? -1 : 1 }
        if nulls[a] { return 0 }
        // Values that compare equal but differ in their bytes (canonically equivalent strings, -0.0 and 0.0)
        // are ordered by their bytes: the order is total, so the row chosen never depends on read order.
        if isText {
            let left = strings[a] ?? "", right = other.strings[b] ?? ""
            if left != right { return left < right ? -1 : 1 }
            return left.utf8.elementsEqual(right.utf8) ? 0 : (left.utf8.lexicographicallyPrecedes(right.utf8) ? -1 : 1)
        }
        if type == .float64 || type == .float32 {
            let left = Double(bitPattern: UInt64(bitPattern: bits[a])), right = Double(bitPattern: UInt64(bitPattern: other.bits[b]))
            if left != right, !left.isNaN || !right.isNaN { return left < right || right.isNaN ? -1 : 1 }
        }
        return bits[a] == other.bits[b] ? 0 : (bits[a] < other.bits[b] ? -1 : 1)
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
    func newer(_ a: Int, than b: Int) -> Bool { newer(a, than: b, of: self) }

    /// Whether row `a` is newer than row `b` of `other` (rows of the same view).
    func newer(_ a: Int, than b: Int, of other: CandidateRows) -> Bool {
        if times[a] != other.times[b] { return times[a] > other.times[b] }
        if created[a] != other.created[b] { return created[a] > other.created[b] }
        for (column, otherColumn) in zip(columns, other.columns) {
            let order = column.compare(a, with: b, of: otherColumn)
            if order != 0 { return order > 0 }
        }
        return false
    }


    /// Appends, for each pick, a row of `part` (a pick `p >= 0`) or of `kept`
    /// (a pick `p < 0`: its row `-p - 1`), column by column.
    mutating func append(picks: [Int32], part: CandidateRows?, kept: CandidateRows) {
        let partEntity = part?.entity ?? [], partTimes = part?.times ?? [], partCreated = part?.created ?? []
        for pick in picks {
            if pick >= 0 {
                entity.append(partEntity[Int(pick)])
                times.append(partTimes[Int(pick)])
                created.append(partCreated[Int(pick)])
            } else {
                let row = Int(-pick - 1)
                entity.append(kept.entity[row])
                times.append(kept.times[row])
                created.append(kept.created[row])
            }
        }
        for index in columns.indices { columns[index].append(picks: picks, part: part?.columns[index], kept: kept.columns[index]) }
    }

    /// Sets each row `slots[i]` to row `rows[i]` of `other`, column by column.
    mutating func set(_ slots: [Int32], to rows: [Int32], of other: CandidateRows) {
        for (slot, row) in zip(slots, rows) {
            entity[Int(slot)] = other.entity[Int(row)]
            times[Int(slot)] = other.times[Int(row)]
            created[Int(slot)] = other.created[Int(row)]
        }
        for index in columns.indices { columns[index].set(slots, to: rows, of: other.columns[index]) }
    }
}

/// Point-in-time matching of a chunk's entity rows as the candidate rows
/// stream in, in event-time order: a merge of the entity rows, taken in time
/// order, with the candidates, keeping only the newest row of each entity
/// seen so far. Candidate rows are not kept: memory holds one row per
/// entity, the part being fed, and the rows matched.
///
/// It gives exactly what `PointInTimeJoin.match` gives when every candidate
/// is fed in nondecreasing time order; a part that starts before the last
/// time fed is refused (`OutOfOrder`), and the caller matches the whole
/// table as `PointInTimeJoin` does instead.
struct StreamingPointInTimeJoin {
    /// A part of candidates earlier than the candidates already fed.
    struct OutOfOrder: Error {}

    /// Each entity row's entity index (-1: none), and its time.
    let entities: [Int32]
    let times: [Int64]
    /// The entity rows in time order.
    let order: [Int32]
    /// The next position in `order` to match.
    private var next = 0
    /// Where each entity's newest candidate so far is: `none`, `kept` (its row
    /// of `kept`), or a row of the part being fed (`where[e] >= 0`).
    private var whereNewest: [Int32]
    private static let none: Int32 = -2, kept: Int32 = -1
    /// One row per entity: its newest candidate, copied there when the part holding it is done.
    private var kept: CandidateRows
    /// Entities whose newest candidate is in the part being fed.
    private var inPart: [Int32] = []
    /// The row of `matched` holding each entity's newest candidate (-1: not copied since it changed).
    private var copied: [Int32]
    /// The time of the last candidate fed.
    private var last = Int64.min
    /// Rows to append to `matched` before the part goes (a pick of `CandidateRows.append(picks:part:kept:)`).
    private var picks: [Int32] = []
    /// The rows matched, one per distinct (entity, newest candidate) that some entity row matched.
    private(set) var matched: CandidateRows
    /// Each entity row's row in `matched` (-1: none at or before its time).
    private(set) var matches: [Int32]

    /// The entity rows' order by time (equal times in row order), for `init`.
    static func timeOrder(_ times: [Int64]) -> [Int32] {
        var order = Array(0..<Int32(times.count))
        if zip(times, times.dropFirst()).contains(where: { $0 > $1 }) {
            order.sort { times[Int($0)] != times[Int($1)] ? times[Int($0)] < times[Int($1)] : $0 < $1 }
        }
        return order
    }

    init(entities: [Int32], times: [Int64], order: [Int32], distinctEntities: Int, types: [ValueType]) {
        self.entities = entities
        self.times = times
        self.order = order
        kept = CandidateRows(types: types)
        kept.reserve(distinctEntities)
        for _ in 0..<distinctEntities {
            kept.entity.append(-1)
            kept.times.append(Int64.min)
            kept.created.append(CandidateRows.noCreated)
            for index in kept.columns.indices { kept.columns[index].append(.null) }
        }
        whereNewest = Array(repeating: Self.none, count: distinctEntities)
        copied = Array(repeating: -1, count: distinctEntities)
        matched = CandidateRows(types: types)
        matches = Array(repeating: -1, count: entities.count)
    }

    /// Feeds a part of the candidates; its rows may come in any order among
    /// themselves, but none before the last candidate already fed.
    mutating func feed(_ part: CandidateRows) throws(OutOfOrder) {
        guard part.count > 0 else { return }
        var sorted = true
        for row in 1..<part.count where part.times[row] < part.times[row - 1] {
            sorted = false
            break
        }
        if sorted {
            guard part.times[0] >= last else { throw OutOfOrder() }
            for row in 0..<part.count { take(row, of: part) }
        } else {
            let order = (0..<part.count).sorted { part.times[$0] != part.times[$1] ? part.times[$0] < part.times[$1] : $0 < $1 }
            guard part.times[order[0]] >= last else { throw OutOfOrder() }
            for row in order { take(row, of: part) }
        }
        // The part goes: the rows matched from it are copied, and the newest rows it holds are kept.
        matched.append(picks: picks, part: part, kept: kept)
        picks.removeAll(keepingCapacity: true)
        kept.set(inPart, to: inPart.map { whereNewest[Int($0)] }, of: part)
        for entity in inPart { whereNewest[Int(entity)] = Self.kept }
        inPart.removeAll(keepingCapacity: true)
    }

    /// Matches the entity rows before `row`'s time, then takes the row as its entity's newest if it is.
    @inline(__always)
    private mutating func take(_ row: Int, of part: CandidateRows) {
        let time = part.times[row]
        if time > last {
            match(before: time)
            last = time
        }
        let entity = Int(part.entity[row])
        let current = whereNewest[entity]
        let newer: Bool
        switch current {
        case Self.none: newer = true
        case Self.kept: newer = part.newer(row, than: entity, of: kept)
        default: newer = part.newer(row, than: Int(current))
        }
        guard newer else { return }
        if current < 0 { inPart.append(Int32(entity)) }
        whereNewest[entity] = Int32(row)
        copied[entity] = -1
    }

    /// Matches every entity row whose time is before `time` (or at it, when
    /// `inclusive`): all candidates at or before it have been fed.
    private mutating func match(before time: Int64, inclusive: Bool = false) {
        while next < order.count {
            let row = Int(order[next])
            guard times[row] < time || (inclusive && times[row] == time) else { return }
            next += 1
            let entity = Int(entities[row])
            guard entity >= 0 else { continue }
            let current = whereNewest[entity]
            if current == Self.none { continue }
            if copied[entity] < 0 {
                copied[entity] = Int32(matched.count + picks.count)
                picks.append(current == Self.kept ? Int32(-entity - 1) : current)
            }
            matches[row] = copied[entity]
        }
    }

    /// Matches the remaining entity rows, once every candidate is fed.
    mutating func finish() {
        match(before: Int64.max, inclusive: true)
        matched.append(picks: picks, part: nil, kept: kept)
        picks.removeAll()
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

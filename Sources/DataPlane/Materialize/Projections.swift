import Shared

/// Turns source batches of a plain view into output rows: the entity from
/// the join key columns, the event and created times, and each feature's column.
struct PlainProjection {
    let keyColumns: Int
    let createdColumn: Int?
    /// For each output feature, the source column it reads and its type.
    let features: [(column: Int, type: ValueType)]

    init(plan: MaterializationPlan, columns: [(name: String, type: ValueType)]) throws {
        keyColumns = plan.keys.count
        createdColumn = plan.source.createdTimestampField.flatMap { name in columns.firstIndex { $0.name == name } }
        features = try plan.features.map { feature in
            guard let index = columns.firstIndex(where: { $0.name == feature.sourceColumn }) else {
                throw JobExecutionError("feature \(feature.name) reads column \(feature.sourceColumn), which the source does not have", retryable: false)
            }
            return (index, feature.type)
        }
    }

    func output(of batch: ColumnBatch) throws -> OutputBatch {
        let count = batch.count
        guard case .timestamp(let times) = batch.columns[keyColumns] else { throw JobExecutionError("the event time is not a timestamp", retryable: false) }
        let (keys, valid) = try entityKeys(of: batch, keyColumns: keyColumns, times: times)
        let whole = valid.count == count
        func pick(_ column: ColumnValues) -> ColumnValues { whole ? column : column.gathering(valid) }
        let eventTimes = valid.map { times[$0]! }
        var createdTimes: [Int64?] = Array(repeating: nil, count: valid.count)
        if let createdColumn, case .timestamp(let created) = batch.columns[createdColumn] { createdTimes = valid.map { created[$0] } }
        let values = try features.map { feature -> ColumnValues in
            let column = pick(batch.columns[feature.column])
            switch (column, feature.type) {
            case (.int64(let values), .float64), (.int64(let values), .float32): return .float64(values.map { $0.map(Double.init) })
            case (.int64, .int64), (.int64, .int32), (.float64, .float64), (.float64, .float32), (.bool, .bool), (.string, .string),
                (.string, .bytes), (.timestamp, .timestamp):
                return column
            default:
                throw JobExecutionError("a feature of type \(feature.type.rawValue) cannot read a column of another type", retryable: false)
            }
        }
        return OutputBatch(keys: keys, eventTimes: eventTimes, createdTimes: createdTimes, features: values)
    }
}

/// Folds source batches of an aggregation view into per-entity tiles, then
/// emits each entity's window values at the boundaries of the interval.
///
/// Memory is bounded by entities × tiles in the read range, not by events
/// (the executor cuts a long interval into passes to bound the read range).
struct WindowedProjection {
    let plan: MaterializationPlan
    let aggregator: WindowAggregator
    let keyColumns: Int
    let createdColumn: Int?
    /// The source column of each distinct aggregated input.
    let inputColumns: [Int]
    let first: Int64
    let last: Int64
    /// The inputs, windowed features and output columns.
    let layout: AggregationLayout
    private var tiles: TileStore
    /// The next entity whose rows `nextOutput` emits.
    private var nextEntity = 0
    /// Each entity's values at the last boundary before this projection's
    /// (from the previous pass of the job): a first row repeating them is left out.
    var carried: [EntityKey: [Double?]] = [:]
    /// Each entity's values at its last row emitted, for the next pass.
    private(set) var lastValues: [EntityKey: [Double?]] = [:]

    /// The first and last boundaries (seconds) the interval owns, `(start, end]`,
    /// and the longest window; nil for plain views.
    static func boundaries(_ plan: MaterializationPlan) -> (first: Int64, last: Int64, longest: Int64)? {
        guard let tile = plan.slide, tile > 0, !plan.aggregations.isEmpty else { return nil }
        let start = plan.start.dividedRoundingDown(by: 1_000_000), end = plan.end.dividedRoundingDown(by: 1_000_000)
        let first = (start.dividedRoundingDown(by: tile) + 1) * tile
        let last = end.dividedRoundingDown(by: tile) * tile
        let longest = plan.aggregations.flatMap(\.windows).map(\.seconds).max() ?? tile
        return (first, last, longest)
    }

    init(plan: MaterializationPlan, columns: [(name: String, type: ValueType)], reservingTiles: Int = 0) throws {
        guard let bounds = Self.boundaries(plan), let tile = plan.slide else {
            throw JobExecutionError("aggregations need a slide", retryable: false)
        }
        self.plan = plan
        keyColumns = plan.keys.count
        createdColumn = plan.source.createdTimestampField.flatMap { name in columns.firstIndex { $0.name == name } }
        let schema = plan.source.schema
        for aggregation in plan.aggregations {
            let type = schema[aggregation.column] ?? .float64
            if !(type.isNumeric || type == .timestamp), aggregation.function != .count {
                throw JobExecutionError("\(aggregation.function.rawValue) over \(aggregation.column) (\(type.rawValue)) is not supported", retryable: false)
            }
        }
        layout = AggregationLayout(plan.aggregations, sourceTypes: schema)
        let inputs = layout.inputs, features = layout.features
        inputColumns = try inputs.map { name in
            guard let index = columns.firstIndex(where: { $0.name == name }) else {
                throw JobExecutionError("the source has no column \(name)", retryable: false)
            }
            return index
        }
        do { aggregator = try WindowAggregator(tile: tile, features: features) } catch {
            throw JobExecutionError(error.description, retryable: false)
        }
        tiles = TileStore(
            layouts: inputs.indices.map { input in TileStore.Layout(functions: features.filter { $0.input == input }.map(\.function)) },
            reservingTiles: reservingTiles)
        first = bounds.first
        last = bounds.last
    }

    /// Adds the events of a batch to their entities' tiles.
    mutating func add(_ batch: ColumnBatch) throws {
        guard case .timestamp(let times) = batch.columns[keyColumns] else { throw JobExecutionError("the event time is not a timestamp", retryable: false) }
        var created: [Int64?]?
        if let createdColumn, case .timestamp(let values) = batch.columns[createdColumn] { created = values }
        // Each input as numbers; a non-numeric column counts as 1 where it has a value.
        let inputs: [[Double?]] = inputColumns.map { column in
            switch batch.columns[column] {
            case .int64(let values), .timestamp(let values): return values.map { $0.map(Double.init) }
            case .float64(let values): return values
            case .bool(let values): return values.map { $0.map { $0 ? 1 : 0 } }
            case .string(let values): return values.map { $0 == nil ? nil : 1 }
            }
        }
        let (keys, rows) = try entityKeys(of: batch, keyColumns: keyColumns, times: times)
        var values: [Double?] = Array(repeating: nil, count: inputColumns.count)
        for (key, row) in zip(keys, rows) {
            let seconds = times[row]!.dividedRoundingDown(by: 1_000_000)
            let createdSeconds = created?[row].map { $0.dividedRoundingDown(by: 1_000_000) } ?? 0
            for position in values.indices { values[position] = inputs[position][row] }
            tiles.add(key: key, tile: aggregator.tileIndex(of: seconds), inputs: values, time: seconds, created: createdSeconds)
        }
    }

    /// How many tiles the projection holds.
    var tileCount: Int { tiles.tileCount }

    /// The next batch of window values — each entity's at every boundary of
    /// the interval where a value changes, entity after entity — or nil when
    /// every entity is done. Batches are made one at a time, so the rows of
    /// the whole interval are never in memory together.
    mutating func nextOutput(batchSize: Int) -> OutputBatch? {
        guard first <= last else { return nil }
        var keys: [EntityKey] = [], times: [Int64] = [], rows: [[Double?]] = []
        while keys.count < batchSize, nextEntity < tiles.keys.count {
            let key = tiles.keys[nextEntity]
            var entityRows = aggregator.rows(tiles: tiles.tiles(ofEntity: nextEntity), from: first, to: last)
            if let previous = carried[key], entityRows.first?.values == previous { entityRows.removeFirst() }
            for row in entityRows {
                keys.append(key)
                times.append(row.boundary * 1_000_000)
                rows.append(row.values)
            }
            if let final = entityRows.last { lastValues[key] = final.values }
            nextEntity += 1
        }
        guard !keys.isEmpty else { return nil }
        let columns = layout.columns(rows)
        return OutputBatch(keys: keys, eventTimes: times, createdTimes: Array(repeating: nil, count: keys.count), features: columns)
    }
}

/// The entity of each row that has one and an event time, and those rows:
/// rows without either cannot be stored and are skipped.
func entityKeys(of batch: ColumnBatch, keyColumns: Int, times: [Int64?]) throws -> (keys: [EntityKey], rows: [Int]) {
    let count = batch.count
    var keys: [EntityKey] = [], rows: [Int] = []
    keys.reserveCapacity(count)
    rows.reserveCapacity(count)
    if keyColumns == 1 {
        switch batch.columns[0] {
        case .int64(let values):
            for row in 0..<count { if let value = values[row], times[row] != nil { keys.append(.int(value)); rows.append(row) } }
        case .string(let values):
            for row in 0..<count { if let value = values[row], times[row] != nil { keys.append(.string(value)); rows.append(row) } }
        default: throw JobExecutionError("join keys must be integers or strings", retryable: false)
        }
        return (keys, rows)
    }
    rows: for row in 0..<count where times[row] != nil {
        var parts: [EntityKey.Part] = []
        for column in 0..<keyColumns {
            switch batch.columns[column] {
            case .int64(let values): guard let value = values[row] else { continue rows }; parts.append(.int(value))
            case .string(let values): guard let value = values[row] else { continue rows }; parts.append(.string(value))
            default: throw JobExecutionError("join keys must be integers or strings", retryable: false)
            }
        }
        keys.append(EntityKey(parts))
        rows.append(row)
    }
    return (keys, rows)
}

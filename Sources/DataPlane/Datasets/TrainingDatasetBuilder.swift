import Crypto
import Foundation
import Logging
import PostgresNIO
import Shared

/// What a training dataset is built from.
public struct DatasetRequest: Sendable {
    /// A feature service's name, or
    public var featureService: String?
    /// feature references (`view:feature`, `view`).
    public var features: [String]?
    /// The entity table: a CSV file with a header row.
    public var entities: URL
    /// The entity table's timestamp column.
    public var timestampColumn: String
    /// Whether timestamps without a UTC offset are taken as UTC (otherwise refused).
    public var assumeUTC: Bool

    /// Creates a request.
    public init(featureService: String? = nil, features: [String]? = nil, entities: URL, timestampColumn: String = "event_timestamp", assumeUTC: Bool = false) {
        self.featureService = featureService
        self.features = features
        self.entities = entities
        self.timestampColumn = timestampColumn
        self.assumeUTC = assumeUTC
    }
}

/// Builds point-in-time correct training datasets on the agent, from the
/// customer's offline store (`docs/point-in-time.md`).
///
/// The entity table is read in chunks of `chunkRows` rows, in input order.
/// For each chunk and each feature view version, the offline table's rows of
/// the chunk's entities within its time range (less the view's TTL) are
/// streamed from PostgreSQL and matched in memory (`PointInTimeJoin`); the
/// on-demand features are then computed with the evaluator the feature
/// server uses; the chunk's rows are written, input columns first. Memory
/// holds one chunk and its candidate rows for one view at a time.
public struct TrainingDatasetBuilder: Sendable {
    /// The registry the features are resolved with.
    let catalog: @Sendable () throws -> ServingCatalog
    let offlineStore: (schema: String, url: PostgresURL)?
    let chunkRows: Int
    /// How offline tables are read (`OfflineCandidates.pagesPerRange`).
    let pagesPerRange: Int?
    let logger: Logger
    /// Whether a view's candidates are matched as they stream in, when its
    /// table reads in event-time order (the default); otherwise every
    /// candidate is read, then matched.
    public var matchWhileReading = true
    /// Whether a table's segments, when it has them, are read instead of its
    /// rows (off: the rows are read as for a table without segments).
    public var readsSegments = true
    /// How each view's rows are read for a chunk: scanned, looked up by (join keys, time), or — the
    /// default — whichever the chunk's selectivity says costs less.
    public var readPlan = DatasetReadPlan.automatic
    /// What one (entity, time) lookup costs, counted in rows scanned: a chunk is looked up when its
    /// entity rows times this are fewer than the rows a scan reads (`larder-bench datasets` measures both).
    public var lookupCost = 80
    /// Whether a table that a chunk would rather look up, but that has no lookup index yet, gets one
    /// made in the background (`LookupIndexBuilds`) for the datasets that follow; meanwhile it is scanned.
    public var createsLookupIndexes = true
    /// Told, for each chunk and view, whether its candidates were matched as they streamed in (for tests).
    var matchObserver: (@Sendable (_ view: String, _ streamed: Bool) -> Void)?
    /// Told, for each chunk and view, whether it was scanned or looked up (for tests).
    var planObserver: (@Sendable (_ view: String, _ plan: DatasetReadPlan) -> Void)?

    /// A builder resolving names with `reader`'s registry snapshot and reading `offlineStore`.
    public init(
        reader: OnlineFeatureReader, offlineStore: (schema: String, url: PostgresURL)?, chunkRows: Int = 1_000_000, pagesPerRange: Int? = 1_000,
        logger: Logger
    ) {
        self.init(catalog: { try reader.catalog() }, offlineStore: offlineStore, chunkRows: chunkRows, pagesPerRange: pagesPerRange, logger: logger)
    }

    /// A builder resolving names with `catalog` (a dataset job's own definitions).
    init(
        catalog: @escaping @Sendable () throws -> ServingCatalog, offlineStore: (schema: String, url: PostgresURL)?, chunkRows: Int = 1_000_000,
        pagesPerRange: Int? = 1_000, logger: Logger
    ) {
        self.catalog = catalog
        self.offlineStore = offlineStore
        self.chunkRows = chunkRows
        self.pagesPerRange = pagesPerRange
        self.logger = logger
    }

    /// A dataset ready to write: checked against the registry and the offline store.
    public struct Prepared: Sendable {
        let request: DatasetRequest
        let resolved: ResolvedRequest
        let revision: Int64
        let ttls: [String: Int64]
        /// Views whose rows may hold a created time (their source declares one, and they do not aggregate).
        let created: Set<String>
        let tables: [OfflineTable]
        let header: [String]
        /// The entity table, when it is one chunk (read while checking it).
        let onlyChunk: EntityChunk?
    }

    /// Resolves `request` and checks the entity table's header and the
    /// offline tables, so a bad request fails before any output is written.
    public func prepare(_ request: DatasetRequest) async throws -> Prepared {
        guard let offlineStore else {
            throw DatasetError(kind: .noOfflineStore, field: "offline_store", detail: "this agent's configuration has no offline_store to read features from")
        }
        let catalog = try catalog()
        let resolved: ResolvedRequest
        if let service = request.featureService {
            resolved = try catalog.resolve(service: service)
        } else if let features = request.features, !features.isEmpty {
            resolved = try catalog.resolve(references: features)
        } else {
            throw DatasetError(kind: .invalidInput, field: "feature_service", detail: "name a feature service or give features", reportedDetail: "name a feature service or give features")
        }
        // Check every entity row now (join keys, timestamps, request fields): a bad row is
        // refused before any output, not half-way through a streamed answer.
        let started = ContinuousClock.now
        defer { logger.debug("dataset request checked", metadata: ["larder.took": "\(ContinuousClock.now - started)"]) }
        var check = try entityReader(request, resolved: resolved)
        // A table of one chunk is kept as read, not parsed a second time.
        var chunks = 0
        var only: EntityChunk?
        while let chunk = try check.next() {
            chunks += 1
            only = chunks == 1 ? chunk : nil
        }
        var ttls: [String: Int64] = [:]
        var created: Set<String> = []
        var tables: [OfflineTable] = []
        for view in resolved.views {
            let definition = catalog.repository.featureViews.first { $0.name == view.view }
            if let seconds = definition?.ttl?.seconds, seconds > 0 { ttls[view.view] = seconds * 1_000_000 }
            let source = catalog.repository.sources.first { $0.name == definition?.source }
            // Pushed rows always carry one (the arrival time when the source declares none).
            var pushed = false
            if case .push? = source?.connector { pushed = true }
            if definition?.aggregations.isEmpty ?? false, source?.createdTimestampField != nil || source == nil || pushed { created.insert(view.view) }
            tables.append(OfflineTable(
                schema: offlineStore.schema, workspace: catalog.workspace, view: view.view, version: view.version, keys: view.keys,
                outputs: view.reads.map { Column(name: $0.feature, type: $0.type) }, windowed: !(definition?.aggregations.isEmpty ?? true)))
        }
        let header = try CSVReader.columnNames(path: request.entities.path)
        let connection = try await offlineStore.url.connect(logger: logger)
        do {
            for (index, view) in resolved.views.enumerated() {
                // A table from before workspaces were in names is read under its old name until adopted.
                let table = try await tables[index].resolvedForReading(on: connection, logger: logger)
                tables[index] = table
                guard try await table.exists(on: connection, logger: logger) else {
                    throw DatasetError(
                        kind: .notMaterialized, field: "\(view.view)",
                        detail: "feature view \(view.view) version \(view.version) has no offline table (\(table.schema).\(table.name)); materialize it first",
                        reportedDetail: "feature view \(view.view) version \(view.version) has no offline table; materialize it first")
                }
            }
            try await connection.close()
        } catch {
            try? await connection.close()
            throw error
        }
        let output = header + resolved.outputs.map { Self.columnName($0.name) }
        if let clash = Set(header).intersection(output.dropFirst(header.count)).first {
            throw DatasetError(
                kind: .invalidInput, field: "entities", detail: "the entity table has a column '\(clash)', the name of a feature column; rename it",
                reportedDetail: "the entity table has a column named like a feature column; rename it")
        }
        return Prepared(request: request, resolved: resolved, revision: catalog.revision, ttls: ttls, created: created, tables: tables, header: output,
            onlyChunk: only)
    }

    /// The reader of `request`'s entity table.
    func entityReader(_ request: DatasetRequest, resolved: ResolvedRequest) throws(DatasetError) -> EntityTableReader {
        try EntityTableReader(
            path: request.entities.path, timestampColumn: request.timestampColumn, assumeUTC: request.assumeUTC, resolved: resolved,
            chunkRows: chunkRows)
    }

    /// A feature's column name in a dataset: `view__feature`.
    static func columnName(_ output: String) -> String { output.replacingOccurrences(of: ":", with: "__") }

    /// The dataset's columns with their PostgreSQL types (entity-table columns as text).
    func tableColumns(_ prepared: Prepared) -> [(name: String, sqlType: String)] {
        let inputs = prepared.header.count - prepared.resolved.outputs.count
        return prepared.header.prefix(inputs).map { ($0, "text") }
            + prepared.resolved.outputs.map { (Self.columnName($0.name), OfflineTable.sqlType($0.type)) }
    }

    /// Writes the dataset as CSV through `write`, chunk by chunk; returns its summary.
    public func writeCSV(_ prepared: Prepared, to write: (ByteBuffer) async throws -> Void) async throws -> DatasetMetadata {
        var encoder = DatasetCSVWriter()
        encoder.header(prepared.header)
        return try await self.write(prepared, encoder: encoder, to: write)
    }

    /// Writes the dataset's rows in PostgreSQL's COPY text format (no header), for a table.
    func writeCopyRows(_ prepared: Prepared, to write: (ByteBuffer) async throws -> Void) async throws -> DatasetMetadata {
        try await self.write(prepared, encoder: DatasetCopyWriter(), to: write)
    }

    /// Writes the rows with `encoder` through `write`, chunk by chunk; returns the summary.
    func write<Encoder: DatasetRowEncoder>(_ prepared: Prepared, encoder: Encoder, to write: (ByteBuffer) async throws -> Void) async throws
        -> DatasetMetadata
    {
        guard let offlineStore else { throw DatasetError(kind: .noOfflineStore, field: "offline_store", detail: "no offline_store") }
        let resolved = prepared.resolved
        var entities = try entityReader(prepared.request, resolved: resolved)
        var hash = SHA256()
        var csv = encoder
        var rows = 0
        var earliest = Int64.max, latest = Int64.min
        // A connection per view: the views of a chunk are read side by side.
        var connections: [PostgresConnection] = []
        do {
            for _ in 0..<max(1, resolved.views.count) { connections.append(try await offlineStore.url.connect(logger: logger)) }
            var kept = prepared.onlyChunk
            func next() throws -> EntityChunk? {
                if let chunk = kept {
                    kept = nil
                    return chunk
                }
                return prepared.onlyChunk == nil ? try entities.next() : nil
            }
            // The header, if any; then each chunk's rows.
            if !csv.bytes.isEmpty {
                hash.update(data: csv.bytes)
                try await write(ByteBuffer(bytes: csv.bytes))
                csv.clear()
            }
            var unordered: Set<String> = []
            while let chunk = try next() {
                let started = ContinuousClock.now
                let grid = try await features(of: chunk, prepared: prepared, on: connections, unordered: &unordered)
                let matched = ContinuousClock.now
                defer {
                    logger.debug("dataset chunk written", metadata: [
                        "larder.entity_rows": "\(chunk.count)", "larder.features": "\(matched - started)", "larder.encode": "\(ContinuousClock.now - matched)",
                    ])
                }
                // The rows encoded in blocks, two blocks at a time on two tasks (two cores), written in order.
                let block = 32_768, outputs = resolved.outputs.count
                var start = 0
                while start < chunk.count {
                    let ranges = [start..<min(start + block, chunk.count), min(start + block, chunk.count)..<min(start + 2 * block, chunk.count)]
                    let encoded = try await withThrowingTaskGroup(of: (Int, [UInt8]).self) { group in
                        for (position, range) in ranges.enumerated() where !range.isEmpty {
                            group.addTask { [csv] in
                                var encoder = csv
                                for row in range {
                                    for column in chunk.text { encoder.text(column[row]) }
                                    for output in 0..<outputs { encoder.value(grid.values[row * grid.width + output]) }
                                    encoder.endRow()
                                }
                                return (position, encoder.bytes)
                            }
                        }
                        var parts: [[UInt8]] = [[], []]
                        for try await (position, bytes) in group { parts[position] = bytes }
                        return parts
                    }
                    for bytes in encoded where !bytes.isEmpty {
                        hash.update(data: bytes)
                        try await write(ByteBuffer(bytes: bytes))
                    }
                    start = ranges[1].upperBound
                }
                rows += chunk.count
                earliest = min(earliest, chunk.times.min() ?? .max)
                latest = max(latest, chunk.times.max() ?? .min)
            }
            for connection in connections { try await connection.close() }
        } catch {
            for connection in connections { try? await connection.close() }
            throw error
        }
        func date(_ micros: Int64) -> Date { Date(timeIntervalSince1970: Double(micros) / 1_000_000) }
        return DatasetMetadata(
            rows: Int64(rows),
            columns: entities.columns.map { .init(name: $0, type: "input") }
                + resolved.outputs.map { .init(name: Self.columnName($0.name), type: $0.type.rawValue) },
            views: resolved.views.map { .init(view: $0.view, version: $0.version) },
            earliest: rows > 0 ? date(earliest) : nil, latest: rows > 0 ? date(latest) : nil,
            registryRevision: prepared.revision, sha256: hash.finalize().map { String(format: "%02x", $0) }.joined())
    }

    /// The feature cells of a chunk's rows: each view matched point in time, then the on-demand outputs.
    ///
    /// A view's candidates are matched as they stream in when the table reads
    /// in event-time order (as materialization writes it); a table that does
    /// not (rows written out of order, by a backfill say) is read again and
    /// matched whole, and is listed in `unordered` so later chunks read it so at once.
    func features(
        of chunk: EntityChunk, prepared: Prepared, on connections: [PostgresConnection], unordered: inout Set<String>
    ) async throws -> FeatureGrid {
        let resolved = prepared.resolved
        var grid = FeatureGrid(entities: chunk.count, width: resolved.width)
        // Each view's distinct entities in the chunk (and each row's), and the rows' time order, computed side by side.
        let indexing = ContinuousClock.now
        let keys = resolved.views.map(\.keys)
        let (indexes, timeOrder) = await withTaskGroup(of: (Int, [EntityKey: Int32], [Int32]).self) { group in
            for (position, columns) in keys.enumerated() {
                group.addTask {
                    let (index, rows) = Self.entities(of: chunk, keys: columns)
                    return (position, index, rows)
                }
            }
            if matchWhileReading { group.addTask { (-1, [:], StreamingPointInTimeJoin.timeOrder(chunk.times)) } }
            var indexes = [([EntityKey: Int32], [Int32])](repeating: ([:], []), count: keys.count), order: [Int32] = []
            for await (position, index, rows) in group {
                if position < 0 { order = rows } else { indexes[position] = (index, rows) }
            }
            return (indexes, order)
        }
        let indexed = ContinuousClock.now - indexing
        // The views read and matched side by side, each on its own connection (the server only copies
        // segments out, so the agent's matching is the work, and there are two cores), filled in order.
        let previouslyUnordered = unordered
        let results = try await withThrowingTaskGroup(of: (Int, ViewMatch).self) { group in
            for (position, ((view, table), (index, entityOfRow))) in zip(zip(resolved.views, prepared.tables), indexes).enumerated() {
                group.addTask {
                    let match = try await self.match(
                        view: view, table: table, index: index, entityOfRow: entityOfRow, chunk: chunk, timeOrder: timeOrder, prepared: prepared,
                        readWhole: previouslyUnordered.contains(view.view), on: connections[position])
                    self.logger.debug("dataset chunk matched", metadata: [
                        "larder.view": .string(view.view), "larder.entity_rows": "\(chunk.count)", "larder.streamed": "\(match.streamed)",
                        "larder.plan": .string(match.lookedUp ? "lookup" : "scan"),
                        "larder.rows_matched": "\(match.rows.count)", "larder.read_and_match": "\(match.took)", "larder.indexing": "\(indexed)",
                    ])
                    return (position, match)
                }
            }
            var results: [Int: ViewMatch] = [:]
            for try await (position, match) in group { results[position] = match }
            return results
        }
        for (position, view) in resolved.views.enumerated() {
            guard let match = results[position] else { continue }
            PointInTimeJoin.fill(&grid, view: view, rows: match.rows, matches: match.matches, times: chunk.times, ttl: prepared.ttls[view.view])
            if match.foundUnordered { unordered.insert(view.view) }
            matchObserver?(view.view, match.streamed)
            planObserver?(view.view, match.lookedUp ? .lookup : .scan)
        }
        if !resolved.derivations.isEmpty { OnlineFeatureReader.derive(resolved, batch: chunk.batch, into: &grid) }
        return grid
    }
}

/// One view's candidates for a chunk, and each entity row's match among them.
struct ViewMatch: Sendable {
    var rows: CandidateRows
    var matches: [Int32]
    /// Whether they were matched as they streamed in.
    var streamed: Bool
    /// Whether the table was found out of event-time order (and then read whole).
    var foundUnordered: Bool
    /// Whether the rows were looked up by (join keys, time) rather than scanned.
    var lookedUp = false
    var took: Duration
}

extension TrainingDatasetBuilder {
    /// Reads `view`'s candidates for `chunk` and matches them: as they stream in when the table reads in
    /// event-time order (and `readWhole` is false), else read whole, then matched.
    func match(
        view: ResolvedRequest.ViewRead, table: OfflineTable, index: [EntityKey: Int32], entityOfRow: [Int32], chunk: EntityChunk, timeOrder: [Int32],
        prepared: Prepared, readWhole: Bool, on connection: PostgresConnection
    ) async throws -> ViewMatch {
        let started = ContinuousClock.now
        let ttl = prepared.ttls[view.view]
        let earliest = chunk.times.min() ?? 0, latest = chunk.times.max() ?? 0
        var candidates = OfflineCandidates(
            table: table, view: view, pagesPerRange: pagesPerRange, hasCreated: prepared.created.contains(view.view), parallel: offlineStore?.url,
            logger: logger)
        candidates.useSegments = readsSegments
        let from = ttl.map { earliest - $0 }
        var foundUnordered = false
        let segments = try await candidates.readsSegments(on: connection)
        let lookup = OfflineLookup(table: table, view: view, hasCreated: prepared.created.contains(view.view), logger: logger)
        if try await looksUp(lookup, entityRows: chunk.count, candidates: candidates, segments: segments, from: from, to: latest, on: connection) {
            let rows = try await lookup.read(entities: index, entityOfRow: entityOfRow, times: chunk.times, from: from, on: connection)
            let matches = PointInTimeJoin.match(entities: entityOfRow, times: chunk.times, distinctEntities: index.count, rows: rows)
            return ViewMatch(rows: rows, matches: matches, streamed: false, foundUnordered: false, lookedUp: true, took: ContinuousClock.now - started)
        }
        if matchWhileReading, !readWhole, try await candidates.readsInOrder(segments: segments, on: connection) {
            var join = StreamingPointInTimeJoin(
                entities: entityOfRow, times: chunk.times, order: timeOrder, distinctEntities: index.count, types: view.reads.map(\.type))
            do {
                try await candidates.readInOrder(entities: index, from: from, to: latest, segments: segments, on: connection) { part, _ in
                    try join.feed(part)
                }
                join.finish()
                return ViewMatch(rows: join.matched, matches: join.matches, streamed: true, foundUnordered: false, took: ContinuousClock.now - started)
            } catch is StreamingPointInTimeJoin.OutOfOrder {
                foundUnordered = true
                logger.debug("offline table not in event-time order: reading it again to match it whole", metadata: ["larder.view": .string(view.view)])
            }
        }
        let rows = try await candidates.read(entities: index, from: from, to: latest, on: connection)
        let matches = PointInTimeJoin.match(entities: entityOfRow, times: chunk.times, distinctEntities: index.count, rows: rows)
        return ViewMatch(rows: rows, matches: matches, streamed: false, foundUnordered: foundUnordered, took: ContinuousClock.now - started)
    }

    /// Whether a chunk of `entityRows` reads its view by lookup (`readPlan`). `.automatic` looks up when
    /// `entityRows × lookupCost` is below the rows a scan would read and the table has its lookup index;
    /// when the index is missing, it is started in the background (`createsLookupIndexes`) and the chunk scans.
    /// `.lookup` makes a missing index at once.
    func looksUp(
        _ lookup: OfflineLookup, entityRows: Int, candidates: OfflineCandidates, segments: Bool, from: Int64?, to: Int64,
        on connection: PostgresConnection
    ) async throws -> Bool {
        switch readPlan {
        case .scan:
            return false
        case .lookup:
            if try await !lookup.hasIndex(on: connection) { try await lookup.createIndex(concurrently: false, on: connection) }
            return true
        case .automatic:
            let scanned = try await candidates.estimatedRows(from: from, to: to, segments: segments, on: connection)
            // An estimate past Int's range means "far too many to look up", never a wrapped small number.
            let (cost, overflowed) = entityRows.multipliedReportingOverflow(by: lookupCost)
            guard !overflowed, cost < scanned else { return false }
            if try await lookup.hasIndex(on: connection) { return true }
            if createsLookupIndexes, let url = offlineStore?.url { LookupIndexBuilds.shared.start(lookup, url: url, logger: logger) }
            return false
        }
    }

    /// The chunk's distinct entities for join keys `keys` (each an index in
    /// order of first appearance), and each row's.
    static func entities(of chunk: EntityChunk, keys: [Column]) -> ([EntityKey: Int32], [Int32]) {
        var index: [EntityKey: Int32] = [:]
        var entityOfRow: [Int32] = []
        entityOfRow.reserveCapacity(chunk.count)
        for row in 0..<chunk.count {
            let key = chunk.batch.key(row, columns: keys)
            if let known = index[key] {
                entityOfRow.append(known)
            } else {
                let next = Int32(index.count)
                index[key] = next
                entityOfRow.append(next)
            }
        }
        return (index, entityOfRow)
    }
}

/// Encodes dataset rows: each input column's text, then each feature value.
protocol DatasetRowEncoder: Sendable {
    /// The bytes encoded since the last `clear()`.
    var bytes: [UInt8] { get }
    mutating func clear()
    mutating func text(_ field: String?)
    mutating func value(_ value: FeatureValue)
    mutating func endRow()
}

/// Writes dataset rows as CSV (RFC 4180): a field is quoted when it holds a
/// comma, quote or line break; null is an empty field; numbers in their
/// shortest exact form; timestamps in RFC 3339, UTC. The same values give the same bytes.
struct DatasetCSVWriter: DatasetRowEncoder {
    private(set) var bytes: [UInt8] = []
    private var first = true

    mutating func clear() { bytes.removeAll(keepingCapacity: true) }

    mutating func header(_ names: [String]) {
        for name in names { text(name) }
        endRow()
    }

    private mutating func separate() {
        if first { first = false } else { bytes.append(UInt8(ascii: ",")) }
    }

    mutating func endRow() {
        bytes.append(UInt8(ascii: "\n"))
        first = true
    }

    mutating func text(_ field: String?) {
        separate()
        guard let field else { return }
        let utf8 = field.utf8
        if utf8.contains(where: { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") })
            || field.isEmpty
        {
            bytes.append(UInt8(ascii: "\""))
            for byte in utf8 {
                if byte == UInt8(ascii: "\"") { bytes.append(byte) }
                bytes.append(byte)
            }
            bytes.append(UInt8(ascii: "\""))
        } else {
            bytes.append(contentsOf: utf8)
        }
    }

    mutating func value(_ value: FeatureValue) {
        switch value {
        case .null: separate()
        case .int(let number):
            separate()
            bytes.append(contentsOf: String(number).utf8)
        case .double(let number):
            separate()
            bytes.append(contentsOf: number.description.utf8)
        case .bool(let flag):
            separate()
            bytes.append(contentsOf: (flag ? "true" : "false").utf8)
        case .timestamp(let micros):
            separate()
            TimestampText.append(micros, style: .rfc3339, to: &bytes)
        case .string(let string): text(string)
        }
    }
}

/// Writes dataset rows in PostgreSQL's COPY text format, for a table: input
/// columns as text, features typed.
struct DatasetCopyWriter: DatasetRowEncoder {
    private var encoder = CopyTextEncoder()
    private var first = true

    var bytes: [UInt8] { encoder.bytes }

    mutating func clear() { encoder.reset() }

    private mutating func separate() {
        if first { first = false } else { encoder.separator() }
    }

    mutating func text(_ field: String?) {
        separate()
        if let field { encoder.string(field) } else { encoder.null() }
    }

    mutating func value(_ value: FeatureValue) {
        separate()
        switch value {
        case .null: encoder.null()
        case .int(let number): encoder.int(number)
        case .double(let number): encoder.double(number)
        case .bool(let flag): encoder.bool(flag)
        case .timestamp(let micros): encoder.timestamp(micros)
        case .string(let text): encoder.string(text)
        }
    }

    mutating func endRow() {
        encoder.endRow()
        first = true
    }
}

import Foundation
import Logging
import PostgresNIO
import Shared

/// Runs `materialize` jobs: reads the view's source for the job's interval,
/// computes its features (plain columns, or time-window aggregations over
/// tiles), replaces the interval in the offline store and writes the newest
/// rows to the online store. Feature values stay in the customer's
/// environment; only the declared metrics are returned.
public struct MaterializeExecutor: JobExecutor {
    let configuration: AgentConfiguration
    let online: OnlineBackend
    let logger: Logger
    /// Rows per batch: the memory bound of a plain view, with one batch of the source.
    let batchSize: Int
    /// How many tiles an aggregation job aims to hold at once: a longer
    /// interval is computed in passes, each reading its own part of the source.
    let tileBudget: Int

    /// Creates an executor writing to the embedded `onlineStore` and the configured offline store.
    public init(configuration: AgentConfiguration, onlineStore: OnlineStore, logger: Logger, batchSize: Int = 16_384, tileBudget: Int = 1_000_000) {
        self.init(configuration: configuration, online: .embedded(onlineStore), logger: logger, batchSize: batchSize, tileBudget: tileBudget)
    }

    /// Creates an executor writing to `online` and the configured offline store.
    public init(configuration: AgentConfiguration, online: OnlineBackend, logger: Logger, batchSize: Int = 16_384, tileBudget: Int = 1_000_000) {
        self.configuration = configuration
        self.online = online
        self.logger = logger
        self.batchSize = batchSize
        self.tileBudget = tileBudget
    }

    public var kinds: Set<JobKind> { [.materialize] }

    public func execute(_ spec: JobSpec, context: JobContext) async throws -> JobMetrics {
        let plan: MaterializationPlan
        do { plan = try MaterializationPlan(spec) } catch { throw JobExecutionError(error.description, retryable: false) }
        var logger = logger
        logger[metadataKey: "job"] = "\(spec.jobId)"
        logger[metadataKey: "view"] = "\(plan.view)@v\(plan.version)"
        return try await Materialization(plan: plan, job: spec.jobId, executor: self, context: context, logger: logger).run()
    }

    func connection(named name: String) throws -> PostgresURL {
        guard case .postgres(let url)? = configuration.connections[name] else {
            throw JobExecutionError("this agent has no postgres connection named '\(name)' in its configuration", retryable: false)
        }
        return url
    }
}

/// One run of one materialization job.
struct Materialization {
    let plan: MaterializationPlan
    let job: Int64
    let executor: MaterializeExecutor
    let context: JobContext
    let logger: Logger

    func run() async throws -> JobMetrics {
        // Rows go straight to the online store, or (fail policy) to a staged table until the expectations pass.
        let writes = plan.targets.online
        let embeddedTable = writes ? try executor.online.embedded.map { _ in try onlineTable() } : nil
        let staged = plan.expectations?.policy == .fail && writes ? try stagingTable() : nil
        let schema = plan.onlineSchema
        let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
        // Rows for Redis pass through a buffer keeping the newest per entity: each is written once per flush, not once per row.
        let buffer: RedisWriteBuffer? = if writes, staged == nil, case .redis(let redis, let staging) = executor.online {
            try bufferFor(redis, staging: staging, now: now)
        } else { nil }
        func writeOnline(_ rows: OnlineRows) async throws {
            guard writes else { return }
            if let target = staged ?? embeddedTable {
                try target.upsert(rows)
            } else if let buffer {
                try await buffer.add(rows)
            }
        }
        var offline: (table: OfflineTable, url: PostgresURL)?
        if plan.targets.offline {
            guard let location = executor.configuration.offlineStore else {
                throw JobExecutionError("the view keeps an offline store, but this agent's configuration has no offline_store", retryable: false)
            }
            offline = (OfflineTable(schema: location.schema, plan: plan), try executor.connection(named: location.connection))
        }
        var state = Progress(features: plan.outputs.map(\.name), expectations: plan.expectations, reporting: executor.configuration.statistics)
        let columns = readColumns
        let range = readRange(of: firstPass)
        do {
            // The source opens first: its query runs (and CSV parts parse ahead)
            // while the offline store deletes the interval it replaces.
            var source = try await openSource(columns: columns, from: range.from, to: range.to)
            do {
                if let offline {
                    let connection = try await offline.url.connect(logger: logger)
                    do {
                        try await offline.table.create(on: connection, logger: logger)
                        let fence = context.leaseTerm > 0
                            ? OfflineTable.Fence(
                                term: context.leaseTerm, job: job, idleTimeout: max(context.leaseDuration * 3, .seconds(15)),
                                leaseHeld: { (try? context.requireLease()) != nil })
                            : nil
                        try await offline.table.replaceInterval(from: plan.start, to: plan.end, fence: fence, on: connection, logger: logger) { writer in
                            try await produce(from: &source, columns: columns, into: &state) { batch in
                                try await writer.write(batch)
                                try context.requireLease()
                                try await writeOnline(batch.onlineRows)
                            }
                            // Before the offline rows commit: a failing job rolls them back, and so does a lost lease.
                            try state.checkExpectations(watermark: watermark)
                            try context.requireLease()
                            try await buffer?.flush()
                        }
                        try await connection.close()
                    } catch {
                        try? await connection.close()
                        throw error
                    }
                } else {
                    try await produce(from: &source, columns: columns, into: &state) { batch in
                        try context.requireLease()
                        try await writeOnline(batch.onlineRows)
                    }
                    try state.checkExpectations(watermark: watermark)
                    try context.requireLease()
                    try await buffer?.flush()
                }
                try await Self.close(source)
            } catch {
                try? await Self.close(source)
                throw error
            }
        } catch {
            if let staged { executor.online.staging.discard(staged) }
            buffer?.discard()
            throw error
        }
        buffer?.discard()   // written: only its empty file is left
        if writes {
            if let staged {
                do {
                    try context.requireLease()
                    try await executor.online.commit(staged, now: now)
                } catch {
                    executor.online.staging.discard(staged)
                    throw JobExecutionError("cannot apply the staged online rows: \(error)", retryable: true)
                }
            }
            switch executor.online {
            case .embedded(let store):
                try embeddedTable?.sync()
                let retired = store.retire(view: plan.view, before: plan.version)
                if !retired.isEmpty { logger.info("retired online tables of older versions", metadata: ["versions": "\(retired)"]) }
            case .redis(let redis, _):
                // Its rows are in: the version may be served (unless a newer one is already).
                try context.requireLease()
                try await redis.publish(schema)
            }
        }
        let metrics = state.metrics(watermark: watermark)
        if let violations = metrics.expectations?.violations, !violations.isEmpty {
            logger.warning("expectations violated; the job wrote its rows (policy warn)", metadata: [
                "larder.violations": .string(violations.map(\.summary).joined(separator: "; ")),
            ])
        }
        logger.info("materialized", metadata: ["rows_read": "\(state.rowsRead)", "rows_written": "\(state.rowsWritten)"])
        return metrics
    }

    /// The end of the job's interval: the watermark it reports.
    var watermark: Date { Date(timeIntervalSince1970: Double(plan.end) / 1_000_000) }

    func stagingTable() throws -> OnlineTable {
        do { return try executor.online.staging.stagingTable(for: plan.onlineSchema, job: job) } catch {
            throw JobExecutionError(error.description, retryable: true)
        }
    }

    func bufferFor(_ redis: RedisOnlineStore, staging: OnlineStore, now: Int64) throws -> RedisWriteBuffer {
        do { return try RedisWriteBuffer(redis: redis, staging: staging, schema: plan.onlineSchema, job: job, now: now) } catch {
            throw JobExecutionError("\(error)", retryable: true)
        }
    }

    func onlineTable() throws -> OnlineTable {
        guard let store = executor.online.embedded else { throw JobExecutionError("the online store is not embedded", retryable: false) }
        do { return try store.table(for: plan.onlineSchema) } catch {
            throw JobExecutionError(error.description, retryable: false)
        }
    }

    /// Counters of a run.
    struct Progress {
        var rowsRead: Int64 = 0
        var rowsWritten: Int64 = 0
        var batches = 0
        var statistics: FeatureStatistics
        let expectations: ViewExpectations?
        /// What of the statistics may be reported.
        let reporting: AgentConfiguration.StatisticsPolicy

        init(features: [String], expectations: ViewExpectations?, reporting: AgentConfiguration.StatisticsPolicy = .init()) {
            self.expectations = expectations
            self.reporting = reporting
            var allowed: [String: [String]] = [:]
            for feature in expectations?.features ?? [] { allowed[feature.feature] = feature.allowedValues }
            statistics = FeatureStatistics(features: features, allowedValues: allowed)
        }

        /// The declared metrics so far, with the expectations' results (evaluated
        /// on the whole statistics; reported as the agent's settings allow).
        func metrics(watermark: Date) -> JobMetrics {
            let summaries = statistics.summaries
            return JobMetrics(
                rowsRead: rowsRead, rowsWritten: rowsWritten, watermark: watermark, features: reporting.reported(summaries),
                expectations: expectations.map { reporting.reported($0.evaluate(rowsWritten: rowsWritten, summaries: summaries), summaries: summaries) })
        }

        /// Fails the job when an expectation is violated under the fail policy.
        func checkExpectations(watermark: Date) throws {
            let metrics = metrics(watermark: watermark)
            guard let report = metrics.expectations, report.policy == .fail, !report.violations.isEmpty else { return }
            throw JobExecutionError(
                "expectations violated, nothing written (policy fail): " + report.violations.map(\.summary).joined(separator: "; "),
                retryable: false, metrics: metrics)
        }
    }

    /// Reads the source and hands each batch of output rows to `sink`.
    func produce(
        from source: inout any EventSource, columns: [(name: String, type: ValueType)], into state: inout Progress,
        sink: (OutputBatch) async throws -> Void
    ) async throws {
        func emit(_ batch: OutputBatch) async throws {
            guard batch.count > 0 else { return }
            try Task.checkCancellation()
            try await sink(batch)
            state.rowsWritten += Int64(batch.count)
            state.statistics.add(batch.features)
            state.batches += 1
            if state.batches % 16 == 0 {
                await context.report(JobProgress(phase: "writing", rowsRead: state.rowsRead, rowsWritten: state.rowsWritten))
            }
        }
        if plan.aggregations.isEmpty {
            let projection = try PlainProjection(plan: plan, columns: columns)
            while let batch = try await source.next() {
                try Task.checkCancellation()
                state.rowsRead += Int64(batch.count)
                try await emit(projection.output(of: batch))
            }
        } else {
            // The interval in passes: each holds the tiles of its boundaries and
            // of the longest window before them, so memory does not grow with
            // the interval. The first pass spans the longest window; later ones
            // are sized from the tiles the previous one held, to stay near the
            // budget (never shorter than the longest window, so no source row
            // is read more than twice).
            var pass = firstPass
            var reserve = 0
            var carried: [EntityKey: [Double?]] = [:]
            while true {
                var windows = try WindowedProjection(plan: pass, columns: columns, reservingTiles: reserve)
                windows.carried = carried
                while let batch = try await source.next() {
                    try Task.checkCancellation()
                    state.rowsRead += Int64(batch.count)
                    try windows.add(batch)
                }
                await context.report(JobProgress(phase: "aggregating", rowsRead: state.rowsRead))
                while let batch = windows.nextOutput(batchSize: executor.batchSize) { try await emit(batch) }
                // Values carried over: the previous pass's, updated by this one's rows.
                carried.merge(windows.lastValues) { _, new in new }
                guard pass.end < plan.end, let window = WindowedProjection.boundaries(pass) else { break }
                let tile = plan.slide ?? 1
                let readSeconds = Double(max(tile, window.last - window.first + window.longest))
                let tilesPerSecond = Double(windows.tileCount) / readSeconds
                let fitting = tilesPerSecond > 0 ? Int64(Double(executor.tileBudget) / tilesPerSecond) - window.longest : Int64.max / 4
                let slice = max(window.longest, tile, fitting.dividedRoundingDown(by: tile) * tile)
                reserve = min(executor.tileBudget, windows.tileCount)
                var next = plan
                next.start = pass.end
                next.end = min(plan.end, pass.end + min(slice, (plan.end - pass.end) / 1_000_000 + 1) * 1_000_000)
                pass = next
                let range = readRange(of: pass)
                try await Self.close(source)
                source = try await openSource(columns: columns, from: range.from, to: range.to)
            }
        }
    }

    /// The first pass of an aggregation job: up to the longest window (at least one tile) of the interval.
    var firstPass: MaterializationPlan {
        guard let window = WindowedProjection.boundaries(plan), let tile = plan.slide else { return plan }
        var pass = plan
        let length = max(window.longest, tile)
        pass.end = min(plan.end, (window.first + length - tile) * 1_000_000)
        return pass
    }

    /// Closes a source's connection, if it has one.
    static func close(_ source: any EventSource) async throws {
        if let postgres = source as? PostgresEventSource { try await postgres.connection.close() }
    }

    /// The source columns read, in order: join keys, event time, created
    /// time (if any), then the columns features read.
    var readColumns: [(name: String, type: ValueType)] {
        var columns: [(name: String, type: ValueType)] = plan.keys.map { ($0.name, $0.type) }
        columns.append((plan.source.timestampField, .timestamp))
        if let created = plan.source.createdTimestampField { columns.append((created, .timestamp)) }
        let types = plan.source.schema
        var inputs: [String] = plan.features.map(\.sourceColumn) + plan.aggregations.map(\.column)
        var seen = Set(columns.map(\.name))
        inputs = inputs.filter { seen.insert($0).inserted }
        for input in inputs {
            // A transformation's columns are the view's features, typed as declared.
            let type = plan.features.first(where: { $0.sourceColumn == input && plan.transformation != nil })?.type ?? types[input] ?? .float64
            columns.append((input, type))
        }
        return columns
    }

    /// The event times a job or pass reads: its interval, or for aggregations
    /// the windows ending at its boundaries.
    func readRange(of plan: MaterializationPlan) -> (from: Int64, to: Int64) {
        guard let window = WindowedProjection.boundaries(plan) else { return (plan.start, plan.end) }
        return ((window.first - window.longest) * 1_000_000, window.last * 1_000_000)
    }

    func openSource(columns: [(name: String, type: ValueType)], from: Int64, to: Int64) async throws -> any EventSource {
        switch plan.source.connector {
        case .file(let name, let paths):
            guard let connection = executor.configuration.connections[name], case .directory = connection else {
                throw JobExecutionError("this agent has no directory connection named '\(name)' in its configuration", retryable: false)
            }
            let files: [URL]
            do { files = try connection.files(matching: paths) } catch { throw JobExecutionError("\(error)", retryable: false) }
            // What dataset jobs write (on a consumer's request) is never read as a feature source.
            for case .folder(let place) in executor.configuration.datasetPlaces.values {
                let root = SourceConnection.realPath(place.path)
                if let file = files.first(where: { SourceConnection.realPath($0.path).hasPrefix(root.hasSuffix("/") ? root : root + "/") }) {
                    throw JobExecutionError(
                        "source \(plan.source.name): '\(file.lastPathComponent)' is in a datasets folder, where dataset jobs write; sources never read there",
                        retryable: false)
                }
            }
            guard !files.isEmpty else { throw JobExecutionError("no file of source \(plan.source.name) matches \(paths)", retryable: true) }
            return CSVEventSource(files: files, columns: columns, timestampColumn: plan.keys.count, from: from, to: to)
        case .postgres(let name, _):
            let url = try executor.connection(named: name)
            let statement = try PostgresEventSource.statement(source: plan.source, transformation: plan.transformation, columns: columns)
            let connection: PostgresConnection
            do { connection = try await url.connect(logger: logger) } catch {
                throw JobExecutionError(
                    "cannot connect to the source database '\(name)': \(ReportedError.codes(error))", retryable: true,
                    localDetail: String(reflecting: error))
            }
            do {
                return try await PostgresEventSource(
                    connection: connection, statement: statement, columns: columns, from: from, to: to,
                    timeout: executor.configuration.sourceStatementTimeout, batchSize: executor.batchSize, logger: logger)
            } catch {
                try? await connection.close()
                throw error
            }
        case .push:
            throw JobExecutionError("source \(plan.source.name) is pushed by clients; there is nothing to read", retryable: false)
        }
    }
}

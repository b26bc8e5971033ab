import Foundation
import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers
import Shared

/// `POST /v1/datasets/build`: builds a training dataset for notebooks and
/// pipelines, on the agent, from the customer's offline store.
///
/// The body is the entity table as CSV (a header row; the join keys, the
/// timestamp column, any request fields, and columns passed through). The
/// query names the features: `feature_service=NAME`, or `features=view:feature`
/// (repeated, or comma-separated); `timestamp_column` (default
/// `event_timestamp`); `assume_utc=true` to take timestamps without an offset
/// as UTC. The answer streams as `text/csv`: the input columns, then one
/// column per feature (`view__feature`). The feature view versions read and
/// the registry revision are in the headers; the row count and the SHA-256 of
/// the body in the trailers.
public struct DatasetRoute: Sendable {
    let builder: TrainingDatasetBuilder
    /// Where uploaded entity tables are kept while their dataset is built.
    let uploads: String
    /// How many builds, and how many spooled bytes, the agent takes at once.
    let limits: DatasetBuildLimits

    /// A route building with `builder`, spooling uploads under `uploads`, within `settings`.
    public init(builder: TrainingDatasetBuilder, uploads: String, settings: AgentConfiguration.DatasetSettings = .init()) {
        self.builder = builder
        self.uploads = uploads
        limits = DatasetBuildLimits(settings)
        // What a crash left behind: no build is running yet when the route is made.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: uploads)) ?? [] where name.hasPrefix("entities-") && name.hasSuffix(".csv") {
            try? FileManager.default.removeItem(atPath: uploads + "/" + name)
        }
    }

    static let viewsHeader = HTTPField.Name("Larder-Dataset-Views")!
    static let revisionHeader = HTTPField.Name("Larder-Registry-Revision")!
    static let rowsTrailer = HTTPField.Name("Larder-Dataset-Rows")!
    static let checksumTrailer = HTTPField.Name("Larder-Dataset-SHA256")!

    func handle(_ request: Request, context: FeatureServerContext) async throws -> Response {
        let query = request.uri.queryParameters
        let features = query.getAll("features").flatMap { $0.split(separator: ",").map { String($0.trimmingCharacters(in: .whitespaces)) } }
            .filter { !$0.isEmpty }
        let service = query.get("feature_service")
        guard (service == nil) != features.isEmpty else {
            throw DatasetError(kind: .invalidInput, field: "feature_service", detail: "give either feature_service or features (view:feature references), not both")
        }
        // A build holds a slot from here until its answer is written or dropped (`SpooledUpload`'s deinit).
        guard let slot = limits.admit() else {
            throw FeatureServerProblem(
                status: .tooManyRequests, code: "too-many-builds",
                detail: "the agent is building \(limits.settings.maxConcurrentBuilds) datasets already; retry shortly", retryAfter: 5)
        }
        try FileManager.default.createDirectory(atPath: uploads, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let upload = SpooledUpload(
            file: URL(fileURLWithPath: uploads).appendingPathComponent("entities-\(UUID().uuidString).csv"), slot: slot)
        try await spool(request.body, to: upload)
        let prepared = try await builder.prepare(DatasetRequest(
            featureService: service, features: features.isEmpty ? nil : features, entities: upload.file,
            timestampColumn: query.get("timestamp_column") ?? "event_timestamp", assumeUTC: query.get("assume_utc") == "true"))
        var headers = HTTPFields()
        headers[.contentType] = "text/csv; charset=utf-8"
        headers[Self.viewsHeader] = prepared.resolved.views.map { "\($0.view)@\($0.version)" }.joined(separator: ",")
        headers[Self.revisionHeader] = String(prepared.revision)
        headers[.trailer] = "\(Self.rowsTrailer.canonicalName), \(Self.checksumTrailer.canonicalName)"
        let builder = builder, logger = context.logger, requestID = context.requestID
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            // The upload lives as long as this closure: removed, and its slot freed, when the
            // answer is written, fails, or is dropped unwritten.
            defer { withExtendedLifetime(upload) {} }
            do {
                let summary = try await builder.writeCSV(prepared) { try await writer.write($0) }
                logger.info("training dataset built", metadata: [
                    "larder.rows": "\(summary.rows)", "larder.views": "\(summary.views.map { "\($0.view)@\($0.version)" })",
                    "larder.request_id": .string(requestID),
                ])
                var trailers = HTTPFields()
                trailers[Self.rowsTrailer] = String(summary.rows)
                trailers[Self.checksumTrailer] = summary.sha256
                try await writer.finish(trailers)
            } catch {
                // The status is sent: the client sees a cut body without the trailers.
                logger.error("training dataset failed mid-stream", metadata: [
                    "larder.error": .string(String(describing: error)), "larder.request_id": .string(requestID),
                ])
                throw error
            }
        })
    }

    /// Writes the request body to the upload's file, refusing more than the
    /// upload limit or the agent's spool space.
    func spool(_ body: RequestBody, to upload: SpooledUpload) async throws {
        guard FileManager.default.createFile(atPath: upload.file.path, contents: nil, attributes: [.posixPermissions: 0o600]),
              let handle = FileHandle(forWritingAtPath: upload.file.path)
        else { throw DatasetError(kind: .invalidInput, field: "entities", detail: "cannot store the entity table on the agent") }
        defer { try? handle.close() }
        var written = 0
        let maximum = limits.settings.maxUploadBytes
        for try await buffer in body {
            written += buffer.readableBytes
            guard written <= maximum else {
                throw FeatureServerProblem(
                    status: .contentTooLarge, code: "payload-too-large",
                    detail: "the entity table is larger than \(maximum) bytes (datasets.max_upload_bytes)", field: "entities")
            }
            guard upload.slot.reserve(buffer.readableBytes) else {
                throw FeatureServerProblem(
                    status: .tooManyRequests, code: "spool-full",
                    detail: "the agent holds as many uploaded entity tables as it may (datasets.spool_bytes); retry shortly", field: "entities",
                    retryAfter: 5)
            }
            try handle.write(contentsOf: buffer.readableBytesView)
        }
        guard written > 0 else { throw DatasetError(kind: .invalidInput, field: "entities", detail: "send the entity table (CSV with a header row) as the body") }
    }
}

/// How many dataset builds run at once through the API and how many bytes
/// their uploads hold on disk, against the agent's settings.
final class DatasetBuildLimits: Sendable {
    let settings: AgentConfiguration.DatasetSettings
    private let state = NIOLockedValueBox((builds: 0, bytes: 0))

    init(_ settings: AgentConfiguration.DatasetSettings) { self.settings = settings }

    /// A slot for one build; nil when as many run as the settings allow.
    func admit() -> Slot? {
        let admitted = state.withLockedValue { state -> Bool in
            guard state.builds < settings.maxConcurrentBuilds else { return false }
            state.builds += 1
            return true
        }
        return admitted ? Slot(limits: self) : nil
    }

    /// Builds running, and bytes spooled, now.
    var usage: (builds: Int, bytes: Int) { state.withLockedValue { ($0.builds, $0.bytes) } }

    /// One admitted build: the bytes it reserved, given back with the slot when it ends.
    final class Slot: Sendable {
        let limits: DatasetBuildLimits
        private let reserved = NIOLockedValueBox(0)

        init(limits: DatasetBuildLimits) { self.limits = limits }

        /// Reserves `bytes` more of the spool; false when they do not fit.
        func reserve(_ bytes: Int) -> Bool {
            let fits = limits.state.withLockedValue { state -> Bool in
                guard state.bytes + bytes <= limits.settings.spoolBytes else { return false }
                state.bytes += bytes
                return true
            }
            if fits { reserved.withLockedValue { $0 += bytes } }
            return fits
        }

        deinit {
            let bytes = reserved.withLockedValue { $0 }
            limits.state.withLockedValue { state in
                state.builds -= 1
                state.bytes -= bytes
            }
        }
    }
}

/// An uploaded entity table on the agent's disk: removed, and its build's
/// slot given back, when the last reference to it goes, on every path.
final class SpooledUpload: Sendable {
    let file: URL
    let slot: DatasetBuildLimits.Slot

    init(file: URL, slot: DatasetBuildLimits.Slot) {
        self.file = file
        self.slot = slot
    }

    deinit { try? FileManager.default.removeItem(at: file) }
}

import Foundation
import HTTPTypes
import Hummingbird
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
    /// The largest entity table taken.
    let maxEntityTableBytes: Int

    /// A route building with `builder`, spooling uploads under `uploads`.
    public init(builder: TrainingDatasetBuilder, uploads: String, maxEntityTableBytes: Int = 4 << 30) {
        self.builder = builder
        self.uploads = uploads
        self.maxEntityTableBytes = maxEntityTableBytes
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
        try FileManager.default.createDirectory(atPath: uploads, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let file = URL(fileURLWithPath: uploads).appendingPathComponent("entities-\(UUID().uuidString).csv")
        do {
            try await spool(request.body, to: file)
            let prepared = try await builder.prepare(DatasetRequest(
                featureService: service, features: features.isEmpty ? nil : features, entities: file,
                timestampColumn: query.get("timestamp_column") ?? "event_timestamp", assumeUTC: query.get("assume_utc") == "true"))
            var headers = HTTPFields()
            headers[.contentType] = "text/csv; charset=utf-8"
            headers[Self.viewsHeader] = prepared.resolved.views.map { "\($0.view)@\($0.version)" }.joined(separator: ",")
            headers[Self.revisionHeader] = String(prepared.revision)
            headers[.trailer] = "\(Self.rowsTrailer.canonicalName), \(Self.checksumTrailer.canonicalName)"
            let builder = builder, logger = context.logger, requestID = context.requestID
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                defer { try? FileManager.default.removeItem(at: file) }
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
        } catch {
            try? FileManager.default.removeItem(at: file)
            throw error
        }
    }

    /// Writes the request body to `file`, refusing more than the limit.
    func spool(_ body: RequestBody, to file: URL) async throws {
        guard FileManager.default.createFile(atPath: file.path, contents: nil, attributes: [.posixPermissions: 0o600]),
              let handle = FileHandle(forWritingAtPath: file.path)
        else { throw DatasetError(kind: .invalidInput, field: "entities", detail: "cannot store the entity table on the agent") }
        defer { try? handle.close() }
        var written = 0
        for try await buffer in body {
            written += buffer.readableBytes
            guard written <= maxEntityTableBytes else {
                throw FeatureServerProblem(
                    status: .contentTooLarge, code: "payload-too-large",
                    detail: "the entity table is larger than \(maxEntityTableBytes >> 20) MiB", field: "entities")
            }
            try handle.write(contentsOf: buffer.readableBytesView)
        }
        guard written > 0 else { throw DatasetError(kind: .invalidInput, field: "entities", detail: "send the entity table (CSV with a header row) as the body") }
    }
}

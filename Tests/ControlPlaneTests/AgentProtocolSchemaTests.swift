import Foundation
import Testing
@testable import ControlPlane
@testable import Shared
import Yams

/// The agent protocol carries status, timings, counts, watermarks and summary
/// statistics: these tests read its published schema and its Swift types and
/// find no place where rows of feature values could travel.
@Suite("Agent protocol schema")
struct AgentProtocolSchemaTests {
    /// The document as written (the served one adds the common answers, text patterns and nullable optional fields).
    static var document: [String: Any] { try! Yams.load(yaml: OpenAPIDocument.yaml) as! [String: Any] }
    static var schemas: [String: Any] { (document["components"] as! [String: Any])["schemas"] as! [String: Any] }

    /// Every field name the protocol may carry, stated here independently of the code.
    static let declaredFields: Set<String> = [
        "instance_id", "version", "hostname", "capabilities", "agent", "workspace", "environment", "heartbeat_seconds", "lease_seconds",
        "max_claim_wait_seconds", "signing_key_fingerprint", "server_time", "running_jobs", "abort", "kinds", "wait_seconds", "job", "id",
        "attempt", "lease_token", "lease_expires_at", "spec", "payload", "signature", "key_fingerprint", "progress", "phase", "fraction",
        "rows_read", "rows_written", "cancel_requested", "outcome", "started_at", "finished_at", "metrics", "failure", "watermark",
        "features", "feature", "count", "null_count", "min", "max", "mean", "message", "retryable", "access_version", "have_version",
        "snapshot", "registry_revision", "have_revision", "revision", "dataset", "rows", "columns", "name", "type", "views", "view",
        "earliest", "latest", "sha256", "disallowed_count", "expectations", "policy", "results", "check", "observed", "lower_limit",
        "upper_limit", "passed", "grace_seconds", "token", "previous_expires_at", "lease_term", "signing_keys", "key_generation",
        "online_store",
    ]
    /// Free-text fields an agent may send, each bounded.
    static let boundedText: [String: Int] = [
        "instance_id": 128, "phase": 64, "message": 2_000, "name": 256, "type": 16, "view": 63, "sha256": 64,
    ]

    static func resolve(_ schema: [String: Any]) -> [String: Any] {
        guard let reference = schema["$ref"] as? String else { return schema }
        return schemas[String(reference.split(separator: "/").last!)] as! [String: Any]
    }

    /// Walks a schema, checking each object is closed and every value typed; returns the fields seen.
    static func walk(_ raw: [String: Any], path: String, sentByAgent: Bool, problems: inout [String]) -> Set<String> {
        let schema = resolve(raw)
        var fields: Set<String> = []
        switch schema["type"] as? String {
        case "object":
            guard let properties = schema["properties"] as? [String: Any], !properties.isEmpty else {
                problems.append("\(path): an object without declared properties could carry anything")
                return fields
            }
            if schema["additionalProperties"] as? Bool != false { problems.append("\(path): accepts undeclared properties") }
            for (name, property) in properties {
                fields.insert(name)
                fields.formUnion(walk(property as! [String: Any], path: "\(path).\(name)", sentByAgent: sentByAgent, problems: &problems))
            }
        case "array":
            guard let items = schema["items"] as? [String: Any] else { problems.append("\(path): an array of anything"); return fields }
            fields.formUnion(walk(items, path: "\(path)[]", sentByAgent: sentByAgent, problems: &problems))
        case "string":
            let name = String(path.split(separator: ".").last ?? "")
            if sentByAgent, schema["enum"] == nil, schema["format"] == nil {
                if let limit = boundedText[name] {
                    if (schema["maxLength"] as? Int).map({ $0 > limit }) ?? true { problems.append("\(path): free text without its bound \(limit)") }
                } else if !["version", "hostname", "feature"].contains(name) {
                    problems.append("\(path): free text the protocol does not declare")
                }
            }
        case "integer", "number", "boolean":
            break
        default:
            problems.append("\(path): no type (any value would do)")
        }
        return fields
    }

    static var agentOperations: [(path: String, operation: [String: Any])] {
        let paths = document["paths"] as! [String: Any]
        return paths.filter { $0.key.hasPrefix("/v1/agent/") }.flatMap { path, item in
            (item as! [String: Any]).compactMap { method, value in
                method == "parameters" ? nil : (path: "\(method.uppercased()) \(path)", operation: value as! [String: Any])
            }
        }
    }

    @Test("every request and response of the agent protocol is a closed schema of declared, typed fields")
    func closedSchemas() {
        var problems: [String] = []
        var seen: Set<String> = []
        #expect(Self.agentOperations.count == 9)
        for (path, operation) in Self.agentOperations {
            let body = (((operation["requestBody"] as? [String: Any])?["content"] as? [String: Any])?["application/json"] as? [String: Any])?["schema"]
            let request = try! #require(body as? [String: Any], "\(path) has no request body schema")
            seen.formUnion(Self.walk(request, path: "\(path) request", sentByAgent: true, problems: &problems))
            let ok = (((operation["responses"] as? [String: Any])?["200"] as? [String: Any])?["content"] as? [String: Any])?["application/json"]
            let response = try! #require((ok as? [String: Any])?["schema"] as? [String: Any], "\(path) has no 200 schema")
            if (response["$ref"] as? String)?.hasSuffix("/Job") == true { continue }   // the ledger's own view of the job
            seen.formUnion(Self.walk(response, path: "\(path) response", sentByAgent: false, problems: &problems))
        }
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        #expect(seen.subtracting(Self.declaredFields).isEmpty, "undeclared fields: \(seen.subtracting(Self.declaredFields).sorted())")
    }

    /// The JSON key paths of an encoded value.
    static func keys(of value: some Encodable) throws -> Set<String> {
        func collect(_ any: Any, _ prefix: String, into keys: inout Set<String>) {
            if let object = any as? [String: Any] {
                for (key, child) in object {
                    keys.insert(prefix + key)
                    collect(child, prefix + key + ".", into: &keys)
                }
            } else if let array = any as? [Any] {
                for child in array { collect(child, prefix, into: &keys) }
            }
        }
        var keys: Set<String> = []
        collect(try JSONSerialization.jsonObject(with: APICoding.makeEncoder().encode(value)), "", into: &keys)
        return keys
    }

    /// The key paths a schema allows.
    static func keys(of schema: [String: Any], prefix: String = "") -> Set<String> {
        let resolved = resolve(schema)
        if resolved["type"] as? String == "array", let items = resolved["items"] as? [String: Any] { return keys(of: items, prefix: prefix) }
        guard let properties = resolved["properties"] as? [String: Any] else { return [] }
        var keys: Set<String> = []
        for (name, property) in properties {
            keys.insert(prefix + name)
            keys.formUnion(Self.keys(of: property as! [String: Any], prefix: prefix + name + "."))
        }
        return keys
    }

    @Test("what the agent's Swift types encode, with every optional field set, is exactly what the schema declares")
    func typesMatchSchema() throws {
        let token = UUID()
        let samples: [(String, any Encodable)] = [
            ("AgentHello", AgentHello(instanceId: "i", version: "v", hostname: "h", capabilities: [.materialize], onlineStore: .redis)),
            ("AgentHeartbeat", AgentHeartbeat(instanceId: "i", runningJobs: [1], keyGeneration: 2)),
            ("RotateCredentialsRequest", RotateCredentialsRequest(graceSeconds: 1)),
            ("ClaimRequest", ClaimRequest(instanceId: "i", kinds: [.materialize], waitSeconds: 1)),
            ("AgentHeartbeatReply", AgentHeartbeatReply(
                abort: [1], serverTime: Date(), accessVersion: 2, registryRevision: 3,
                signingKeys: [SignedDocument(payload: "{}", signature: "s", keyFingerprint: "f")])),
            ("RegistrySnapshotRequest", RegistrySnapshotRequest(instanceId: "i", haveRevision: 1)),
            ("RegistrySnapshotReply", RegistrySnapshotReply(revision: 2, snapshot: SignedDocument(payload: "{}", signature: "s", keyFingerprint: "f"))),
            ("AccessSnapshotRequest", AccessSnapshotRequest(instanceId: "i", haveVersion: 1)),
            ("AccessSnapshotReply", AccessSnapshotReply(version: 2, snapshot: SignedDocument(payload: "{}", signature: "s", keyFingerprint: "f"))),
            ("LeaseExtension", LeaseExtension(leaseToken: token, progress: JobProgress(phase: "p", fraction: 0.5, rowsRead: 1, rowsWritten: 1))),
            ("JobCompletion", JobCompletion(
                leaseToken: token, outcome: .succeeded, startedAt: Date(), finishedAt: Date(),
                metrics: JobMetrics(rowsRead: 1, rowsWritten: 1, watermark: Date(), features: [
                    FeatureSummary(feature: "f", count: 1, nullCount: 0, min: 1, max: 1, mean: 1, disallowedCount: 0),
                ], dataset: DatasetMetadata(
                    rows: 1, columns: [.init(name: "c", type: "input")], views: [.init(view: "v", version: 1)], earliest: Date(), latest: Date(),
                    registryRevision: 1, sha256: "s"),
                expectations: ExpectationReport(policy: .fail, results: [
                    ExpectationResult(feature: "f", check: .min, observed: 1, lowerLimit: 0, upperLimit: 2, passed: true),
                ])),
                failure: JobFailure(message: "m", retryable: true))),
        ]
        for (name, sample) in samples {
            let schema = try #require(Self.schemas[name] as? [String: Any])
            #expect(try Self.keys(of: sample) == Self.keys(of: schema), "\(name): the Swift type and the schema differ")
        }
    }
}

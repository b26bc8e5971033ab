import Foundation
import Yams

/// The API's OpenAPI 3.1 document (`API/openapi.yaml`, compiled into the
/// binary), served as JSON at `/openapi.json`.
public enum OpenAPIDocument {
    /// The document as written.
    public static var yaml: String { String(decoding: PackageResources.openapi_yaml, as: UTF8.self) }

    /// The document as JSON bytes, converted once.
    public static let json: Data = {
        guard let object = try? Yams.load(yaml: yaml),
              let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return Data("{}".utf8) }
        return data
    }()

    /// Every operation the document declares, as `METHOD /path`.
    public static var operations: Set<String> {
        guard let object = try? Yams.load(yaml: yaml) as? [String: Any], let paths = object["paths"] as? [String: Any] else { return [] }
        var operations: Set<String> = []
        for (path, item) in paths {
            guard let item = item as? [String: Any] else { continue }
            for method in ["get", "put", "post", "delete", "patch", "head", "options"] where item[method] != nil {
                operations.insert("\(method.uppercased()) \(path)")
            }
        }
        return operations
    }
}

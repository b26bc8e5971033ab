import Foundation
import Yams

/// The API's OpenAPI 3.1 document (`API/openapi.yaml`, compiled into the
/// binary), served as JSON at `/openapi.json`.
public enum OpenAPIDocument {
    /// The document as written.
    public static var yaml: String { String(decoding: PackageResources.openapi_yaml, as: UTF8.self) }

    /// The document as JSON bytes, converted once, with the answers every
    /// operation may give declared on each (see `withCommonResponses`).
    public static let json: Data = {
        guard let object = try? Yams.load(yaml: yaml) as? [String: Any],
              let data = try? JSONSerialization.data(withJSONObject: withCommonResponses(object), options: [.sortedKeys, .withoutEscapingSlashes])
        else { return Data("{}".utf8) }
        return data
    }()

    /// Operations no credential is checked on: neither 401 nor 429 (the probes).
    static let unauthenticatedPaths: Set<String> = ["/healthz", "/readyz"]
    /// Operations that take no credential (but a bad one sent still gets 401).
    static let publicPaths: Set<String> = ["/healthz", "/readyz", "/openapi.json", "/v1/login", "/v1/enroll"]

    /// `document` with the problems every operation may answer declared on
    /// each, rather than repeated in the YAML: 400 (control characters in the
    /// path or query), 401 and 429 (a bad token, throttled), 403 (a role or an
    /// audience short of the route's), 404 (a path naming what does not exist,
    /// or a hidden workspace), 413 and 415 (a body too large or not JSON).
    static func withCommonResponses(_ document: [String: Any]) -> [String: Any] {
        guard var paths = document["paths"] as? [String: Any] else { return document }
        let problem: [String: Any] = ["$ref": "#/components/responses/Problem"]
        for (path, value) in paths {
            guard var item = value as? [String: Any] else { continue }
            for method in ["get", "put", "post", "delete", "patch"] {
                guard var operation = item[method] as? [String: Any] else { continue }
                var responses = operation["responses"] as? [String: Any] ?? [:]
                var statuses = ["400"]
                if !unauthenticatedPaths.contains(path) { statuses += ["401", "429"] }
                if !publicPaths.contains(path) { statuses.append("403") }
                if path.contains("{") { statuses.append("404") }
                if operation["requestBody"] != nil { statuses += ["413", "415"] }
                for status in statuses where responses[status] == nil { responses[status] = problem }
                operation["responses"] = responses
                item[method] = operation
            }
            paths[path] = item
        }
        var document = document
        document["paths"] = paths
        return withStrictRequests(withTextPatterns(document))
    }

    /// `document` with its request bodies declared as strictly as the server
    /// reads them: no field beyond those declared (`additionalProperties:
    /// false`), an optional field may also be sent as null, and a query
    /// parameter given is never empty.
    static func withStrictRequests(_ document: [String: Any]) -> [String: Any] {
        var document = document
        guard var components = document["components"] as? [String: Any], var schemas = components["schemas"] as? [String: Any],
              var paths = document["paths"] as? [String: Any]
        else { return document }
        var requestSchemas: Set<String> = []
        func referenced(_ value: Any) {
            if let object = value as? [String: Any] {
                if let ref = object["$ref"] as? String, ref.hasPrefix("#/components/schemas/") {
                    let name = String(ref.dropFirst("#/components/schemas/".count))
                    if requestSchemas.insert(name).inserted, let schema = schemas[name] { referenced(schema) }
                }
                object.values.forEach(referenced)
            } else if let array = value as? [Any] {
                array.forEach(referenced)
            }
        }
        func strict(_ schema: [String: Any]) -> [String: Any] {
            guard let properties = schema["properties"] as? [String: Any] else { return schema }
            var schema = schema
            let required = Set(schema["required"] as? [String] ?? [])
            var loosened: [String: Any] = [:]
            for (name, value) in properties {
                guard var property = value as? [String: Any], !required.contains(name) else {
                    loosened[name] = (value as? [String: Any]).map(strict) ?? value
                    continue
                }
                property = strict(property)
                if let type = property["type"] as? String {
                    property["type"] = [type, "null"]
                    if var values = property["enum"] as? [Any] {
                        values.append(NSNull())
                        property["enum"] = values
                    }
                } else if property["$ref"] != nil || property["oneOf"] != nil {
                    property = ["anyOf": [property, ["type": "null"]]]
                }
                loosened[name] = property
            }
            schema["properties"] = loosened
            if schema["additionalProperties"] == nil { schema["additionalProperties"] = false }
            return schema
        }
        for (path, value) in paths {
            guard var item = value as? [String: Any] else { continue }
            for method in ["get", "put", "post", "delete", "patch"] {
                guard var operation = item[method] as? [String: Any] else { continue }
                if var body = operation["requestBody"] as? [String: Any], var content = body["content"] as? [String: Any],
                   var json = content["application/json"] as? [String: Any], let schema = json["schema"] as? [String: Any] {
                    referenced(schema)
                    json["schema"] = strict(schema)
                    content["application/json"] = json
                    body["content"] = content
                    operation["requestBody"] = body
                }
                if let parameters = operation["parameters"] as? [Any] { operation["parameters"] = parameters.map(nonEmptyQuery) }
                item[method] = operation
            }
            if let parameters = item["parameters"] as? [Any] { item["parameters"] = parameters.map(nonEmptyQuery) }
            paths[path] = item
        }
        for name in requestSchemas { if let schema = schemas[name] as? [String: Any] { schemas[name] = strict(schema) } }
        if var parameters = components["parameters"] as? [String: Any] {
            for (name, value) in parameters { parameters[name] = nonEmptyQuery(value) }
            components["parameters"] = parameters
        }
        components["schemas"] = schemas
        document["components"] = components
        document["paths"] = paths
        return document
    }

    /// A query parameter's string schema with `minLength: 1`: the server refuses an empty one.
    static func nonEmptyQuery(_ value: Any) -> Any {
        guard var parameter = value as? [String: Any], parameter["in"] as? String == "query",
              var schema = parameter["schema"] as? [String: Any], schema["type"] as? String == "string", schema["minLength"] == nil
        else { return value }
        schema["minLength"] = 1
        parameter["schema"] = schema
        return parameter
    }

    /// Text in a path or query parameter: no control character at all.
    static let parameterText = "^[^\\u0000-\\u001f\\u007f]*$"
    /// Text in a JSON body: tab, line feed and carriage return, but no other control character.
    static let bodyText = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]*$"

    /// `document` with every free text schema (a string without its own
    /// pattern, enum or format) declaring that it holds no control characters,
    /// which the server refuses (PostgreSQL cannot store NUL in text).
    static func withTextPatterns(_ document: [String: Any]) -> [String: Any] {
        func walk(_ value: Any, pattern: String) -> Any {
            if var object = value as? [String: Any] {
                if object["type"] as? String == "string", object["pattern"] == nil, object["enum"] == nil, object["format"] == nil,
                   object["const"] == nil {
                    object["pattern"] = pattern
                }
                for (key, child) in object {
                    // A parameter's schema is parameter text; everything else in a body.
                    let inParameter = (object["in"] as? String).map { ["path", "query", "header"].contains($0) } ?? false
                    object[key] = walk(child, pattern: key == "schema" && inParameter ? parameterText : pattern)
                }
                return object
            }
            if let array = value as? [Any] { return array.map { walk($0, pattern: pattern) } }
            return value
        }
        return walk(document, pattern: bodyText) as? [String: Any] ?? document
    }

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

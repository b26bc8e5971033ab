import Foundation

extension JSONScalar {
    /// The rows of a push body, `{"rows": [{…}, …]}`; errors name the field.
    public static func pushRows(json: some ContiguousBytes, limit: Int = .max) throws(FeatureRequestError) -> [[String: JSONScalar]] {
        let result = json.withUnsafeBytes { raw in
            Result { () throws(FeatureRequestError) in try FeatureRequestParser.pushRows(raw.bindMemory(to: UInt8.self), limit: limit) }
        }
        return try result.get()
    }
}

extension OnlineFeatureRequest {
    /// Reads a request from its JSON text; errors name the field. More than
    /// `limit` entities stop the reading at once (413), before they take memory.
    public init(json: some ContiguousBytes, limit: Int = .max) throws(FeatureRequestError) {
        let result = json.withUnsafeBytes { raw in
            Result { () throws(FeatureRequestError) in try FeatureRequestParser.parse(raw.bindMemory(to: UInt8.self), limit: limit) }
        }
        self = try result.get()
    }
}

/// Reads the body of `POST /v1/features/online` straight from its bytes.
///
/// Every feature read passes here, and Foundation's `JSONDecoder` (a general
/// Codable decoder) cost more than the rest of a one-entity read together; the
/// body's shape is small and fixed, so it is read by hand: standard JSON
/// (RFC 8259: escapes, surrogate pairs, exponents), objects and arrays only
/// where the shape has them, and errors naming the field and byte offset.
struct FeatureRequestParser {
    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0
    /// The most entities or rows read before the body is refused.
    private let limit: Int
    /// The deepest nesting accepted: the shape needs 3.
    private static let maximumDepth = 8

    /// Parses `body` into a request.
    static func parse(_ body: UnsafeBufferPointer<UInt8>, limit: Int = .max) throws(FeatureRequestError) -> OnlineFeatureRequest {
        var parser = FeatureRequestParser(bytes: body, limit: limit)
        return try parser.request()
    }

    /// Parses the body of a push, `{"rows": [{…}, …]}`, into its rows.
    static func pushRows(_ body: UnsafeBufferPointer<UInt8>, limit: Int = .max) throws(FeatureRequestError) -> [[String: JSONScalar]] {
        var parser = FeatureRequestParser(bytes: body, limit: limit)
        var rows: [[String: JSONScalar]]?
        try parser.object(path: "") { parser, key throws(FeatureRequestError) in
            guard key == "rows" else { throw .invalid(key, "unknown field '\(key)'; a push has only rows") }
            var read: [[String: JSONScalar]] = []
            try parser.array(path: key) { parser, index throws(FeatureRequestError) in
                guard index < parser.limit else {
                    throw FeatureRequestError(kind: .tooManyEntities, field: "rows", detail: "more than \(parser.limit) rows; this agent takes at most \(parser.limit) per push")
                }
                read.append(try parser.scalars(path: "rows[\(index)]"))
            }
            rows = read
        }
        parser.skipWhitespace()
        guard parser.index == parser.bytes.count else { throw parser.syntax("", "unexpected text after the push object") }
        guard let rows else { throw .invalid("rows", "missing field 'rows'") }
        return rows
    }

    private init(bytes: UnsafeBufferPointer<UInt8>, limit: Int) {
        self.bytes = bytes
        self.limit = limit
    }

    private mutating func request() throws(FeatureRequestError) -> OnlineFeatureRequest {
        var request = OnlineFeatureRequest(entities: [])
        var sawEntities = false
        try object(path: "") { parser, key throws(FeatureRequestError) in
            switch key {
            case "feature_service":
                request.featureService = try parser.nullable(path: key) { parser throws(FeatureRequestError) in try parser.string(path: key) }
            case "features":
                request.features = try parser.nullable(path: key) { parser throws(FeatureRequestError) in
                    var features: [String] = []
                    try parser.array(path: key) { parser, index throws(FeatureRequestError) in features.append(try parser.string(path: "\(key)[\(index)]")) }
                    return features
                }
            case "entities":
                sawEntities = true
                try parser.array(path: key) { parser, index throws(FeatureRequestError) in
                    guard index < parser.limit else {
                        throw FeatureRequestError(
                            kind: .tooManyEntities, field: "entities", detail: "more than \(parser.limit) entities; this agent serves at most \(parser.limit) per request")
                    }
                    request.entities.append(try parser.scalars(path: "entities[\(index)]"))
                }
            case "request_context":
                request.requestContext = try parser.nullable(path: key) { parser throws(FeatureRequestError) in try parser.scalars(path: key) }
            default:
                throw .invalid(key, "unknown field '\(key)'; a request has feature_service or features, entities and request_context")
            }
        }
        skipWhitespace()
        guard index == bytes.count else { throw syntax("", "unexpected text after the request object") }
        guard sawEntities else { throw .invalid("entities", "missing field 'entities'") }
        return request
    }

    // MARK: Structure

    private mutating func object(path: String, depth: Int = 0, _ member: (inout FeatureRequestParser, String) throws(FeatureRequestError) -> Void) throws(FeatureRequestError) {
        guard depth < Self.maximumDepth else { throw syntax(path, "nested too deeply") }
        skipWhitespace()
        try expect(UInt8(ascii: "{"), path: path, what: "an object")
        skipWhitespace()
        if peek == UInt8(ascii: "}") {
            index += 1
            return
        }
        while true {
            skipWhitespace()
            guard peek == UInt8(ascii: "\"") else { throw syntax(path, "expected a field name in quotes") }
            let key = try string(path: path)
            skipWhitespace()
            try expect(UInt8(ascii: ":"), path: path, what: "':' after the field name")
            skipWhitespace()
            try member(&self, key)
            skipWhitespace()
            guard let next = peek else { throw syntax(path, "the object is not closed") }
            index += 1
            if next == UInt8(ascii: "}") { return }
            guard next == UInt8(ascii: ",") else { throw syntax(path, "expected ',' or '}'") }
        }
    }

    private mutating func array(path: String, _ element: (inout FeatureRequestParser, Int) throws(FeatureRequestError) -> Void) throws(FeatureRequestError) {
        skipWhitespace()
        guard peek == UInt8(ascii: "[") else { throw .invalid(path, "field '\(path)' has the wrong type: expected an array") }
        index += 1
        skipWhitespace()
        if peek == UInt8(ascii: "]") {
            index += 1
            return
        }
        var count = 0
        while true {
            skipWhitespace()
            try element(&self, count)
            count += 1
            skipWhitespace()
            guard let next = peek else { throw syntax(path, "the array is not closed") }
            index += 1
            if next == UInt8(ascii: "]") { return }
            guard next == UInt8(ascii: ",") else { throw syntax(path, "expected ',' or ']'") }
        }
    }

    /// `null`, or what `body` reads.
    private mutating func nullable<T>(path: String, _ body: (inout FeatureRequestParser) throws(FeatureRequestError) -> T) throws(FeatureRequestError) -> T? {
        skipWhitespace()
        if peek == UInt8(ascii: "n") {
            try literal("null", path: path)
            return nil
        }
        return try body(&self)
    }

    /// An object whose values are scalars (an entity row, the request context).
    private mutating func scalars(path: String) throws(FeatureRequestError) -> [String: JSONScalar] {
        skipWhitespace()
        guard peek == UInt8(ascii: "{") else { throw .invalid(path, "field '\(path)' has the wrong type: expected an object such as {\"driver_id\": 1001}") }
        var values: [String: JSONScalar] = [:]
        try object(path: path, depth: 1) { parser, key throws(FeatureRequestError) in
            values[key] = try parser.scalar(path: "\(path).\(key)")
        }
        return values
    }

    private mutating func scalar(path: String) throws(FeatureRequestError) -> JSONScalar {
        skipWhitespace()
        guard let byte = peek else { throw syntax(path, "expected a value") }
        switch byte {
        case UInt8(ascii: "\""): return .string(try string(path: path))
        case UInt8(ascii: "t"):
            try literal("true", path: path)
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false", path: path)
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null", path: path)
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number(path: path)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            throw .invalid(path, "field '\(path)' has the wrong type: expected a number, a string, true, false or null")
        default: throw syntax(path, "expected a value")
        }
    }

    // MARK: Tokens

    private var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func expect(_ byte: UInt8, path: String, what: String) throws(FeatureRequestError) {
        guard peek == byte else { throw syntax(path, "expected \(what)") }
        index += 1
    }

    private mutating func literal(_ text: StaticString, path: String) throws(FeatureRequestError) {
        let count = text.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw syntax(path, "expected a value") }
        let matches = text.withUTF8Buffer { expected in (0..<count).allSatisfy { bytes[index + $0] == expected[$0] } }
        guard matches else { throw syntax(path, "expected a value") }
        index += count
    }

    private mutating func string(path: String) throws(FeatureRequestError) -> String {
        guard peek == UInt8(ascii: "\"") else { throw .invalid(path, "field '\(path)' has the wrong type: expected a string") }
        index += 1
        let start = index
        // The common case: no escapes, so the bytes are the string.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                index += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            guard byte >= 0x20 else { throw syntax(path, "a control character inside a string") }
            index += 1
        }
        var text = Array(bytes[start..<index])
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: text, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard let escaped = peek else { throw syntax(path, "the string is not closed") }
                index += 1
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): text.append(escaped)
                case UInt8(ascii: "b"): text.append(0x08)
                case UInt8(ascii: "f"): text.append(0x0C)
                case UInt8(ascii: "n"): text.append(0x0A)
                case UInt8(ascii: "r"): text.append(0x0D)
                case UInt8(ascii: "t"): text.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4(path: path)
                    if (0xD800..<0xDC00).contains(scalar) {
                        // A high surrogate must be followed by a low one.
                        guard peek == UInt8(ascii: "\\"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "u") else {
                            throw syntax(path, "a lone surrogate in a \\u escape")
                        }
                        index += 2
                        let low = try hex4(path: path)
                        guard (0xDC00..<0xE000).contains(low) else { throw syntax(path, "a lone surrogate in a \\u escape") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(scalar) {
                        throw syntax(path, "a lone surrogate in a \\u escape")
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { throw syntax(path, "an invalid \\u escape") }
                    text.append(contentsOf: String(Character(unicode)).utf8)
                default:
                    throw syntax(path, "an invalid escape in a string")
                }
            default:
                guard byte >= 0x20 else { throw syntax(path, "a control character inside a string") }
                text.append(byte)
            }
        }
        throw syntax(path, "the string is not closed")
    }

    private mutating func hex4(path: String) throws(FeatureRequestError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw syntax(path, "an invalid \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw syntax(path, "an invalid \\u escape")
            }
            value = value << 4 | UInt32(digit)
            index += 1
        }
        return value
    }

    /// A JSON number: an integer when it has no fraction or exponent and fits
    /// 64 bits, a double otherwise.
    private mutating func number(path: String) throws(FeatureRequestError) -> JSONScalar {
        let start = index
        if peek == UInt8(ascii: "-") { index += 1 }
        guard let first = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { throw syntax(path, "an invalid number") }
        if first == UInt8(ascii: "0") {
            index += 1
        } else {
            while let byte = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { index += 1 }
        }
        var integral = true
        if peek == UInt8(ascii: ".") {
            integral = false
            index += 1
            guard let byte = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { throw syntax(path, "an invalid number") }
            while let byte = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { index += 1 }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            integral = false
            index += 1
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { index += 1 }
            guard let byte = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { throw syntax(path, "an invalid number") }
            while let byte = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { index += 1 }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        if integral, let value = Int64(text) { return .int(value) }
        guard let value = Double(text), value.isFinite else { throw .invalid(path, "field '\(path)': \(text) is out of range") }
        return .double(value)
    }

    private func syntax(_ path: String, _ detail: String) -> FeatureRequestError {
        .invalid(path, "the body is not valid JSON at byte \(index): \(detail)")
    }
}

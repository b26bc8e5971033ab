import Foundation
import Testing
import TestSupport
@testable import Shared

@Suite("Canonical JSON")
struct CanonicalJSONTests {
    @Test("keys are sorted by UTF-16 code units, with no whitespace")
    func ordering() {
        let value: JSONValue = .object(["b": .integer(1), "a": .array([.null, .bool(true)]), "B": .string("x"), "a_10": .integer(2), "a_9": .integer(3)])
        #expect(value.canonicalString == #"{"B":"x","a":[null,true],"a_10":2,"a_9":3,"b":1}"#)
    }

    @Test("strings escape only quotes, backslashes and control characters")
    func escaping() {
        #expect(JSONValue.string("a\"b\\c/d\n\t\u{01}é🚀").canonicalString == #""a\"b\\c/d\n\t\u0001é🚀""#)
    }

    /// Random JSON trees, to check that the canonical text is JSON that reads back as the same value.
    static func randomValue(_ generator: inout SeededGenerator, depth: Int = 0) -> JSONValue {
        switch Int.random(in: 0...(depth > 3 ? 3 : 5), using: &generator) {
        case 0: return .null
        case 1: return .bool(Bool.random(using: &generator))
        case 2: return .integer(Int64.random(in: Int64.min...Int64.max, using: &generator))
        case 3:
            let alphabet = Array("aZ0 _\"\\\n\t\u{7}é漢🚀/")
            return .string(String((0..<Int.random(in: 0...8, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }))
        case 4: return .array((0..<Int.random(in: 0...4, using: &generator)).map { _ in randomValue(&generator, depth: depth + 1) })
        default:
            var members: [String: JSONValue] = [:]
            for _ in 0..<Int.random(in: 0...4, using: &generator) {
                guard case .string(let key) = randomValue(&generator, depth: 9) else { continue }
                members[key] = randomValue(&generator, depth: depth + 1)
            }
            return .object(members)
        }
    }

    @Test("the canonical text parses back to the same value, and equal values give equal text", arguments: Array(UInt64(1)...200))
    func roundTrip(seed: UInt64) throws {
        var generator = SeededGenerator(seed: seed)
        let value = Self.randomValue(&generator)
        let decoded = try JSONDecoder().decode(JSONValue.self, from: value.canonicalData)
        #expect(decoded == value)
        #expect(decoded.canonicalString == value.canonicalString)
    }
}

import DataPlane
import Foundation
import Testing
import TestSupport

/// The feature server's hand-written reader of request bodies, against
/// Foundation's JSON on random requests, and on broken text.
@Suite("Feature request bodies")
struct FeatureRequestParserTests {
    static let names = ["driver_id", "customer_id", "trip_distance_km", "é\"quoted\"", "tab\there", "emoji 🚕", "back\\slash", "line\nbreak"]

    static func randomScalar(using random: inout SeededGenerator) -> JSONScalar {
        switch Int.random(in: 0..<6, using: &random) {
        case 0: return .null
        case 1: return .bool(Bool.random(using: &random))
        case 2: return .int(Int64.random(in: Int64.min...Int64.max, using: &random))
        case 3: return .double(Double(Int.random(in: -1_000_000...1_000_000, using: &random)) / 64)
        case 4: return .int(Int64.random(in: -5...5, using: &random))
        default: return .string(names.randomElement(using: &random)! + String(Int.random(in: 0...99, using: &random)))
        }
    }

    static func object(_ values: [String: JSONScalar]) -> [String: Any] {
        values.mapValues { value -> Any in
            switch value {
            case .null: return NSNull()
            case .bool(let flag): return flag
            case .int(let number): return NSNumber(value: number)
            case .double(let number): return NSNumber(value: number)
            case .string(let text): return text
            }
        }
    }

    @Test("random requests written by Foundation (escapes, unicode, spacing) read back the same", arguments: Array(1...20) as [UInt64])
    func roundTrip(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        for _ in 0..<25 {
            var request = OnlineFeatureRequest(entities: [])
            if Bool.random(using: &random) {
                request.featureService = Self.names.randomElement(using: &random)!
            } else {
                request.features = (0..<Int.random(in: 0...4, using: &random)).map { _ in Self.names.randomElement(using: &random)! + ":f" }
            }
            request.entities = (0..<Int.random(in: 0...6, using: &random)).map { _ in
                Dictionary((0..<Int.random(in: 0...3, using: &random)).map { _ in (Self.names.randomElement(using: &random)!, Self.randomScalar(using: &random)) },
                           uniquingKeysWith: { _, last in last })
            }
            if Bool.random(using: &random) { request.requestContext = ["trip_distance_km": Self.randomScalar(using: &random)] }
            var json: [String: Any] = ["entities": request.entities.map(Self.object)]
            if let service = request.featureService { json["feature_service"] = service }
            if let features = request.features { json["features"] = features }
            if let context = request.requestContext { json["request_context"] = Self.object(context) }
            let options: JSONSerialization.WritingOptions = Bool.random(using: &random) ? [.prettyPrinted] : []
            let data = try JSONSerialization.data(withJSONObject: json, options: options)
            let parsed = try OnlineFeatureRequest(json: data)
            #expect(parsed.featureService == request.featureService && parsed.features == request.features)
            #expect(parsed.entities.count == request.entities.count)
            for (read, written) in zip(parsed.entities, request.entities) {
                #expect(read.keys.sorted() == written.keys.sorted())
                for (key, value) in written {
                    switch (read[key], value) {
                    // Foundation writes doubles that are whole numbers without a fraction: they read back as integers.
                    case (.int(let integer)?, .double(let number)): #expect(Double(integer) == number)
                    case (let got, let expected): #expect(got == expected, "\(key)")
                    }
                }
            }
        }
    }

    @Test("escapes and numbers as RFC 8259 writes them")
    func escapes() throws {
        let text = #"{"features":["a\"b","\u00e9\ud83d\ude95\n\/"],"entities":[{"k":-0,"x":1.5e2,"y":-2E-1,"z":9223372036854775807,"w":9223372036854775808}]}"#
        let parsed = try OnlineFeatureRequest(json: Array(text.utf8))
        #expect(parsed.features == ["a\"b", "é🚕\n/"])
        #expect(parsed.entities[0] == ["k": .int(0), "x": .double(150), "y": .double(-0.2), "z": .int(Int64.max), "w": .double(9223372036854775808)])
    }

    @Test("broken text and wrong shapes: a 400 naming the field, never a crash; random cuts and byte flips of valid bodies either read or fail cleanly",
          arguments: Array(1...10) as [UInt64])
    func broken(seed: UInt64) throws {
        func field(_ text: String) -> String? {
            do { _ = try OnlineFeatureRequest(json: Array(text.utf8)) } catch { return error.field }
            return nil
        }
        #expect(field(#"{"entities":[{"driver_id":[1]}]}"#) == "entities[0].driver_id")
        #expect(field(#"{"entities":{"driver_id":1}}"#) == "entities")
        #expect(field(#"{"entities":[1]}"#) == "entities[0]")
        #expect(field(#"{"entity":[]}"#) == "entity")
        #expect(field(#"{"features":"a","entities":[]}"#) == "features")
        #expect(field(#"{"features":["a"]}"#) == "entities")
        #expect(field(#"{"entities":[{"a":01}]}"#) != nil)
        #expect(field(#"{"entities":[{"a":"\ud800"}]}"#) != nil)
        #expect(field(#"{"entities":[]} x"#) != nil)
        #expect(field("") != nil)
        // Past the limit, reading stops at once with 413.
        let many = "{\"entities\":[" + Array(repeating: "{}", count: 11).joined(separator: ",") + "]}"
        do {
            _ = try OnlineFeatureRequest(json: Array(many.utf8), limit: 10)
            Issue.record("11 entities passed a limit of 10")
        } catch {
            #expect(error.kind == .tooManyEntities && error.field == "entities")
        }
        #expect(try JSONScalar.pushRows(json: Array(#"{"rows":[{},{}]}"#.utf8), limit: 2).count == 2)
        #expect((try? JSONScalar.pushRows(json: Array(#"{"rows":[{},{},{}]}"#.utf8), limit: 2)) == nil)
        var random = SeededGenerator(seed: seed)
        let valid = Array(#"{"feature_service":"driver_ranking","entities":[{"driver_id":1001,"trip_distance_km":3.5},{"driver_id":-7,"name":"a\"b\u00e9"}],"request_context":{"x":null,"y":true}}"#.utf8)
        for _ in 0..<300 {
            var bytes = valid
            switch Int.random(in: 0..<3, using: &random) {
            case 0: bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &random)))
            case 1: bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
            default: bytes.insert(UInt8.random(in: 0...255, using: &random), at: Int.random(in: 0...bytes.count, using: &random))
            }
            _ = try? OnlineFeatureRequest(json: bytes)
        }
    }
}

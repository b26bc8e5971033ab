import Foundation
import Shared
import Testing
import TestSupport

@Suite("On-demand expressions: parsing, type checking, evaluation")
struct ExpressionTests {
    static let inputs: [ExpressionInput] = [
        ExpressionInput(name: "fare_mean_7d", view: "driver_trip_aggregates", type: .float64),
        ExpressionInput(name: "trips_1d", view: "driver_trip_aggregates", type: .int64),
        ExpressionInput(name: "conv_rate", view: "driver_hourly_stats", type: .float64),
        ExpressionInput(name: "rate", view: "a", type: .float64),
        ExpressionInput(name: "rate", view: "b", type: .float64),
        ExpressionInput(name: "city", view: nil, type: .string),
        ExpressionInput(name: "trip_distance_km", view: nil, type: .float64),
        ExpressionInput(name: "active", view: nil, type: .bool),
        ExpressionInput(name: "seen_at", view: nil, type: .timestamp),
    ]

    /// Evaluates `text` over the given values (by input name; others null).
    static func evaluate(_ text: String, _ output: ValueType = .float64, _ values: [String: FeatureValue] = [:]) throws -> FeatureValue {
        let compiled = try CompiledExpression.compile(text, inputs: inputs, output: output)
        return compiled.evaluate(inputs.map { input in values[input.view.map { "\($0).\(input.name)" } ?? input.name] ?? values[input.name] ?? .null })
    }

    static func error(_ text: String, _ output: ValueType = .float64) -> ExpressionError? {
        do {
            _ = try CompiledExpression.compile(text, inputs: inputs, output: output)
            return nil
        } catch {
            return error
        }
    }

    @Test("arithmetic follows precedence; int64 stays int64 except through '/'; overflow and division by zero are null")
    func arithmetic() throws {
        #expect(try Self.evaluate("1 + 2 * 3", .int64) == .int(7))
        #expect(try Self.evaluate("(1 + 2) * 3", .int64) == .int(9))
        #expect(try Self.evaluate("7 % 3 - -2", .int64) == .int(3))
        #expect(try Self.evaluate("7 / 2") == .double(3.5))
        #expect(try Self.evaluate("trips_1d * 2", .float64, ["trips_1d": .int(21)]) == .double(42))
        #expect(try Self.evaluate("9223372036854775807 + 1", .int64) == .null)
        #expect(try Self.evaluate("1 / 0") == .null)
        #expect(try Self.evaluate("5 % 0", .int64) == .null)
        #expect(try Self.evaluate("sqrt(-1)") == .null)
        #expect(try Self.evaluate("trip_distance_km * fare_mean_7d", .float64, ["trip_distance_km": .double(2.5), "fare_mean_7d": .double(4)]) == .double(10))
        #expect(try Self.evaluate("1.5e1 + .5") == .double(15.5))
    }

    @Test("null propagates, except through and/or (Kleene), is_null, coalesce and if")
    func nulls() throws {
        #expect(try Self.evaluate("fare_mean_7d + 1") == .null)
        #expect(try Self.evaluate("fare_mean_7d > 1", .bool) == .null)
        #expect(try Self.evaluate("active and false", .bool) == .bool(false))
        #expect(try Self.evaluate("false and active", .bool) == .bool(false))
        #expect(try Self.evaluate("active or true", .bool) == .bool(true))
        #expect(try Self.evaluate("active and true", .bool) == .null)
        #expect(try Self.evaluate("not active", .bool) == .null)
        #expect(try Self.evaluate("is_null(fare_mean_7d)", .bool) == .bool(true))
        #expect(try Self.evaluate("coalesce(fare_mean_7d, trips_1d, 3)", .float64, ["trips_1d": .int(2)]) == .double(2))
        #expect(try Self.evaluate("if(active, 1, 2.5)") == .double(2.5))
        #expect(try Self.evaluate("if(trip_distance_km > 3, 'far', 'near')", .string, ["trip_distance_km": .double(4)]) == .string("far"))
        #expect(try Self.evaluate("null", .int64) == .null)
    }

    @Test("comparisons of numbers, strings, bools and timestamps; logic with words or symbols")
    func comparisons() throws {
        #expect(try Self.evaluate("trips_1d == 3.0", .bool, ["trips_1d": .int(3)]) == .bool(true))
        #expect(try Self.evaluate("city != 'Lisbon' && city >= \"B\"", .bool, ["city": .string("Berlin")]) == .bool(true))
        #expect(try Self.evaluate("active == true || !active", .bool, ["active": .bool(false)]) == .bool(true))
        #expect(try Self.evaluate("seen_at < seen_at", .bool, ["seen_at": .timestamp(5)]) == .bool(false))
        #expect(try Self.evaluate("not (1 < 2) or 2 <= 2", .bool) == .bool(true))
    }

    @Test("functions: math, min/max, conversions, strings")
    func functions() throws {
        #expect(try Self.evaluate("abs(-3)", .int64) == .int(3))
        #expect(try Self.evaluate("max(1, 2.5, -1)") == .double(2.5))
        #expect(try Self.evaluate("min(3, 1, 2)", .int64) == .int(1))
        #expect(try Self.evaluate("round(2.346, 2)") == .double(2.35))
        #expect(try Self.evaluate("floor(-1.5) + ceil(1.2) + round(2.5)") == .double(3))
        #expect(try Self.evaluate("pow(2, 10)") == .double(1024))
        #expect(try Self.evaluate("int(-2.9) + int('40')", .int64) == .int(38))
        #expect(try Self.evaluate("float('1.5') + float(true)") == .double(2.5))
        #expect(try Self.evaluate("concat(upper(city), '-', string(trips_1d))", .string, ["city": .string("lisbon"), "trips_1d": .int(4)]) == .string("LISBON-4"))
        #expect(try Self.evaluate("length(trim('  ab ')) + length('é')", .int64) == .int(3))
        #expect(try Self.evaluate("substr('feature', 2, 3)", .string) == .string("atu"))
        #expect(try Self.evaluate("substr('feature', 5)", .string) == .string("re"))
        #expect(try Self.evaluate("substr('feature', 50, 3)", .string) == .string(""))
        #expect(try Self.evaluate("contains(city, 'sb') and starts_with(city, 'li') and ends_with(city, 'on')", .bool, ["city": .string("lisbon")]) == .bool(true))
        #expect(try Self.evaluate("epoch_seconds(seen_at)", .float64, ["seen_at": .timestamp(1_500_000)]) == .double(1.5))
    }

    @Test("the haversine distance between a driver's last location and the request's pickup")
    func haversine() throws {
        let inputs = [
            ExpressionInput(name: "last_lat", view: "driver_locations", type: .float64),
            ExpressionInput(name: "last_lon", view: "driver_locations", type: .float64),
            ExpressionInput(name: "pickup_lat", view: nil, type: .float64),
            ExpressionInput(name: "pickup_lon", view: nil, type: .float64),
        ]
        let text = """
            2 * 6371 * asin(sqrt(pow(sin(radians(pickup_lat - last_lat) / 2), 2) + \
            cos(radians(last_lat)) * cos(radians(pickup_lat)) * pow(sin(radians(pickup_lon - last_lon) / 2), 2)))
            """
        let compiled = try CompiledExpression.compile(text, inputs: inputs, output: .float64)
        // Lisbon to Porto: about 274 km.
        let (lat1, lon1, lat2, lon2) = (38.7223, -9.1393, 41.1579, -8.6291)
        func radians(_ degrees: Double) -> Double { degrees * .pi / 180 }
        let a = pow(sin(radians(lat2 - lat1) / 2), 2) + cos(radians(lat1)) * cos(radians(lat2)) * pow(sin(radians(lon2 - lon1) / 2), 2)
        let expected = 2 * 6371 * asin(sqrt(a))
        let value = compiled.evaluate([.double(lat1), .double(lon1), .double(lat2), .double(lon2)])
        #expect(value == .double(expected))
        #expect(abs(expected - 274) < 2)
        #expect(compiled.evaluate([.null, .double(lon1), .double(lat2), .double(lon2)]) == .null)
        #expect(compiled.used == [0, 1, 2, 3])
    }

    @Test("names: qualified when two views share a feature name; unknown names and functions suggest the closest")
    func names() throws {
        #expect(try Self.evaluate("a.rate - b.rate", .float64, ["a.rate": .double(3), "b.rate": .double(1)]) == .double(2))
        #expect(Self.error("rate * 2") == ExpressionError(offset: 0, "'rate' is ambiguous: write one of a.rate, b.rate"))
        #expect(Self.error("fare_mean_7 * 2")?.message.contains("did you mean 'fare_mean_7d'?") == true)
        #expect(Self.error("1 + sqr(4)") == ExpressionError(offset: 4, "no function named sqr(…); did you mean sqrt(…)?"))
        #expect(Self.error("1 + c.rate")?.offset == 4)
    }

    @Test("errors point at the character to blame")
    func errors() {
        #expect(Self.error("city * 2") == ExpressionError(offset: 5, "'*' needs numbers, not string"))
        #expect(Self.error("city + 'x'", .string)?.message == "'+' needs numbers, not string; join strings with concat(…)")
        #expect(Self.error("(1 + 2") == ExpressionError(offset: 6, "expected ')' to close the '(' at character 1"))
        #expect(Self.error("1 < 2 < 3", .bool)?.offset == 6)
        #expect(Self.error("trips_1d = 3", .bool)?.offset == 9)
        #expect(Self.error("1 +", .int64) == ExpressionError(offset: 3, "the expression ends where a value is expected"))
        #expect(Self.error("sqrt(1, 2)")?.message == "sqrt(…) takes 1 argument, not 2")
        #expect(Self.error("sqrt(city)") == ExpressionError(offset: 5, "argument 1 of sqrt(…) must be a number, not string"))
        #expect(Self.error("fare_mean_7d * 2", .int64)?.message.contains("the output is int64; convert with int(…)") == true)
        #expect(Self.error("city", .bool)?.message == "the expression gives string, but the output is bool")
        #expect(Self.error("'open") == ExpressionError(offset: 0, "the string is not closed"))
        #expect(Self.error("1 2")?.offset == 2)
        #expect(Self.error("") == ExpressionError(offset: 0, "the expression is empty"))
        #expect(Self.error("if(city, 1, 2)")?.offset == 3)
        #expect(Self.error("if(active, 1, 'x')")?.message == "if(…) cannot mix int64 and string")
        #expect(Self.error(String(repeating: "(", count: 70) + "1" + String(repeating: ")", count: 70))?.message.contains("nests deeper than 64") == true)
        #expect(Self.error(String(repeating: "1+", count: 2_100) + "1")?.message.contains("longer than 4096") == true)
    }

    @Test("any text either compiles or fails with an offset inside it; compiled ones evaluate without trapping", arguments: Array(1...20) as [UInt64])
    func randomText(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        let pieces = ["1", "2.5", "-", "+", "*", "/", "%", "(", ")", ",", "'s'", "trips_1d", "fare_mean_7d", "city", "active", "a.rate", "null",
                      "true", "and", "or", "not", "==", "<", ">=", "if", "sqrt", "min", "concat", "coalesce", "int", " ", "9223372036854775807", "."]
        for _ in 0..<200 {
            let text = (0..<Int.random(in: 1...12, using: &random)).map { _ in pieces.randomElement(using: &random)! }.joined(separator: " ")
            for output in [ValueType.float64, .int64, .bool, .string] {
                do {
                    let compiled = try CompiledExpression.compile(text, inputs: Self.inputs, output: output)
                    let values: [FeatureValue] = Self.inputs.map { input in
                        guard Bool.random(using: &random) else { return .null }
                        switch input.type {
                        case .int64: return .int(Int64.random(in: -3...3, using: &random))
                        case .float64: return .double(Double.random(in: -2...2, using: &random))
                        case .bool: return .bool(Bool.random(using: &random))
                        case .timestamp: return .timestamp(Int64.random(in: 0...1_000, using: &random))
                        default: return .string(["", "a", "Lisbon"].randomElement(using: &random)!)
                        }
                    }
                    let value = compiled.evaluate(values)
                    switch (value, output) {
                    case (.null, _), (.double, .float64), (.int, .int64), (.bool, .bool), (.string, .string): break
                    default: Issue.record("'\(text)' as \(output) gave \(value)")
                    }
                } catch {
                    #expect((0...text.count).contains(error.offset), "'\(text)': \(error)")
                }
            }
        }
    }

    /// A random integer expression tree and its value by a separate, direct computation.
    indirect enum IntegerTree {
        case number(Int64)
        case input
        case operation(String, IntegerTree, IntegerTree)

        static func generate(depth: Int, using random: inout SeededGenerator) -> IntegerTree {
            if depth == 0 || Int.random(in: 0..<4, using: &random) == 0 {
                return Bool.random(using: &random) ? .input : .number(Int64.random(in: -50...50, using: &random))
            }
            let symbol = ["+", "-", "*", "%"].randomElement(using: &random)!
            return .operation(symbol, generate(depth: depth - 1, using: &random), generate(depth: depth - 1, using: &random))
        }

        /// The text, with no more parentheses than precedence needs on the right side.
        var text: String {
            switch self {
            case .number(let value): return value < 0 ? "(\(value))" : "\(value)"
            case .input: return "trips_1d"
            case .operation(let symbol, let left, let right): return "(\(left.text) \(symbol) \(right.text))"
            }
        }

        func value(input: Int64?) -> Int64? {
            switch self {
            case .number(let value): return value
            case .input: return input
            case .operation(let symbol, let left, let right):
                guard let a = left.value(input: input), let b = right.value(input: input) else { return nil }
                switch symbol {
                case "+": let (r, o) = a.addingReportingOverflow(b); return o ? nil : r
                case "-": let (r, o) = a.subtractingReportingOverflow(b); return o ? nil : r
                case "*": let (r, o) = a.multipliedReportingOverflow(by: b); return o ? nil : r
                default:
                    guard b != 0 else { return nil }
                    let (r, o) = a.remainderReportingOverflow(dividingBy: b)
                    return o ? nil : r
                }
            }
        }
    }

    @Test("random integer expressions agree with a direct computation, nulls and overflows included", arguments: Array(1...20) as [UInt64])
    func randomIntegerTrees(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        for _ in 0..<100 {
            let tree = IntegerTree.generate(depth: 6, using: &random)
            let compiled = try CompiledExpression.compile(tree.text, inputs: Self.inputs, output: .int64)
            for input in [nil, Int64(0), 7, -3, Int64.max / 3] as [Int64?] {
                let values = Self.inputs.map { $0.name == "trips_1d" ? input.map(FeatureValue.int) ?? .null : FeatureValue.null }
                #expect(compiled.evaluate(values) == (tree.value(input: input).map(FeatureValue.int) ?? .null), "\(tree.text) with \(String(describing: input))")
            }
        }
    }
}

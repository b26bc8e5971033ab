import Foundation

/// The functions expressions may call. Each checks its arguments' types when
/// the expression is compiled; a null argument gives null, except where said.
///
/// - Math (float64 result; int64 arguments widen): `sqrt`, `log` (natural),
///   `log10`, `exp`, `pow(x, y)`, `sin`, `cos`, `tan`, `asin`, `acos`, `atan`,
///   `atan2(y, x)`, `radians`, `degrees`, `floor`, `ceil`, `round(x)` and
///   `round(x, digits)`.
/// - `abs(x)`, `min(a, b, …)`, `max(a, b, …)`: of numbers (int64 when all are)
///   or of timestamps.
/// - Conversions: `int(x)` (float64 truncated toward zero, a string parsed,
///   a bool as 0 or 1), `float(x)`, `string(x)`; `epoch_seconds(t)` of a timestamp.
/// - Strings: `length`, `lower`, `upper`, `trim`, `concat(a, b, …)`,
///   `contains(s, part)`, `starts_with(s, prefix)`, `ends_with(s, suffix)`,
///   `substr(s, start)` and `substr(s, start, length)` (by characters, from 0).
/// - Nulls and choices: `is_null(x)` (never null), `coalesce(a, b, …)` (the
///   first that is not null), `if(condition, then, else)` (a null condition
///   takes the else branch).
public enum ExpressionFunctions {
    typealias Compiled = (ExpressionType, ExpressionEvaluation)

    /// Every function name, for suggestions and documentation.
    public static let names: [String] = [
        "abs", "acos", "asin", "atan", "atan2", "ceil", "coalesce", "concat", "contains", "cos", "degrees", "ends_with",
        "epoch_seconds", "exp", "float", "floor", "if", "int", "is_null", "length", "log", "log10", "lower", "max", "min",
        "pow", "radians", "round", "sin", "sqrt", "starts_with", "string", "substr", "tan", "trim", "upper",
    ]

    static func call(_ name: String, _ arguments: [Compiled], offsets: [Int], offset: Int) throws(ExpressionError) -> Compiled {
        let types = arguments.map(\.0), values = arguments.map(\.1)
        func count(_ allowed: ClosedRange<Int>) throws(ExpressionError) {
            guard allowed.contains(arguments.count) else {
                let expected = allowed.lowerBound == allowed.upperBound ? "\(allowed.lowerBound)" : (allowed.upperBound == .max ? "at least \(allowed.lowerBound)" : "\(allowed.lowerBound) or \(allowed.upperBound)")
                throw ExpressionError(offset: offset, "\(name)(…) takes \(expected) argument\(allowed.lowerBound == 1 && allowed.upperBound == 1 ? "" : "s"), not \(arguments.count)")
            }
        }
        func require(_ index: Int, _ accepted: Set<ExpressionType>, _ what: String) throws(ExpressionError) {
            guard accepted.contains(types[index]) || types[index] == .null else {
                throw ExpressionError(offset: offsets[index], "argument \(index + 1) of \(name)(…) must be \(what), not \(types[index])")
            }
        }
        let numbers: Set<ExpressionType> = [.int, .float]
        switch name {
        case "sqrt", "log", "log10", "exp", "sin", "cos", "tan", "asin", "acos", "atan", "radians", "degrees", "floor", "ceil":
            try count(1...1)
            try require(0, numbers, "a number")
            let function = mathFunction(name), argument = values[0]
            return (.float, { row in argument(row).asDouble.map { finite(function($0)) } ?? .null })
        case "pow", "atan2":
            try count(2...2)
            try require(0, numbers, "a number")
            try require(1, numbers, "a number")
            let function: @Sendable (Double, Double) -> Double
            if name == "pow" { function = { (x: Double, y: Double) in pow(x, y) } } else { function = { (y: Double, x: Double) in atan2(y, x) } }
            let first = values[0], second = values[1]
            return (.float, { row in
                guard let a = first(row).asDouble, let b = second(row).asDouble else { return .null }
                return finite(function(a, b))
            })
        case "round":
            try count(1...2)
            try require(0, numbers, "a number")
            let argument = values[0]
            if arguments.count == 1 { return (.float, { row in argument(row).asDouble.map { finite($0.rounded()) } ?? .null }) }
            try require(1, [.int], "an int64 number of digits")
            let digits = values[1]
            return (.float, { row in
                guard let value = argument(row).asDouble, case .int(let places) = digits(row) else { return .null }
                let scale = pow(10.0, Double(Swift.max(-30, Swift.min(30, places))))
                return finite((value * scale).rounded() / scale)
            })
        case "abs":
            try count(1...1)
            try require(0, numbers, "a number")
            let argument = values[0]
            return (types[0] == .float ? .float : .int, { row in
                switch argument(row) {
                case .int(let value): return value == .min ? .null : .int(Swift.abs(value))
                case .double(let value): return .double(Swift.abs(value))
                default: return .null
                }
            })
        case "min", "max":
            try count(2...Int.max)
            var common: ExpressionType = .null
            for index in types.indices {
                try require(index, [.int, .float, .timestamp], "a number or a timestamp")
                guard let next = common.unified(with: types[index]) else {
                    throw ExpressionError(offset: offsets[index], "\(name)(…) cannot mix \(common) and \(types[index])")
                }
                common = next
            }
            let wantsLess = name == "min", widen = common == .float
            return (common, { row in
                var best: FeatureValue?
                for value in values {
                    let current = value(row)
                    if case .null = current { return .null }
                    guard let kept = best, let order = ExpressionOperators.order(current, kept) else { best = current; continue }
                    if wantsLess ? order < 0 : order > 0 { best = current }
                }
                guard let best else { return .null }
                if widen, case .int(let integer) = best { return .double(Double(integer)) }
                return best
            })
        case "int":
            try count(1...1)
            try require(0, [.int, .float, .string, .bool], "a number, a string or a bool")
            let argument = values[0]
            return (.int, { row in
                switch argument(row) {
                case .int(let value): return .int(value)
                case .double(let value):
                    guard value.isFinite, let integer = Int64(exactly: value.rounded(.towardZero)) else { return .null }
                    return .int(integer)
                case .string(let text): return Int64(text.trimmingCharacters(in: .whitespaces)).map(FeatureValue.int) ?? .null
                case .bool(let flag): return .int(flag ? 1 : 0)
                default: return .null
                }
            })
        case "float":
            try count(1...1)
            try require(0, [.int, .float, .string, .bool], "a number, a string or a bool")
            let argument = values[0]
            return (.float, { row in
                switch argument(row) {
                case .string(let text): return Double(text.trimmingCharacters(in: .whitespaces)).map(finite) ?? .null
                case .bool(let flag): return .double(flag ? 1 : 0)
                case let value: return value.asDouble.map(finite) ?? .null
                }
            })
        case "string":
            try count(1...1)
            let argument = values[0]
            return (.string, { row in
                let value = argument(row)
                if case .null = value { return .null }
                return .string(value.description)
            })
        case "epoch_seconds":
            try count(1...1)
            try require(0, [.timestamp], "a timestamp")
            let argument = values[0]
            return (.float, { row in
                guard case .timestamp(let micros) = argument(row) else { return .null }
                return .double(Double(micros) / 1_000_000)
            })
        case "length", "lower", "upper", "trim":
            try count(1...1)
            try require(0, [.string], "a string")
            let argument = values[0]
            let function: @Sendable (String) -> FeatureValue
            switch name {
            case "length": function = { .int(Int64($0.count)) }
            case "lower": function = { bounded($0.lowercased()) }
            case "upper": function = { bounded($0.uppercased()) }
            default: function = { .string($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            }
            return (name == "length" ? .int : .string, { row in
                guard case .string(let text) = argument(row) else { return .null }
                return function(text)
            })
        case "concat":
            try count(1...Int.max)
            for index in types.indices { try require(index, [.string], "a string") }
            return (.string, { row in
                var joined = ""
                for value in values {
                    guard case .string(let text) = value(row) else { return .null }
                    joined += text
                    if joined.utf8.count > ExpressionLimits.maximumStringBytes { return .null }
                }
                return .string(joined)
            })
        case "contains", "starts_with", "ends_with":
            try count(2...2)
            try require(0, [.string], "a string")
            try require(1, [.string], "a string")
            let first = values[0], second = values[1]
            let test: @Sendable (String, String) -> Bool
            switch name {
            case "contains": test = { $1.isEmpty || $0.contains($1) }
            case "starts_with": test = { $0.hasPrefix($1) }
            default: test = { $0.hasSuffix($1) }
            }
            return (.bool, { row in
                guard case .string(let text) = first(row), case .string(let part) = second(row) else { return .null }
                return .bool(test(text, part))
            })
        case "substr":
            try count(2...3)
            try require(0, [.string], "a string")
            try require(1, [.int], "an int64 start")
            if arguments.count == 3 { try require(2, [.int], "an int64 length") }
            let text = values[0], start = values[1], length = arguments.count == 3 ? values[2] : nil
            return (.string, { row in
                guard case .string(let string) = text(row), case .int(let from) = start(row) else { return .null }
                var take = Int64.max
                if let length {
                    guard case .int(let count) = length(row) else { return .null }
                    take = Swift.max(0, count)
                }
                let characters = Int64(string.count)
                let lower = Swift.min(Swift.max(0, from), characters)
                let upper = Swift.min(characters, lower.addingReportingOverflow(take).overflow ? characters : lower + take)
                let startIndex = string.index(string.startIndex, offsetBy: Int(lower))
                let endIndex = string.index(startIndex, offsetBy: Int(upper - lower))
                return .string(String(string[startIndex..<endIndex]))
            })
        case "is_null":
            try count(1...1)
            let argument = values[0]
            return (.bool, { row in
                if case .null = argument(row) { return .bool(true) }
                return .bool(false)
            })
        case "coalesce":
            try count(1...Int.max)
            let common = try unify(types, offsets: offsets, in: name)
            let widen = common == .float
            return (common, { row in
                for value in values {
                    let current = value(row)
                    if case .null = current { continue }
                    if widen, case .int(let integer) = current { return .double(Double(integer)) }
                    return current
                }
                return .null
            })
        case "if":
            try count(3...3)
            try require(0, [.bool], "a bool condition")
            let common = try unify(Array(types[1...]), offsets: Array(offsets[1...]), in: name)
            let widen = common == .float
            let condition = values[0], then = values[1], otherwise = values[2]
            return (common, { row in
                let chosen: FeatureValue
                if case .bool(true) = condition(row) { chosen = then(row) } else { chosen = otherwise(row) }
                if widen, case .int(let integer) = chosen { return .double(Double(integer)) }
                return chosen
            })
        default:
            let hint = SpellingSuggestion.closest(to: name, among: names).map { "; did you mean \($0)(…)?" } ?? ""
            throw ExpressionError(offset: offset, "no function named \(name)(…)\(hint)")
        }
    }

    /// The type all of `types` fit in.
    private static func unify(_ types: [ExpressionType], offsets: [Int], in name: String) throws(ExpressionError) -> ExpressionType {
        var common: ExpressionType = .null
        for (index, type) in types.enumerated() {
            guard let next = common.unified(with: type) else {
                throw ExpressionError(offset: offsets[index], "\(name)(…) cannot mix \(common) and \(type)")
            }
            common = next
        }
        return common
    }

    private static func mathFunction(_ name: String) -> @Sendable (Double) -> Double {
        switch name {
        case "sqrt": return { $0.squareRoot() }
        case "log": return { log($0) }
        case "log10": return { log10($0) }
        case "exp": return { exp($0) }
        case "sin": return { sin($0) }
        case "cos": return { cos($0) }
        case "tan": return { tan($0) }
        case "asin": return { asin($0) }
        case "acos": return { acos($0) }
        case "atan": return { atan($0) }
        case "radians": return { $0 * .pi / 180 }
        case "degrees": return { $0 * 180 / .pi }
        case "floor": return { $0.rounded(.down) }
        default: return { $0.rounded(.up) }   // ceil
        }
    }

    /// A string result, or null past the length limit.
    private static func bounded(_ text: String) -> FeatureValue {
        text.utf8.count > ExpressionLimits.maximumStringBytes ? .null : .string(text)
    }
}

import Foundation

/// A float64 result: null when it is not a finite number.
@inline(__always)
func finite(_ value: Double) -> FeatureValue { value.isFinite ? .double(value) : .null }

extension FeatureValue {
    /// The value as a float64, for ints and floats.
    @inline(__always)
    var asDouble: Double? {
        switch self {
        case .int(let value): return Double(value)
        case .double(let value): return value
        default: return nil
        }
    }
}

/// The operators: type rules at compile time, closures for run time.
enum ExpressionOperators {
    typealias Compiled = (ExpressionType, ExpressionEvaluation)

    static func unary(_ symbol: String, _ type: ExpressionType, _ operand: @escaping ExpressionEvaluation, offset: Int) throws(ExpressionError) -> Compiled {
        switch symbol {
        case "-":
            guard type.isNumeric else { throw ExpressionError(offset: offset, "'-' needs a number, not \(type)") }
            return (type, { values in
                switch operand(values) {
                case .int(let value): return value == .min ? .null : .int(-value)
                case .double(let value): return .double(-value)
                default: return .null
                }
            })
        default:   // not
            guard type == .bool || type == .null else { throw ExpressionError(offset: offset, "'not' needs a bool, not \(type)") }
            return (.bool, { values in
                if case .bool(let value) = operand(values) { return .bool(!value) }
                return .null
            })
        }
    }

    static func binary(_ symbol: String, _ left: Compiled, _ right: Compiled, offset: Int) throws(ExpressionError) -> Compiled {
        let (leftType, leftValue) = left, (rightType, rightValue) = right
        switch symbol {
        case "and", "or":
            for type in [leftType, rightType] where type != .bool && type != .null {
                throw ExpressionError(offset: offset, "'\(symbol)' needs bools on both sides, not \(type)")
            }
            let isAnd = symbol == "and"
            return (.bool, { values in
                // Kleene logic: the left side decides when it can.
                let first = leftValue(values)
                if case .bool(let flag) = first, flag != isAnd { return first }
                let second = rightValue(values)
                if case .bool(let flag) = second, flag != isAnd { return second }
                if case .null = first { return .null }
                if case .null = second { return .null }
                return .bool(isAnd)
            })
        case "==", "!=", "<", "<=", ">", ">=":
            return (.bool, try comparison(symbol, left, right, offset: offset))
        default:
            guard leftType.isNumeric, rightType.isNumeric else {
                let culprit = leftType.isNumeric ? rightType : leftType
                let advice = symbol == "+" && culprit == .string ? "; join strings with concat(…)" : ""
                throw ExpressionError(offset: offset, "'\(symbol)' needs numbers, not \(culprit)\(advice)")
            }
            let integers = leftType != .float && rightType != .float && symbol != "/"
            return (integers ? (leftType == .null && rightType == .null ? .null : .int) : .float,
                    arithmetic(symbol, leftValue, rightValue, integers: integers))
        }
    }

    private static func arithmetic(
        _ symbol: String, _ left: @escaping ExpressionEvaluation, _ right: @escaping ExpressionEvaluation, integers: Bool
    ) -> ExpressionEvaluation {
        if integers {
            let operation: @Sendable (Int64, Int64) -> FeatureValue
            switch symbol {
            case "+": operation = { a, b in let (sum, overflow) = a.addingReportingOverflow(b); return overflow ? .null : .int(sum) }
            case "-": operation = { a, b in let (difference, overflow) = a.subtractingReportingOverflow(b); return overflow ? .null : .int(difference) }
            case "*": operation = { a, b in let (product, overflow) = a.multipliedReportingOverflow(by: b); return overflow ? .null : .int(product) }
            default: operation = { a, b in
                guard b != 0 else { return .null }
                let (remainder, overflow) = a.remainderReportingOverflow(dividingBy: b)
                return overflow ? .null : .int(remainder)
            }
            }
            return { values in
                guard case .int(let a) = left(values), case .int(let b) = right(values) else { return .null }
                return operation(a, b)
            }
        }
        let operation: @Sendable (Double, Double) -> Double
        switch symbol {
        case "+": operation = { $0 + $1 }
        case "-": operation = { $0 - $1 }
        case "*": operation = { $0 * $1 }
        case "/": operation = { $0 / $1 }
        default: operation = { $0.truncatingRemainder(dividingBy: $1) }
        }
        return { values in
            guard let a = left(values).asDouble, let b = right(values).asDouble else { return .null }
            return finite(operation(a, b))
        }
    }

    private static func comparison(_ symbol: String, _ left: Compiled, _ right: Compiled, offset: Int) throws(ExpressionError) -> ExpressionEvaluation {
        let (leftType, leftValue) = left, (rightType, rightValue) = right
        guard let common = leftType.unified(with: rightType) else {
            throw ExpressionError(offset: offset, "cannot compare \(leftType) with \(rightType)")
        }
        if common == .bool, symbol != "==", symbol != "!=" {
            throw ExpressionError(offset: offset, "bools compare only with == and !=")
        }
        let test: @Sendable (Int) -> Bool   // from the ordering: -1, 0, 1
        switch symbol {
        case "==": test = { $0 == 0 }
        case "!=": test = { $0 != 0 }
        case "<": test = { $0 < 0 }
        case "<=": test = { $0 <= 0 }
        case ">": test = { $0 > 0 }
        default: test = { $0 >= 0 }
        }
        return { values in
            guard let order = order(leftValue(values), rightValue(values)) else { return .null }
            return .bool(test(order))
        }
    }

    /// How `a` compares with `b` (-1, 0, 1); nil when either is null (or NaN).
    @inline(__always)
    static func order(_ a: FeatureValue, _ b: FeatureValue) -> Int? {
        switch (a, b) {
        case (.int(let x), .int(let y)), (.timestamp(let x), .timestamp(let y)): return x < y ? -1 : (x == y ? 0 : 1)
        case (.string(let x), .string(let y)): return x < y ? -1 : (x == y ? 0 : 1)
        case (.bool(let x), .bool(let y)): return x == y ? 0 : (x ? 1 : -1)
        default:
            guard let x = a.asDouble, let y = b.asDouble, !x.isNaN, !y.isNaN else { return nil }
            return x < y ? -1 : (x == y ? 0 : 1)
        }
    }
}

import Foundation

/// The types expressions compute with.
public enum ExpressionType: String, Sendable, Hashable, CustomStringConvertible {
    case int = "int64", float = "float64", bool, string, timestamp
    /// The type of the literal `null`, which fits any other.
    case null

    /// The expression type of a declared column type, if expressions can use it.
    public init?(_ type: ValueType) {
        switch type {
        case .int64, .int32: self = .int
        case .float64, .float32: self = .float
        case .bool: self = .bool
        case .string, .bytes: self = .string
        case .timestamp: self = .timestamp
        default: return nil
        }
    }

    public var description: String { rawValue }

    var isNumeric: Bool { self == .int || self == .float || self == .null }

    /// The type both `self` and `other` fit in (int widens to float, null fits any), if any.
    func unified(with other: ExpressionType) -> ExpressionType? {
        if self == other { return self }
        if self == .null { return other }
        if other == .null { return self }
        if isNumeric, other.isNumeric { return .float }
        return nil
    }
}

/// A value an expression may name: an input feature of the on-demand view
/// (with the view it comes from) or a field of the request (no view).
public struct ExpressionInput: Sendable, Hashable {
    /// The feature's or request field's name.
    public var name: String
    /// The view the feature comes from; nil for a request field.
    public var view: String?
    /// Its declared type.
    public var type: ValueType

    /// Creates an input.
    public init(name: String, view: String?, type: ValueType) {
        self.name = name
        self.view = view
        self.type = type
    }
}

/// An on-demand feature's expression, parsed, type-checked and compiled once;
/// evaluated for each entity of each request (online) and each row of a
/// training set (offline), by the same code.
///
/// The language: numbers (`3`, `2.5`, `1e-3`), strings (`'a'` or `"a"`),
/// `true`, `false`, `null`; input names (`fare_mean_7d`, or `view.feature`
/// when two views share a feature name); `+ - * / %`, comparisons
/// `== != < <= > >=`, `and or not` (also `&& || !`), parentheses, and the
/// functions of `ExpressionFunctions`. A null operand makes the result null,
/// except in `and`/`or` (false and null is false, true or null is true),
/// `is_null`, `coalesce` and `if` (a null condition takes the else branch).
/// `/` always divides as float64; a result that is not a finite number
/// (division by zero, `sqrt(-1)`) is null, as is an int64 overflow.
public struct CompiledExpression: Sendable {
    /// The text it was compiled from.
    public let text: String
    /// The type of its values (the output's declared type).
    public let type: ExpressionType
    /// The inputs it was compiled against: `evaluate` takes their values in this order.
    public let inputs: [ExpressionInput]
    /// The positions in `inputs` the expression reads.
    public let used: [Int]
    private let root: ExpressionEvaluation

    init(text: String, type: ExpressionType, inputs: [ExpressionInput], used: [Int], root: @escaping ExpressionEvaluation) {
        self.text = text
        self.type = type
        self.inputs = inputs
        self.used = used
        self.root = root
    }

    /// The value for one row, given the values of `inputs` in order.
    public func evaluate(_ values: [FeatureValue]) -> FeatureValue {
        precondition(values.count == inputs.count, "an expression over \(inputs.count) inputs was given \(values.count) values")
        return root(values)
    }

    /// Parses, checks and compiles `text` over `inputs`, for an output of type `output`.
    public static func compile(_ text: String, inputs: [ExpressionInput], output: ValueType) throws(ExpressionError) -> CompiledExpression {
        let node = try ExpressionParser.parse(text)
        guard let target = ExpressionType(output) else {
            throw ExpressionError(offset: 0, "an on-demand output cannot be of type \(output.rawValue)")
        }
        var compiler = ExpressionCompiler(inputs: inputs)
        let (type, evaluation) = try compiler.compile(node)
        let root: ExpressionEvaluation
        switch (target, type) {
        case (_, _) where type == target || type == .null:
            root = evaluation
        case (.float, .int):
            root = { values in
                if case .int(let value) = evaluation(values) { return .double(Double(value)) }
                return .null
            }
        case (.int, .float):
            throw ExpressionError(offset: node.offset, "the expression gives float64, but the output is int64; convert with int(…), such as int(round(…))")
        default:
            throw ExpressionError(offset: node.offset, "the expression gives \(type), but the output is \(target)")
        }
        return CompiledExpression(text: text, type: target, inputs: inputs, used: compiler.used.sorted(), root: root)
    }
}

/// One compiled step: the value of a node for one row's input values.
typealias ExpressionEvaluation = @Sendable ([FeatureValue]) -> FeatureValue

/// Type-checks a parsed expression and turns each node into a closure.
struct ExpressionCompiler {
    let inputs: [ExpressionInput]
    private(set) var used: Set<Int> = []

    init(inputs: [ExpressionInput]) { self.inputs = inputs }

    mutating func compile(_ node: ExpressionNode) throws(ExpressionError) -> (ExpressionType, ExpressionEvaluation) {
        switch node {
        case .literal(let literal, _):
            let value: FeatureValue, type: ExpressionType
            switch literal {
            case .null: (value, type) = (.null, .null)
            case .int(let number): (value, type) = (.int(number), .int)
            case .float(let number): (value, type) = (.double(number), .float)
            case .bool(let flag): (value, type) = (.bool(flag), .bool)
            case .string(let text): (value, type) = (.string(text), .string)
            }
            return (type, { _ in value })
        case .name(let name, let view, let offset):
            let index = try resolve(name, view: view, offset: offset)
            used.insert(index)
            guard let type = ExpressionType(inputs[index].type) else {
                throw ExpressionError(offset: offset, "'\(name)' is of type \(inputs[index].type.rawValue), which expressions cannot use")
            }
            return (type, { values in values[index] })
        case .unary(let symbol, let operand, let offset):
            let (type, evaluation) = try compile(operand)
            return try ExpressionOperators.unary(symbol, type, evaluation, offset: offset)
        case .binary(let symbol, let left, let right, let offset):
            let (leftType, leftEvaluation) = try compile(left)
            let (rightType, rightEvaluation) = try compile(right)
            return try ExpressionOperators.binary(symbol, (leftType, leftEvaluation), (rightType, rightEvaluation), offset: offset)
        case .call(let name, let arguments, let offset):
            var compiled: [(ExpressionType, ExpressionEvaluation)] = []
            for argument in arguments { compiled.append(try compile(argument)) }
            return try ExpressionFunctions.call(name, compiled, offsets: arguments.map(\.offset), offset: offset)
        }
    }

    private func resolve(_ name: String, view: String?, offset: Int) throws(ExpressionError) -> Int {
        let matches = inputs.indices.filter { inputs[$0].name == name && (view == nil || inputs[$0].view == view) }
        if matches.count == 1 { return matches[0] }
        if matches.count > 1 {
            let views = matches.compactMap { inputs[$0].view }.map { "\($0).\(name)" }
            throw ExpressionError(offset: offset, "'\(name)' is ambiguous: write one of \(views.joined(separator: ", "))")
        }
        let written = view.map { "\($0).\(name)" } ?? name
        let known = inputs.map { input in input.view.map { "\($0).\(input.name)" } ?? input.name } + inputs.filter { $0.view != nil }.map(\.name)
        let hint = SpellingSuggestion.hint(for: written, among: Array(Set(known)).sorted()).map { " (\($0))" } ?? ""
        throw ExpressionError(offset: offset, "no input or request field named '\(written)'\(hint)")
    }
}

/// Why an expression of an on-demand feature is refused: what is wrong and
/// where, as a 0-based character offset into the expression's text.
public struct ExpressionError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The character offset (0-based) the error points at.
    public let offset: Int
    /// What is wrong.
    public let message: String

    /// Creates an error at `offset`.
    public init(offset: Int, _ message: String) {
        self.offset = offset
        self.message = message
    }

    public var description: String { "at character \(offset + 1): \(message)" }
}

/// The limits that keep an expression's cost bounded: no loops or recursion
/// exist in the language, so a parsed expression evaluates in time linear in
/// its size; these bound the size itself and what strings may grow to.
public enum ExpressionLimits {
    /// The longest expression text, in characters.
    public static let maximumLength = 4_096
    /// The deepest nesting of operators, calls and parentheses.
    public static let maximumDepth = 64
    /// The longest string a function may produce, in UTF-8 bytes; a longer result is null.
    public static let maximumStringBytes = 65_536
}

/// One token of an expression, with its offset.
struct ExpressionToken: Equatable {
    enum Kind: Equatable {
        case integer(Int64)
        case number(Double)
        case string(String)
        case identifier(String)
        /// An operator or punctuation: `+ - * / % == != < <= > >= && || ! ( ) , .`
        case symbol(String)
        case end
    }

    let kind: Kind
    let offset: Int
}

/// Cuts an expression's text into tokens.
struct ExpressionLexer {
    private let characters: [Character]
    private var index = 0

    init(_ text: String) { characters = Array(text) }

    mutating func tokens() throws(ExpressionError) -> [ExpressionToken] {
        var tokens: [ExpressionToken] = []
        while true {
            let token = try next()
            tokens.append(token)
            if token.kind == .end { return tokens }
        }
    }

    private mutating func next() throws(ExpressionError) -> ExpressionToken {
        while index < characters.count, characters[index].isWhitespace { index += 1 }
        let start = index
        guard index < characters.count else { return ExpressionToken(kind: .end, offset: start) }
        let character = characters[index]
        if character.isASCII, character.isLetter || character == "_" {
            while index < characters.count, characters[index].isASCII, characters[index].isLetter || characters[index].isNumber || characters[index] == "_" {
                index += 1
            }
            return ExpressionToken(kind: .identifier(String(characters[start..<index])), offset: start)
        }
        if character.isASCII, character.isNumber || (character == "." && index + 1 < characters.count && characters[index + 1].isASCII && characters[index + 1].isNumber) {
            return try number(from: start)
        }
        if character == "\"" || character == "'" { return try string(from: start, quote: character) }
        let pairs = ["==", "!=", "<=", ">=", "&&", "||"]
        if index + 1 < characters.count, pairs.contains(String(characters[index...index + 1])) {
            index += 2
            return ExpressionToken(kind: .symbol(String(characters[start..<index])), offset: start)
        }
        if "+-*/%<>!(),.".contains(character) {
            index += 1
            return ExpressionToken(kind: .symbol(String(character)), offset: start)
        }
        if character == "=" {
            throw ExpressionError(offset: start, "'=' is not an operator; compare with '=='")
        }
        throw ExpressionError(offset: start, "unexpected character '\(character)'")
    }

    private mutating func number(from start: Int) throws(ExpressionError) -> ExpressionToken {
        var isFloat = false
        while index < characters.count, characters[index].isASCII, characters[index].isNumber { index += 1 }
        if index < characters.count, characters[index] == "." {
            isFloat = true
            index += 1
            while index < characters.count, characters[index].isASCII, characters[index].isNumber { index += 1 }
        }
        if index < characters.count, characters[index] == "e" || characters[index] == "E" {
            isFloat = true
            index += 1
            if index < characters.count, characters[index] == "+" || characters[index] == "-" { index += 1 }
            let digits = index
            while index < characters.count, characters[index].isASCII, characters[index].isNumber { index += 1 }
            guard index > digits else { throw ExpressionError(offset: start, "a number's exponent has no digits") }
        }
        if index < characters.count, characters[index].isLetter || characters[index] == "_" {
            throw ExpressionError(offset: start, "a name cannot start with a digit")
        }
        let text = String(characters[start..<index])
        if !isFloat, let value = Int64(text) { return ExpressionToken(kind: .integer(value), offset: start) }
        guard let value = Double(text), value.isFinite else { throw ExpressionError(offset: start, "'\(text)' is not a number this language can hold") }
        return ExpressionToken(kind: .number(value), offset: start)
    }

    private mutating func string(from start: Int, quote: Character) throws(ExpressionError) -> ExpressionToken {
        index += 1
        var value = ""
        while index < characters.count {
            let character = characters[index]
            index += 1
            if character == quote { return ExpressionToken(kind: .string(value), offset: start) }
            if character == "\\" {
                guard index < characters.count else { break }
                let escaped = characters[index]
                index += 1
                switch escaped {
                case "n": value.append("\n")
                case "t": value.append("\t")
                case "\\", "\"", "'": value.append(escaped)
                default: throw ExpressionError(offset: index - 2, "unknown escape '\\\(escaped)' (use \\n, \\t, \\\\, \\' or \\\")")
                }
            } else {
                value.append(character)
            }
        }
        throw ExpressionError(offset: start, "the string is not closed")
    }
}

/// An expression as parsed: a tree of operations, each with the offset it starts at.
indirect enum ExpressionNode: Equatable {
    case literal(ExpressionLiteral, offset: Int)
    /// A name: an input feature (`fare_mean_7d`, or `view.fare_mean_7d`) or a request field.
    case name(String, view: String?, offset: Int)
    case unary(String, ExpressionNode, offset: Int)
    case binary(String, ExpressionNode, ExpressionNode, offset: Int)
    case call(String, [ExpressionNode], offset: Int)

    var offset: Int {
        switch self {
        case .literal(_, let offset), .name(_, _, let offset), .unary(_, _, let offset), .binary(_, _, _, let offset), .call(_, _, let offset):
            return offset
        }
    }
}

/// A constant written in an expression.
enum ExpressionLiteral: Equatable {
    case null
    case int(Int64)
    case float(Double)
    case bool(Bool)
    case string(String)
}

/// Parses tokens by precedence, lowest first: `or`/`||`, `and`/`&&`,
/// `not`/`!`, comparisons, `+ -`, `* / %`, unary `-`, then names, calls,
/// literals and parentheses.
struct ExpressionParser {
    private let tokens: [ExpressionToken]
    private var position = 0
    private var depth = 0

    static func parse(_ text: String) throws(ExpressionError) -> ExpressionNode {
        guard text.count <= ExpressionLimits.maximumLength else {
            throw ExpressionError(offset: ExpressionLimits.maximumLength, "the expression is longer than \(ExpressionLimits.maximumLength) characters")
        }
        var lexer = ExpressionLexer(text)
        var parser = ExpressionParser(tokens: try lexer.tokens())
        guard parser.current.kind != .end else { throw ExpressionError(offset: 0, "the expression is empty") }
        let node = try parser.disjunction()
        guard parser.current.kind == .end else { throw ExpressionError(offset: parser.current.offset, "unexpected \(parser.current.kind.text) after a complete expression") }
        return node
    }

    private init(tokens: [ExpressionToken]) { self.tokens = tokens }

    private var current: ExpressionToken { tokens[position] }

    private mutating func advance() -> ExpressionToken {
        let token = tokens[position]
        if position < tokens.count - 1 { position += 1 }
        return token
    }

    /// Whether the current token is one of `symbols` or keyword `words`; takes it if so.
    private mutating func take(_ symbols: [String], words: [String] = []) -> (text: String, offset: Int)? {
        switch current.kind {
        case .symbol(let symbol) where symbols.contains(symbol):
            return (symbol, advance().offset)
        case .identifier(let word) where words.contains(word):
            return (word, advance().offset)
        default:
            return nil
        }
    }

    private mutating func nested<T>(at offset: Int, _ body: (inout ExpressionParser) throws(ExpressionError) -> T) throws(ExpressionError) -> T {
        depth += 1
        defer { depth -= 1 }
        guard depth <= ExpressionLimits.maximumDepth else {
            throw ExpressionError(offset: offset, "the expression nests deeper than \(ExpressionLimits.maximumDepth) levels")
        }
        return try body(&self)
    }

    private mutating func disjunction() throws(ExpressionError) -> ExpressionNode {
        var left = try conjunction()
        while let found = take(["||"], words: ["or"]) {
            left = .binary("or", left, try conjunction(), offset: found.offset)
        }
        return left
    }

    private mutating func conjunction() throws(ExpressionError) -> ExpressionNode {
        var left = try negation()
        while let found = take(["&&"], words: ["and"]) {
            left = .binary("and", left, try negation(), offset: found.offset)
        }
        return left
    }

    private mutating func negation() throws(ExpressionError) -> ExpressionNode {
        if let found = take(["!"], words: ["not"]) {
            return try nested(at: found.offset) { parser throws(ExpressionError) in .unary("not", try parser.negation(), offset: found.offset) }
        }
        return try comparison()
    }

    private mutating func comparison() throws(ExpressionError) -> ExpressionNode {
        let left = try additive()
        guard let found = take(["==", "!=", "<", "<=", ">", ">="]) else { return left }
        let right = try additive()
        if let second = take(["==", "!=", "<", "<=", ">", ">="]) {
            throw ExpressionError(offset: second.offset, "comparisons do not chain; join them with 'and'")
        }
        return .binary(found.text, left, right, offset: found.offset)
    }

    private mutating func additive() throws(ExpressionError) -> ExpressionNode {
        var left = try multiplicative()
        while let found = take(["+", "-"]) {
            left = .binary(found.text, left, try multiplicative(), offset: found.offset)
        }
        return left
    }

    private mutating func multiplicative() throws(ExpressionError) -> ExpressionNode {
        var left = try unary()
        while let found = take(["*", "/", "%"]) {
            left = .binary(found.text, left, try unary(), offset: found.offset)
        }
        return left
    }

    private mutating func unary() throws(ExpressionError) -> ExpressionNode {
        if let found = take(["-"]) {
            return try nested(at: found.offset) { parser throws(ExpressionError) in .unary("-", try parser.unary(), offset: found.offset) }
        }
        if let found = take(["+"]) {
            return try nested(at: found.offset) { parser throws(ExpressionError) in try parser.unary() }
        }
        return try primary()
    }

    private mutating func primary() throws(ExpressionError) -> ExpressionNode {
        let token = advance()
        switch token.kind {
        case .integer(let value): return .literal(.int(value), offset: token.offset)
        case .number(let value): return .literal(.float(value), offset: token.offset)
        case .string(let value): return .literal(.string(value), offset: token.offset)
        case .symbol("("):
            let inner = try nested(at: token.offset) { parser throws(ExpressionError) in try parser.disjunction() }
            guard take([")"]) != nil else { throw ExpressionError(offset: current.offset, "expected ')' to close the '(' at character \(token.offset + 1)") }
            return inner
        case .identifier(let word):
            switch word {
            case "true": return .literal(.bool(true), offset: token.offset)
            case "false": return .literal(.bool(false), offset: token.offset)
            case "null": return .literal(.null, offset: token.offset)
            case "and", "or", "not": throw ExpressionError(offset: token.offset, "'\(word)' needs a value before it")
            default: break
            }
            if take(["("]) != nil {
                return try nested(at: token.offset) { parser throws(ExpressionError) in
                    var arguments: [ExpressionNode] = []
                    if parser.take([")"]) == nil {
                        repeat { arguments.append(try parser.disjunction()) } while parser.take([","]) != nil
                        guard parser.take([")"]) != nil else {
                            throw ExpressionError(offset: parser.current.offset, "expected ',' or ')' in the arguments of \(word)(…)")
                        }
                    }
                    return .call(word, arguments, offset: token.offset)
                }
            }
            if take(["."]) != nil {
                guard case .identifier(let feature) = current.kind else {
                    throw ExpressionError(offset: current.offset, "expected a feature name after '\(word).'")
                }
                _ = advance()
                return .name(feature, view: word, offset: token.offset)
            }
            return .name(word, view: nil, offset: token.offset)
        case .end:
            throw ExpressionError(offset: token.offset, "the expression ends where a value is expected")
        default:
            throw ExpressionError(offset: token.offset, "unexpected \(token.kind.text) where a value is expected")
        }
    }
}

extension ExpressionToken.Kind {
    /// How the token reads in an error message.
    var text: String {
        switch self {
        case .integer(let value): return "number \(value)"
        case .number(let value): return "number \(value)"
        case .string: return "string"
        case .identifier(let name): return "name '\(name)'"
        case .symbol(let symbol): return "'\(symbol)'"
        case .end: return "end of the expression"
        }
    }
}

extension ExpressionError {
    /// The message with where it points in `text`: `… (at character 5: 1 + ▸sqr(4))`.
    public func explained(in text: String) -> String {
        let characters = Array(text)
        let at = min(max(0, offset), characters.count)
        let before = String(characters[max(0, at - 30)..<at]).replacingOccurrences(of: "\n", with: " ")
        let after = String(characters[at..<min(characters.count, at + 30)]).replacingOccurrences(of: "\n", with: " ")
        return "\(message) (at character \(at + 1): \(at > 30 ? "…" : "")\(before)▸\(after)\(characters.count > at + 30 ? "…" : ""))"
    }
}

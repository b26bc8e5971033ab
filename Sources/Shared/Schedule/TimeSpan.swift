import Foundation

/// A length of time as written in feature definitions: `30s`, `15m`, `1h`,
/// `1d`, `7d`, `2w`, or combinations such as `1h30m`. Stored as whole seconds.
public struct TimeSpan: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
    /// The length in seconds. Never negative for a parsed span.
    public var seconds: Int64

    /// Creates a span of `seconds` seconds.
    public init(seconds: Int64) { self.seconds = seconds }

    static let unitSeconds: [(unit: Character, seconds: Int64)] = [
        ("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1),
    ]

    /// Why a text is not a span.
    public enum ParseError: Error, Sendable, Equatable {
        /// The text is not made of `<number><unit>` parts.
        case malformed
        /// The text starts with a minus sign.
        case negative
        /// The number of seconds does not fit in 64 bits.
        case overflow
    }

    /// Parses a span; a bare `0` is accepted as zero.
    public static func parse(_ text: String) throws(ParseError) -> TimeSpan {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("-") { throw .negative }
        if trimmed == "0" { return TimeSpan(seconds: 0) }
        var total: Int64 = 0
        var digits = ""
        var sawPart = false
        for character in trimmed {
            if character.isASCII, character.isNumber {
                digits.append(character)
                continue
            }
            guard !digits.isEmpty, let unit = unitSeconds.first(where: { $0.unit == character }) else {
                throw .malformed
            }
            guard let count = Int64(digits) else { throw .overflow }
            let (product, overflowA) = count.multipliedReportingOverflow(by: unit.seconds)
            let (sum, overflowB) = total.addingReportingOverflow(product)
            if overflowA || overflowB { throw .overflow }
            total = sum
            digits = ""
            sawPart = true
        }
        guard digits.isEmpty, sawPart else { throw .malformed }
        return TimeSpan(seconds: total)
    }

    /// The shortest spelling: `7d`, `1h30m`, `0s`.
    public var description: String {
        if seconds == 0 { return "0s" }
        var remaining = seconds
        var text = ""
        for (unit, size) in Self.unitSeconds where unit != "w" && remaining >= size {
            text += "\(remaining / size)\(unit)"
            remaining %= size
        }
        return text
    }

    public static func < (lhs: TimeSpan, rhs: TimeSpan) -> Bool { lhs.seconds < rhs.seconds }

    /// `seconds` for a person: `6h2m`, `45m`, `20s` (seconds dropped past an hour).
    public static func approximate(_ seconds: Int64) -> String {
        TimeSpan(seconds: seconds >= 3_600 ? seconds - seconds % 60 : max(0, seconds)).description
    }

    public init(from decoder: any Decoder) throws {
        seconds = try decoder.singleValueContainer().decode(Int64.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(seconds)
    }
}

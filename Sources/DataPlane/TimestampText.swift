/// Microsecond timestamps written as UTC text without Foundation's date
/// formatting (which is slow on hot paths: the offline store's `COPY` rows
/// and every feature-server answer).
enum TimestampText {
    enum Style {
        /// `YYYY-MM-DD HH:MM:SS.ffffff+00`, for PostgreSQL's `COPY`.
        case postgres
        /// `YYYY-MM-DDTHH:MM:SSZ`, with `.ffffff` when there are microseconds.
        case rfc3339
    }

    /// Appends `micros` since the epoch in `style`.
    static func append(_ micros: Int64, style: Style, to text: inout [UInt8]) {
        let seconds = micros.dividedRoundingDown(by: 1_000_000)
        let fraction = micros - seconds * 1_000_000
        let days = seconds.dividedRoundingDown(by: 86_400)
        let secondOfDay = seconds - days * 86_400
        let (year, month, day) = civil(days: days)
        func padded(_ value: Int64, _ width: Int) {
            var divisor: Int64 = 1
            for _ in 1..<width { divisor *= 10 }
            while divisor > 0 {
                text.append(UInt8(ascii: "0") + UInt8(value / divisor % 10))
                divisor /= 10
            }
        }
        padded(year, 4)
        text.append(UInt8(ascii: "-"))
        padded(month, 2)
        text.append(UInt8(ascii: "-"))
        padded(day, 2)
        text.append(style == .postgres ? UInt8(ascii: " ") : UInt8(ascii: "T"))
        padded(secondOfDay / 3_600, 2)
        text.append(UInt8(ascii: ":"))
        padded(secondOfDay / 60 % 60, 2)
        text.append(UInt8(ascii: ":"))
        padded(secondOfDay % 60, 2)
        if style == .postgres || fraction != 0 {
            text.append(UInt8(ascii: "."))
            padded(fraction, 6)
        }
        if style == .postgres { text.append(contentsOf: "+00".utf8) } else { text.append(UInt8(ascii: "Z")) }
    }

    /// The proleptic Gregorian date of a day count since 1970-01-01 (Hinnant's algorithm).
    static func civil(days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}

import Shared

/// Rows of a feature view, ready for the stores: entity, event time,
/// created time, and one column per output feature.
struct OutputBatch: Sendable {
    var keys: [EntityKey]
    /// Microseconds since the epoch.
    var eventTimes: [Int64]
    /// Microseconds since the epoch; nil when the source has no created time.
    var createdTimes: [Int64?]
    var features: [ColumnValues]

    var count: Int { keys.count }

    var onlineRows: OnlineRows {
        OnlineRows(keys: keys, eventTimes: eventTimes, createdTimes: createdTimes.map { $0 ?? 0 }, features: features)
    }

    /// Appends the rows in COPY text format, with the columns of `table`.
    func encode(into encoder: inout CopyTextEncoder) {
        for row in 0..<count {
            encoder.key(keys[row])
            encoder.separator()
            encoder.timestamp(eventTimes[row])
            encoder.separator()
            if let created = createdTimes[row] { encoder.timestamp(created) } else { encoder.null() }
            for column in features {
                encoder.separator()
                encoder.value(column, row)
            }
            encoder.endRow()
        }
    }
}

extension CopyTextEncoder {
    /// The join key values, tab-separated.
    mutating func key(_ key: EntityKey) {
        switch key {
        case .int(let value): int(value)
        case .string(let value): string(value)
        case .composite:
            for (index, part) in key.parts.enumerated() {
                if index > 0 { separator() }
                switch part {
                case .int(let value): int(value)
                case .string(let value): string(value)
                }
            }
        }
    }
}

import Foundation
import Shared

/// Writes the body of an online-features answer:
///
/// ```json
/// {"feature_service": "driver_ranking", "registry_revision": 7,
///  "features": [{"name": "driver_hourly_stats:conv_rate", "type": "float64"}, …],
///  "results": [{"values": [0.52, …], "statuses": ["present", …],
///               "event_timestamps": ["2026-11-27T01:00:00Z", …]}, …]}
/// ```
///
/// One result per entity, in request order; in each, one entry per feature in
/// `features` order. An expired or missing value is `null` with its status;
/// an expired one keeps its event timestamp so callers see its age.
/// Written by hand: it is on every request's path, and its shape is fixed.
enum OnlineFeatureResponse {
    /// The answer for `grid`, after `opening` (see `opening(_:service:revision:)`).
    static func encode(_ grid: FeatureGrid, resolved: ResolvedRequest, opening: [UInt8]) -> [UInt8] {
        var out = JSONBytes()
        out.reserve(opening.count + 16 + grid.entities * resolved.outputs.count * 40)
        out.bytes.append(contentsOf: opening)
        // The features of a view share their event time: its text is written once per row and view.
        var lastTime = FeatureGrid.noTime
        var lastText: [UInt8] = []
        lastText.reserveCapacity(32)
        let columns = resolved.outputs.count
        for row in 0..<grid.entities {
            let base = row * grid.width
            out.raw(row == 0 ? "{\"values\":[" : ",{\"values\":[")
            for column in 0..<columns {
                if column > 0 { out.raw(",") }
                out.value(grid.values[base + column])
            }
            out.raw("],\"statuses\":[")
            for column in 0..<columns {
                if column > 0 { out.raw(",") }
                switch grid.statuses[base + column] {
                case .present: out.raw("\"present\"")
                case .notFound: out.raw("\"not_found\"")
                case .expired: out.raw("\"expired\"")
                case .null: out.raw("\"null\"")
                }
            }
            out.raw("],\"event_timestamps\":[")
            for column in 0..<columns {
                if column > 0 { out.raw(",") }
                let time = grid.eventTimes[base + column]
                if time == FeatureGrid.noTime {
                    out.raw("null")
                    continue
                }
                if time != lastTime {
                    lastTime = time
                    lastText.removeAll(keepingCapacity: true)
                    TimestampText.append(time, style: .rfc3339, to: &lastText)
                }
                out.bytes.append(UInt8(ascii: "\""))
                out.bytes.append(contentsOf: lastText)
                out.bytes.append(UInt8(ascii: "\""))
            }
            out.raw("]}")
        }
        out.raw("]}")
        return out.bytes
    }

    /// Everything before the results: the service (when one was asked for),
    /// the features with their types, the registry revision.
    static func opening(_ resolved: ResolvedRequest, service: String?, revision: Int64) -> [UInt8] {
        var out = JSONBytes()
        out.raw("{")
        if let service {
            out.raw("\"feature_service\":")
            out.string(service)
            out.raw(",")
        }
        out.raw("\"features\":[")
        for (index, output) in resolved.outputs.enumerated() {
            if index > 0 { out.raw(",") }
            out.raw("{\"name\":")
            out.string(output.name)
            out.raw(",\"type\":")
            out.string(output.type.rawValue)
            out.raw("}")
        }
        out.raw("],\"registry_revision\":")
        out.integer(revision)
        out.raw(",\"results\":[")
        return out.bytes
    }
}

/// A JSON text being written.
struct JSONBytes {
    var bytes: [UInt8] = []

    mutating func reserve(_ count: Int) { bytes.reserveCapacity(count) }

    @inline(__always)
    mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func integer(_ value: Int64) {
        if value >= 0, value < 10 {
            bytes.append(UInt8(48 + value))
            return
        }
        bytes.append(contentsOf: String(value).utf8)
    }

    mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): raw("\\\"")
            case UInt8(ascii: "\\"): raw("\\\\")
            case 0x0A: raw("\\n")
            case 0x0D: raw("\\r")
            case 0x09: raw("\\t")
            case 0..<0x20:
                raw("\\u00")
                bytes.append(Self.hex[Int(byte >> 4)])
                bytes.append(Self.hex[Int(byte & 0xF)])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    static let hex = Array("0123456789abcdef".utf8)

    mutating func value(_ value: FeatureValue) {
        switch value {
        case .null: raw("null")
        case .int(let number): integer(number)
        case .double(let number):
            // JSON has no NaN or infinities.
            if number.isFinite { bytes.append(contentsOf: number.description.utf8) } else { raw("null") }
        case .bool(let flag): if flag { raw("true") } else { raw("false") }
        case .string(let text): string(text)
        case .timestamp(let micros): timestamp(micros)
        }
    }

    /// `micros` since the epoch as a quoted RFC 3339 UTC timestamp, with
    /// microseconds when it has any.
    mutating func timestamp(_ micros: Int64) {
        bytes.append(UInt8(ascii: "\""))
        TimestampText.append(micros, style: .rfc3339, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }
}

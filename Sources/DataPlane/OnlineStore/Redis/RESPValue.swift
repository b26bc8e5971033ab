import NIOCore

/// A value of the Redis serialization protocol (RESP2), as a server answers:
/// a simple string, an error, an integer, a bulk string (bytes, or null) or
/// an array (of values, or null).
public enum RESPValue: Sendable, Equatable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    case bulkString(ByteBuffer?)
    case array([RESPValue]?)

    /// The value as text: a simple string, or a bulk string's bytes as UTF-8; nil otherwise.
    public var string: String? {
        switch self {
        case .simpleString(let text): return text
        case .bulkString(let bytes?): return String(buffer: bytes)
        default: return nil
        }
    }

    /// Whether the server answered null (a null bulk string or array).
    public var isNull: Bool {
        switch self {
        case .bulkString(nil), .array(nil): return true
        default: return false
        }
    }
}

/// Why a RESP stream could not be read.
public struct RESPProtocolError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// Reads RESP2 values from a byte stream, one whole value at a time: a value
/// split across reads waits for the rest (nothing is consumed until it is whole).
public struct RESPDecoder: ByteToMessageDecoder {
    public typealias InboundOut = RESPValue

    /// The longest bulk string accepted (Redis' own limit is 512 MiB).
    let maximumBulkLength: Int
    /// The deepest nesting of arrays accepted.
    let maximumDepth = 16

    public init(maximumBulkLength: Int = 512 * 1_024 * 1_024) { self.maximumBulkLength = maximumBulkLength }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        var copy = buffer
        guard let value = try Self.read(&copy, depth: 0, maximumBulkLength: maximumBulkLength, maximumDepth: maximumDepth) else {
            return .needMoreData
        }
        buffer = copy
        context.fireChannelRead(wrapInboundOut(value))
        return .continue
    }

    /// One value from the front of `buffer`, or nil when it is not whole yet (then `buffer` may be partly read).
    static func read(_ buffer: inout ByteBuffer, depth: Int, maximumBulkLength: Int, maximumDepth: Int) throws -> RESPValue? {
        guard let marker = buffer.readInteger(as: UInt8.self) else { return nil }
        guard let line = readLine(&buffer) else { return nil }
        switch marker {
        case UInt8(ascii: "+"):
            return .simpleString(line)
        case UInt8(ascii: "-"):
            return .error(line)
        case UInt8(ascii: ":"):
            guard let value = Int64(line) else { throw RESPProtocolError(description: "not an integer: \(line.prefix(32))") }
            return .integer(value)
        case UInt8(ascii: "$"):
            guard let length = Int(line), length >= -1, length <= maximumBulkLength else {
                throw RESPProtocolError(description: "bad bulk string length: \(line.prefix(32))")
            }
            if length == -1 { return .bulkString(nil) }
            guard buffer.readableBytes >= length + 2, let bytes = buffer.readSlice(length: length) else { return nil }
            guard buffer.readInteger(as: UInt16.self) == 0x0D0A else { throw RESPProtocolError(description: "a bulk string not ended by CRLF") }
            return .bulkString(bytes)
        case UInt8(ascii: "*"):
            guard let count = Int(line), count >= -1, count <= 1 << 24 else {
                throw RESPProtocolError(description: "bad array length: \(line.prefix(32))")
            }
            if count == -1 { return .array(nil) }
            guard depth < maximumDepth else { throw RESPProtocolError(description: "arrays nested too deep") }
            var elements: [RESPValue] = []
            elements.reserveCapacity(min(count, 1_024))
            for _ in 0..<count {
                guard let element = try read(&buffer, depth: depth + 1, maximumBulkLength: maximumBulkLength, maximumDepth: maximumDepth) else {
                    return nil
                }
                elements.append(element)
            }
            return .array(elements)
        default:
            throw RESPProtocolError(description: "unknown RESP type byte \(marker)")
        }
    }

    /// The text up to the next CRLF (consumed), or nil when there is none yet.
    static func readLine(_ buffer: inout ByteBuffer) -> String? {
        let view = buffer.readableBytesView
        guard let cr = view.firstIndex(of: UInt8(ascii: "\r")), view.index(after: cr) < view.endIndex,
              view[view.index(after: cr)] == UInt8(ascii: "\n")
        else { return nil }
        let length = cr - view.startIndex
        let line = buffer.readString(length: length) ?? ""
        buffer.moveReaderIndex(forwardBy: 2)
        return line
    }
}

/// Writes commands as RESP arrays of bulk strings.
public enum RESPCommand {
    /// `arguments` (the command's name first) encoded into `buffer`.
    public static func encode(_ arguments: [RESPArgument], into buffer: inout ByteBuffer) {
        buffer.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            switch argument {
            case .text(let text):
                buffer.writeString("$\(text.utf8.count)\r\n")
                buffer.writeString(text)
            case .bytes(let bytes):
                buffer.writeString("$\(bytes.readableBytes)\r\n")
                buffer.writeImmutableBuffer(bytes)
            }
            buffer.writeString("\r\n")
        }
    }
}

/// One argument of a command: text, or bytes as they are.
public enum RESPArgument: Sendable, ExpressibleByStringLiteral {
    case text(String)
    case bytes(ByteBuffer)

    public init(stringLiteral value: String) { self = .text(value) }
}

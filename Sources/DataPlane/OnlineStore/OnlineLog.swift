#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The append-only file behind one online table.
///
/// Layout: an 8-byte magic, the schema as JSON (length-prefixed), then frames.
/// A frame is a batch of rows in columnar form: `magic u32, length u32,
/// checksum u64, payload`. Frames are only ever appended; a frame cut short
/// by a crash fails its length or checksum and is cut off when the file is
/// next opened, so what remains is exactly the frames fully written.
final class OnlineLog {
    static let fileMagic: [UInt8] = Array("LDRONL01".utf8)
    static let frameMagic: UInt32 = 0x4C44_4652   // "LDFR"
    static let frameHeaderSize = 16

    let path: String
    let descriptor: Int32
    /// Bytes in the file.
    private(set) var size: Int

    /// Creates a new log holding only `header`, replacing any file at `path`
    /// atomically (written aside, synced, then renamed).
    static func create(path: String, header: [UInt8], frames: [[UInt8]] = []) throws(OnlineStoreError) -> OnlineLog {
        let temporary = path + ".tmp"
        let descriptor = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw .io("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var bytes = fileMagic
        bytes.appendLittleEndian(UInt32(header.count))
        bytes.append(contentsOf: header)
        defer { close(descriptor) }
        try writeAll(descriptor, bytes, path: temporary)
        for frame in frames { try writeAll(descriptor, framed(frame), path: temporary) }
        guard fsync(descriptor) == 0 else { throw .io("cannot sync \(temporary)") }
        guard rename(temporary, path) == 0 else { throw .io("cannot rename \(temporary) to \(path)") }
        syncDirectory(of: path)
        return try OnlineLog(appendingTo: path)
    }

    /// Opens an existing log for appending.
    private init(appendingTo path: String) throws(OnlineStoreError) {
        let descriptor = Glibc.open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard descriptor >= 0 else { throw .io("cannot open \(path): \(String(cString: strerror(errno)))") }
        self.path = path
        self.descriptor = descriptor
        self.size = Int(lseek(descriptor, 0, SEEK_END))
    }

    deinit { close(descriptor) }

    /// Reads only the header of the log at `path`.
    static func header(path: String) throws(OnlineStoreError) -> [UInt8] {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw .io("cannot open \(path)") }
        defer { try? handle.close() }
        guard let start = try? handle.read(upToCount: 12), start.count == 12, Array(start.prefix(8)) == fileMagic else {
            throw .io("\(path) is not an online-store log")
        }
        let length = Int(ByteReader.uint32(Array(start), at: 8))
        guard let header = try? handle.read(upToCount: length), header.count == length else { throw .io("\(path): the header is cut short") }
        return Array(header)
    }

    /// Reads a log: its header, and each intact frame's payload in order.
    /// A torn tail is cut off the file and the log is returned opened for
    /// appending — unless `readOnly`, which leaves the file as it is (another
    /// process may be appending) and returns nil.
    static func open(
        path: String, readOnly: Bool = false, header: (([UInt8]) throws(OnlineStoreError) -> Void),
        frame: ([UInt8]) throws(OnlineStoreError) -> Void
    ) throws(OnlineStoreError) -> OnlineLog? {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw .io("cannot open \(path)") }
        defer { try? handle.close() }
        func read(_ count: Int) -> [UInt8]? {
            guard count > 0 else { return [] }
            guard let data = try? handle.read(upToCount: count), data.count == count else { return nil }
            return [UInt8](data)
        }
        guard let magic = read(8), magic == fileMagic, let lengthBytes = read(4) else { throw .io("\(path) is not an online-store log") }
        let headerLength = Int(ByteReader.uint32(lengthBytes, at: 0))
        guard let headerBytes = read(headerLength) else { throw .io("\(path): the header is cut short") }
        try header(headerBytes)
        var intact = 12 + headerLength
        while let frameHeader = read(frameHeaderSize) {
            guard ByteReader.uint32(frameHeader, at: 0) == frameMagic else { break }
            let length = Int(ByteReader.uint32(frameHeader, at: 4))
            guard let payload = read(length), checksum(payload) == ByteReader.uint64(frameHeader, at: 8) else { break }
            try frame(payload)
            intact += frameHeaderSize + length
        }
        if readOnly { return nil }
        let size = Int((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? intact)
        if size > intact {
            // A crash cut the last frame short: drop it, so appends follow whole frames.
            guard truncate(path, off_t(intact)) == 0 else { throw .io("cannot cut the torn tail off \(path)") }
        }
        return try OnlineLog(appendingTo: path)
    }

    /// Appends one frame holding `payload`.
    func append(_ payload: [UInt8]) throws(OnlineStoreError) {
        let bytes = Self.framed(payload)
        try Self.writeAll(descriptor, bytes, path: path)
        size += bytes.count
    }

    /// Makes every appended frame durable.
    func sync() throws(OnlineStoreError) {
        guard fsync(descriptor) == 0 else { throw .io("cannot sync \(path): \(String(cString: strerror(errno)))") }
    }

    static func framed(_ payload: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(payload.count + frameHeaderSize)
        bytes.appendLittleEndian(frameMagic)
        bytes.appendLittleEndian(UInt32(payload.count))
        bytes.appendLittleEndian(checksum(payload))
        bytes.append(contentsOf: payload)
        return bytes
    }

    /// A 64-bit checksum over 8-byte words (multiply–rotate): cheap, and enough
    /// to tell a frame cut short or torn by a crash from a whole one.
    static func checksum(_ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBytes { raw in
            var hash: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(raw.count)
            var offset = 0
            while offset + 8 <= raw.count {
                let word = raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                hash = ((hash ^ word) &* 0xFF51_AFD7_ED55_8CCD)
                hash = (hash << 31) | (hash >> 33)
                offset += 8
            }
            while offset < raw.count {
                hash = (hash ^ UInt64(raw[offset])) &* 0xC4CE_B9FE_1A85_EC53
                offset += 1
            }
            return hash ^ (hash >> 29)
        }
    }

    static func writeAll(_ descriptor: Int32, _ bytes: [UInt8], path: String) throws(OnlineStoreError) {
        let failure: String? = bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return String(cString: strerror(errno))
                }
                offset += written
            }
            return nil
        }
        if let failure { throw .io("cannot write \(path): \(failure)") }
    }

    static func syncDirectory(of path: String) {
        let directory = Glibc.open((path as NSString).deletingLastPathComponent, O_RDONLY | O_CLOEXEC)
        guard directory >= 0 else { return }
        fsync(directory)
        close(directory)
    }
}

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
        let pending = try Pending(path: path, header: header)
        for frame in frames { try pending.append(frame: frame) }
        try pending.sync()
        try pending.install(at: path)
        return try OnlineLog(appendingTo: path)
    }

    /// A new log being written beside the one it will replace (at
    /// `path.<unique>.tmp`, so two never share a file), put in place by
    /// `install(at:)` once synced. Leftovers of a crash are removed when the
    /// store opens.
    final class Pending {
        let temporary: String
        private let descriptor: Int32
        private var open = true

        /// Starts the file with the log's magic and `header`.
        init(path: String, header: [UInt8]) throws(OnlineStoreError) {
            temporary = path + "." + UUID().uuidString + ".tmp"
            descriptor = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else { throw .io("cannot create \(temporary): \(String(cString: strerror(errno)))") }
            var bytes = OnlineLog.fileMagic
            bytes.appendLittleEndian(UInt32(header.count))
            bytes.append(contentsOf: header)
            do { try append(bytes: bytes) } catch {
                discard()
                throw error
            }
        }

        deinit { discard() }

        /// Appends one frame holding `payload`.
        func append(frame payload: [UInt8]) throws(OnlineStoreError) { try append(bytes: OnlineLog.framed(payload)) }

        /// Appends bytes that are already whole frames.
        func append(bytes: [UInt8]) throws(OnlineStoreError) { try OnlineLog.writeAll(descriptor, bytes, path: temporary) }

        /// Makes what was appended durable.
        func sync() throws(OnlineStoreError) {
            guard fsync(descriptor) == 0 else { throw .io("cannot sync \(temporary)") }
        }

        /// Renames the file to `path` (everything appended must be synced); `OnlineLog(appendingTo:)` then opens it.
        func install(at path: String) throws(OnlineStoreError) {
            close(descriptor)
            open = false
            guard rename(temporary, path) == 0 else {
                unlink(temporary)
                throw .io("cannot rename \(temporary) to \(path)")
            }
            OnlineLog.syncDirectory(of: path)
        }

        /// Closes and removes the file, if not installed.
        func discard() {
            guard open else { return }
            open = false
            close(descriptor)
            unlink(temporary)
        }
    }

    /// A descriptor reading this log's file (the same file even once another replaces it at `path`); the caller closes it.
    func reader() throws(OnlineStoreError) -> Int32 {
        let descriptor = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw .io("cannot open \(path): \(String(cString: strerror(errno)))") }
        return descriptor
    }

    /// The bytes read through `descriptor` (of the log at `path`) from offset `start` to `end`.
    static func bytes(_ descriptor: Int32, path: String, from start: Int, to end: Int) throws(OnlineStoreError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: end - start)
        let failure: String? = bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let read = pread(descriptor, raw.baseAddress! + offset, raw.count - offset, off_t(start + offset))
                if read < 0, errno == EINTR { continue }
                if read < 0 { return String(cString: strerror(errno)) }
                if read == 0 { return "the file ends before byte \(end)" }
                offset += read
            }
            return nil
        }
        if let failure { throw .io("cannot read \(path): \(failure)") }
        return bytes
    }

    /// The payloads of whole frames laid end to end in `bytes`.
    static func payloads(in bytes: [UInt8]) throws(OnlineStoreError) -> [[UInt8]] {
        var payloads: [[UInt8]] = []
        var offset = 0
        while offset < bytes.count {
            guard offset + frameHeaderSize <= bytes.count, ByteReader.uint32(bytes, at: offset) == frameMagic else {
                throw .io("a frame of the log is damaged at byte \(offset)")
            }
            let length = Int(ByteReader.uint32(bytes, at: offset + 4))
            let start = offset + frameHeaderSize
            guard start + length <= bytes.count else { throw .io("a frame of the log is cut short at byte \(offset)") }
            let payload = Array(bytes[start..<(start + length)])
            guard checksum(payload) == ByteReader.uint64(bytes, at: offset + 8) else { throw .io("a frame of the log fails its checksum at byte \(offset)") }
            payloads.append(payload)
            offset = start + length
        }
        return payloads
    }

    /// Opens an existing log for appending.
    init(appendingTo path: String) throws(OnlineStoreError) {
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

import Foundation

/// The agent's durable record of accepted pushes: each push's idempotency
/// key, source, arrival time and body, appended and synced before any of it
/// is applied. Replaying it rebuilds the live window state and the receipts
/// of idempotency keys after a restart. It reuses the online store's framed
/// log (length and checksum per frame; a torn last frame is cut off).
final class PushJournal: @unchecked Sendable {
    /// One accepted push.
    struct Entry: Sendable {
        var key: String?
        var source: String
        /// Microseconds since the epoch.
        var receivedAt: Int64
        var body: [UInt8]
    }

    let path: String
    private var log: OnlineLog
    /// The log's size when it was last written whole.
    private(set) var baseline: Int
    static let header = Array(#"{"kind":"push-journal","version":1}"#.utf8)

    /// Opens (or creates) the journal at `path`, handing each entry to `replay` in order.
    init(path: String, replay: (Entry) -> Void) throws(OnlineStoreError) {
        self.path = path
        if FileManager.default.fileExists(atPath: path) {
            let opened = try OnlineLog.open(
                path: path, header: { bytes throws(OnlineStoreError) in
                    guard bytes == Self.header else { throw .io("\(path) is not a push journal") }
                }, frame: { payload throws(OnlineStoreError) in
                    guard let entry = Self.decode(payload) else { throw .io("\(path) holds an unreadable entry") }
                    replay(entry)
                })
            guard let opened else { throw .io("cannot open \(path)") }
            log = opened
        } else {
            log = try OnlineLog.create(path: path, header: Self.header)
        }
        baseline = log.size
    }

    /// Bytes in the journal.
    var size: Int { log.size }

    /// Appends `entry` and makes it durable.
    func append(_ entry: Entry) throws(OnlineStoreError) {
        try log.append(Self.encode(entry))
        try log.sync()
    }

    /// Every entry, read from the file.
    func entries() throws(OnlineStoreError) -> [Entry] {
        var entries: [Entry] = []
        _ = try OnlineLog.open(path: path, readOnly: true, header: { _ throws(OnlineStoreError) in }, frame: { payload throws(OnlineStoreError) in
            if let entry = Self.decode(payload) { entries.append(entry) }
        })
        return entries
    }

    /// Rewrites the journal with only the entries `keep` accepts.
    func compact(keep: (Entry) -> Bool) throws(OnlineStoreError) {
        log = try OnlineLog.create(path: path, header: Self.header, frames: try entries().filter(keep).map(Self.encode))
        baseline = log.size
    }

    static func encode(_ entry: Entry) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(entry.body.count + 64)
        if let key = entry.key {
            bytes.appendLittleEndian(UInt32(key.utf8.count))
            bytes.append(contentsOf: key.utf8)
        } else {
            bytes.appendLittleEndian(UInt32.max)
        }
        bytes.appendLittleEndian(UInt32(entry.source.utf8.count))
        bytes.append(contentsOf: entry.source.utf8)
        bytes.appendLittleEndian(UInt64(bitPattern: entry.receivedAt))
        bytes.append(contentsOf: entry.body)
        return bytes
    }

    static func decode(_ bytes: [UInt8]) -> Entry? {
        var index = 0
        func text() -> String?? {
            guard index + 4 <= bytes.count else { return nil }
            let length = ByteReader.uint32(bytes, at: index)
            index += 4
            if length == UInt32.max { return .some(nil) }
            guard index + Int(length) <= bytes.count else { return nil }
            defer { index += Int(length) }
            return .some(String(decoding: bytes[index..<index + Int(length)], as: UTF8.self))
        }
        guard let key = text(), let source = text() ?? nil, index + 8 <= bytes.count else { return nil }
        let receivedAt = ByteReader.int64(bytes, at: index)
        index += 8
        return Entry(key: key, source: source, receivedAt: receivedAt, body: Array(bytes[index...]))
    }
}

import Foundation
import Logging
import Synchronization

/// The agent's online store: the latest feature values of each entity, per
/// feature-view version, for serving. Embedded in the agent and durable: each
/// table is an append-only log replayed into memory when the agent starts
/// (see `OnlineTable`), so it needs neither the control plane nor another server.
public final class OnlineStore: Sendable {
    /// The folder holding one log file per table.
    public let directory: String
    private let tables: Mutex<[TableID: OnlineTable]>

    /// A table's identity: a view and one of its versions.
    struct TableID: Hashable {
        var view: String
        var version: Int
    }

    /// Whether the store only reads its files (for inspecting a running agent's store).
    public let readOnly: Bool

    /// Opens the store in `directory` (created if missing), replaying every
    /// table in it. A `readOnly` store leaves the files untouched and refuses writes.
    public init(directory: String, readOnly: Bool = false) throws(OnlineStoreError) {
        self.directory = directory
        self.readOnly = readOnly
        if readOnly, !FileManager.default.fileExists(atPath: directory) { throw .io("\(directory) does not exist") }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw .io("cannot create \(directory): \(error.localizedDescription)")
        }
        if !readOnly {
            // Staged rows of jobs that never finished: never applied, so dropped.
            try? FileManager.default.removeItem(atPath: (directory as NSString).appendingPathComponent(Self.stagingFolder))
            // Logs a crash left half-written beside the ones they were to replace.
            for file in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where file.hasSuffix(".tmp") {
                try? FileManager.default.removeItem(atPath: (directory as NSString).appendingPathComponent(file))
            }
        }
        var tables: [TableID: OnlineTable] = [:]
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for file in files.sorted() where file.hasSuffix(".log") {
            let table = try OnlineTable.open(path: (directory as NSString).appendingPathComponent(file), readOnly: readOnly)
            tables[TableID(view: table.schema.view, version: table.schema.version)] = table
        }
        self.tables = Mutex(tables)
    }

    /// The file name of a table: the view's name (anything but letters, digits,
    /// `_` and `-` escaped) and version.
    static func fileName(view: String, version: Int) -> String {
        var name = ""
        for scalar in view.unicodeScalars {
            if scalar.isASCII, scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || scalar == "_" || scalar == "-" {
                name.unicodeScalars.append(scalar)
            } else {
                name += "%" + String(scalar.value, radix: 16)
            }
        }
        return "\(name)@v\(version).log"
    }

    /// The table for `schema`'s view version, created if missing. An existing
    /// table with another schema is an error.
    public func table(for schema: OnlineTableSchema) throws(OnlineStoreError) -> OnlineTable {
        let id = TableID(view: schema.view, version: schema.version)
        return try tables.withLock { tables throws(OnlineStoreError) -> OnlineTable in
            if let table = tables[id] {
                guard table.schema == schema else { throw .schemaMismatch("\(schema.view) v\(schema.version) is stored with another schema") }
                return table
            }
            guard !readOnly else { throw .io("the store is open read-only") }
            let path = (directory as NSString).appendingPathComponent(Self.fileName(view: schema.view, version: schema.version))
            let table = try OnlineTable(path: path, schema: schema)
            tables[id] = table
            return table
        }
    }

    /// The folder of staged tables, inside the store's.
    static let stagingFolder = "staging"

    /// A new, empty table outside the store for `schema`, which a job writes
    /// before it knows whether its rows may be served (its view's expectations
    /// fail jobs that break them). Nothing reads it; `commit(_:)` applies it
    /// to the store's table, `discard(_:)` drops it. Staged tables left by a
    /// stopped agent are dropped when the store opens.
    public func stagingTable(for schema: OnlineTableSchema, job: Int64) throws(OnlineStoreError) -> OnlineTable {
        guard !readOnly else { throw .io("the store is open read-only") }
        let folder = (directory as NSString).appendingPathComponent(Self.stagingFolder)
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw .io("cannot create \(folder): \(error.localizedDescription)")
        }
        let path = (folder as NSString).appendingPathComponent("job-\(job)-" + Self.fileName(view: schema.view, version: schema.version))
        unlink(path)
        return try OnlineTable(path: path, schema: schema)
    }

    /// Writes every row of a staged table into the store's table of its view
    /// version (newest wins, as for any write), makes it durable, and drops
    /// the staged table. Returns how many rows were stored.
    @discardableResult
    public func commit(_ staged: OnlineTable) throws(OnlineStoreError) -> Int {
        let target = try table(for: staged.schema)
        let stored = try staged.copy(into: target)
        try target.sync()
        staged.deleteFile()
        return stored
    }

    /// Makes a staged table the store's table of its view version, in place
    /// of whatever that table held (for rebuilding it from the offline store).
    /// Returns how many entities it holds.
    @discardableResult
    public func replace(with staged: OnlineTable) throws(OnlineStoreError) -> Int {
        let id = TableID(view: staged.schema.view, version: staged.schema.version)
        tables.withLock { tables in
            tables[id]?.deleteFile()
            tables[id] = nil
        }
        try commit(staged)
        return table(view: id.view, version: id.version)?.count ?? 0
    }

    /// Drops a staged table.
    public func discard(_ staged: OnlineTable) { staged.deleteFile() }

    /// The table of a view version, if stored.
    public func table(view: String, version: Int) -> OnlineTable? {
        tables.withLock { $0[TableID(view: view, version: version)] }
    }

    /// The table serving `view` at `version`: that version's table, or, while
    /// it does not exist yet (a new version not materialized so far), the
    /// newest older one.
    public func servingTable(view: String, version: Int) -> OnlineTable? {
        tables.withLock { tables in
            if let table = tables[TableID(view: view, version: version)] { return table }
            return tables.values.filter { $0.schema.view == view && $0.schema.version < version }.max { $0.schema.version < $1.schema.version }
        }
    }

    /// The schemas of every stored table.
    public var schemas: [OnlineTableSchema] {
        tables.withLock { $0.values.map(\.schema) }.sorted { ($0.view, $0.version) < ($1.view, $1.version) }
    }

    /// Drops the tables of `view` older than `version`, except the newest of
    /// them (still served while `version` catches up): their memory and files
    /// are reclaimed. Returns the versions dropped.
    @discardableResult
    public func retire(view: String, before version: Int) -> [Int] {
        tables.withLock { tables in
            let older = tables.filter { $0.value.schema.view == view && $0.value.schema.version < version }
                .sorted { $0.value.schema.version > $1.value.schema.version }
            var dropped: [Int] = []
            for (id, table) in older.dropFirst() {
                table.deleteFile()
                tables[id] = nil
                dropped.append(table.schema.version)
            }
            return dropped.sorted()
        }
    }

    /// Compacts every table that holds expired entities or whose log outgrew
    /// its contents. Returns the entities dropped.
    @discardableResult
    public func maintain(now: Int64, logger: Logger? = nil) -> Int {
        var dropped = 0
        for table in tables.withLock({ Array($0.values) }) where table.needsCompaction(now: now) {
            do {
                dropped += try table.compact(now: now)
            } catch {
                logger?.warning("cannot compact the online table", metadata: ["view": "\(table.schema.view)", "error": "\(error)"])
            }
        }
        return dropped
    }
}

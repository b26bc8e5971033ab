import Foundation
import Logging
import ServiceLifecycle

/// Writes the audit records of failed authentications without letting a
/// flood of them grow the log: per source (client address), action, status
/// and claimed principal, the first failure of each minute is written at
/// once, and the rest of that minute become one more record carrying their
/// `count`, written when the minute is over. Throttled attempts (`429`) are
/// counted per source and action alone, whatever name they claimed.
public actor FailedAttemptAudit {
    struct Key: Hashable {
        var minute: Int64
        var principal: String
        var action: String
        var status: Int
        var address: String?
    }

    let store: any AccessStore
    let logger: Logger
    private var written: Set<Key> = []
    private var pending: [Key: (record: AuditRecord, count: Int)] = [:]

    /// Failed attempts recorded into `store`.
    public init(store: any AccessStore, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    /// Records one failed attempt (`record.outcome` is `denied`).
    func record(_ record: AuditRecord, at date: Date = Date()) async {
        let minute = Int64(date.timeIntervalSince1970 / 60)
        await flush(before: minute)
        var record = record
        if record.status == 429 { record.principal = "(throttled)" }
        let key = Key(minute: minute, principal: record.principal, action: record.action, status: record.status, address: record.clientAddress)
        if written.insert(key).inserted {
            await write(record)
        } else {
            pending[key, default: (record, 0)].count += 1
        }
    }

    /// Writes the counts of the minutes before `minute` (all of them with `.max`).
    func flush(before minute: Int64) async {
        // Taken out of `pending` before the first write suspends: a record arriving meanwhile
        // (the actor is reentrant at each await) must not find them and write them again.
        let due = pending.filter { $0.key.minute < minute }
        for key in due.keys { pending[key] = nil }
        written = written.filter { $0.minute >= minute }
        for entry in due.values {
            var record = entry.record
            record.count = entry.count
            await write(record)
        }
    }

    /// Writes what ended before now.
    public func flushEnded(now: Date = Date()) async { await flush(before: Int64(now.timeIntervalSince1970 / 60)) }

    /// Writes everything counted so far (at shutdown).
    public func flushAll() async { await flush(before: .max) }

    private func write(_ record: AuditRecord) async {
        do { try await store.appendAudit(record) } catch {
            logger.error("could not write the audit log", metadata: ["larder.error": .string(String(describing: error))])
        }
    }

    /// Flushes ended minutes every 15 s, and everything at shutdown.
    public struct Flusher: Service {
        let audit: FailedAttemptAudit

        public init(_ audit: FailedAttemptAudit) { self.audit = audit }

        public func run() async throws {
            while !Task.isShuttingDownGracefully, !Task.isCancelled {
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(15)) }
                await audit.flushEnded()
            }
            await audit.flushAll()
        }
    }
}

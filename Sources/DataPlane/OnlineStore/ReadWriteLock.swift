#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A value guarded by a readers–writer lock (POSIX `pthread_rwlock_t`): any
/// number of readers at once, or one writer.
///
/// An online table's feature reads come from both event loops at once and
/// only look; writes (upserts, a compaction's swap) change the table. With
/// a plain mutex the two loops' reads wait for each other, and a writer that
/// releases the lock and takes it again at once (an upsert going on to its
/// next slice) can win it over a reader again and again. Here readers share
/// the lock, and on glibc the lock prefers writers only in that a waiting
/// writer holds back readers that arrive after it: the readers already
/// waiting when a writer releases the lock get it before that writer's next
/// slice, so a read waits for one slice at most, and a writer is never starved.
final class ReadWriteLock<Value>: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>
    private let value: UnsafeMutablePointer<Value>

    init(_ initial: Value) {
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_rwlock_t())
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        #if canImport(Glibc)
        pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        #endif
        let result = pthread_rwlock_init(lock, &attributes)
        pthread_rwlockattr_destroy(&attributes)
        precondition(result == 0, "pthread_rwlock_init failed: \(result)")
        value = .allocate(capacity: 1)
        value.initialize(to: initial)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
        value.deinitialize(count: 1)
        value.deallocate()
    }

    /// Runs `body` with the value while holding the lock shared with other readers.
    func withReadLock<Result, Failure: Error>(_ body: (borrowing Value) throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body(value.pointee)
    }

    /// Runs `body` with the value while holding the lock alone.
    func withWriteLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body(&value.pointee)
    }
}

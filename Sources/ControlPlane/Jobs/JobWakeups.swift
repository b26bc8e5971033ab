import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// Claims waiting for work, woken when jobs are queued in their workspace.
/// `JobNotificationListener` feeds it from PostgreSQL `NOTIFY`, so a claim
/// on any replica wakes when any replica queues work.
public actor JobWakeups {
    private var waiters: [Int64: [UUID: CheckedContinuation<Void, Never>]] = [:]
    private var resumedEarly: Set<UUID> = []
    private var generations: [Int64: UInt64] = [:]

    /// Creates an empty set of waiters.
    public init() {}

    /// Counts the wake-ups of `workspace`: read it before looking for work, and
    /// pass it to `wait`, so work queued in between is not slept through.
    public func generation(of workspace: Int64) -> UInt64 { generations[workspace, default: 0] }

    /// Waits until work is queued in `workspace` (at once if it was since
    /// `generation`), or `timeout` passes, or the task is cancelled.
    public func wait(workspace: Int64, since generation: UInt64, timeout: Duration) async {
        guard generations[workspace, default: 0] == generation else { return }
        let id = UUID()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.suspend(id, workspace: workspace) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                await self.resume(id, workspace: workspace)
            }
            await group.next()
            group.cancelAll()
            await self.resume(id, workspace: workspace)
        }
        resumedEarly.remove(id)
    }

    private func suspend(_ id: UUID, workspace: Int64) async {
        await withCheckedContinuation { continuation in
            if resumedEarly.remove(id) != nil {
                continuation.resume()
            } else {
                waiters[workspace, default: [:]][id] = continuation
            }
        }
    }

    private func resume(_ id: UUID, workspace: Int64) {
        if let continuation = waiters[workspace]?.removeValue(forKey: id) {
            continuation.resume()
        } else {
            resumedEarly.insert(id)
        }
    }

    /// Wakes every claim waiting in `workspace`.
    public func wake(workspace: Int64) {
        generations[workspace, default: 0] &+= 1
        guard let woken = waiters.removeValue(forKey: workspace) else { return }
        for continuation in woken.values { continuation.resume() }
    }
}

/// Listens on the `larder_jobs` channel and wakes the claims of the workspace
/// each notification names. Reconnects when the connection drops.
struct JobNotificationListener: Service {
    let client: PostgresClient
    let wakeups: JobWakeups
    let logger: Logger

    func run() async throws {
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            do {
                try await cancelWhenGracefulShutdown {
                    try await client.withConnection { connection in
                        try await connection.listen(on: "larder_jobs") { notifications in
                            for try await notification in notifications {
                                if let workspace = Int64(notification.payload) { await wakeups.wake(workspace: workspace) }
                            }
                        }
                    }
                }
            } catch {
                if Task.isCancelled || Task.isShuttingDownGracefully { return }
                logger.warning("lost the job notification channel; reconnecting", metadata: ["larder.error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}

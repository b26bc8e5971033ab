import Foundation

/// Holds background services back until the server has migrated the schema.
public actor StartupGate {
    private var isOpen = false
    private var waiting: [UUID: CheckedContinuation<Void, Never>] = [:]

    /// Creates a closed gate.
    public init() {}

    /// Lets every waiter (and later caller of `wait`) through.
    public func open() {
        isOpen = true
        for continuation in waiting.values { continuation.resume() }
        waiting = [:]
    }

    /// Returns once the gate is open, or at once when the task is cancelled (check
    /// `Task.isCancelled` after): a server that stops before it has started must
    /// not leave its services waiting for a start that never comes.
    public func wait() async {
        if isOpen { return }
        let id = UUID()
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                if isOpen || Task.isCancelled {
                    continuation.resume()
                } else {
                    waiting[id] = continuation
                }
            }
        } onCancel: {
            Task { await self.leave(id) }
        }
    }

    private func leave(_ id: UUID) {
        waiting.removeValue(forKey: id)?.resume()
    }
}

import Foundation

/// An exclusive lock on an agent's data directory (`flock` on `agent.lock`):
/// held by a running agent for its lifetime, so tools that rewrite its stores
/// (`larder-agent rebuild-online`) refuse to run beside it. The kernel drops
/// it when the process ends, however it ends.
public final class AgentLock: Sendable {
    let descriptor: Int32

    /// Why the lock is not to be had.
    public struct Busy: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// Takes the lock of `directory`, without waiting.
    public init(directory: String) throws(Busy) {
        let path = (directory as NSString).appendingPathComponent("agent.lock")
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw Busy(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(descriptor)
            throw Busy(description: "an agent is running with the data directory \(directory) (\(path) is locked); stop it first")
        }
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }
}

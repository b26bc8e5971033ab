import Foundation
import Synchronization

/// The agent's token, read from its file and read again whenever the file's
/// modification time or size changes, so a rotated token takes effect
/// without a restart. A file that cannot be read keeps the last token.
final class TokenFile: Sendable {
    let path: String
    private let state: Mutex<(stamp: [Int], token: String)>

    init(path: String, initial: String) {
        self.path = path
        state = Mutex((Self.stamp(path), initial))
    }

    /// The file's modification time (seconds, nanoseconds) and size.
    static func stamp(_ path: String) -> [Int] {
        var info = stat()
        guard stat(path, &info) == 0 else { return [] }
        return [Int(info.st_mtim.tv_sec), Int(info.st_mtim.tv_nsec), Int(info.st_size)]
    }

    /// The current token.
    func current() -> String {
        let stamp = Self.stamp(path)
        return state.withLock { state in
            guard stamp != state.stamp, !stamp.isEmpty else { return state.token }
            if let text = try? String(contentsOfFile: path, encoding: .utf8) {
                let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
                if !token.isEmpty { state = (stamp, token) }
            }
            return state.token
        }
    }
}

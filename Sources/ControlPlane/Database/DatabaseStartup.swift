import Logging
import PostgresNIO
import Shared

/// Waits at start-up until the control plane's database answers, for a bounded time.
///
/// A database that is still starting (or a network that is not up yet) is retried with
/// backoff; one that answers with an error (a wrong password, a database that does not
/// exist) is not, since waiting would not change the answer. Either way the server
/// stops with an error that names the database and the reason, instead of retrying
/// without end where SIGTERM could not stop it.
public enum DatabaseStartup {
    /// The database did not answer, or refused us.
    struct Unavailable: Error, CustomStringConvertible {
        let description: String
    }

    /// SQLSTATEs worth waiting out: the server is starting, shutting down or recovering, or full.
    static let transientStates: Set<String> = ["57P03", "57P01", "57P02", "53300"]

    /// Returns once a connection to `url` opens; throws `Unavailable` after `patience`,
    /// or at once when the server refuses for a reason that waiting would not change.
    public static func waitUntilReachable(_ url: PostgresURL, patience: Duration, logger: Logger) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + patience
        var delay = Duration.milliseconds(250)
        var attempts = 0
        while true {
            try Task.checkCancellation()
            let reason: String
            do {
                let connection = try await url.connect(logger: logger)
                try? await connection.close()
                if attempts > 0 { logger.notice("the database answers", metadata: ["larder.database": "\(url)"]) }
                return
            } catch let failure as PSQLError {
                if Task.isCancelled { throw CancellationError() }
                if let state = failure.serverInfo?[.sqlState], !transientStates.contains(state) {
                    let message = failure.serverInfo?[.message] ?? "error \(state)"
                    throw Unavailable(description: "the database \(url) refused the connection: \(message) (SQLSTATE \(state))")
                }
                reason = describe(failure)
            } catch {
                if Task.isCancelled { throw CancellationError() }
                reason = "\(error)"
            }
            attempts += 1
            let remaining = deadline - clock.now
            guard remaining > .zero else {
                throw Unavailable(description: "the database \(url) did not answer within \(patience) (\(attempts) attempts): \(reason)")
            }
            // The first failure, then a line every doubling of attempts: a clear sign, not a flood.
            if attempts & (attempts - 1) == 0 {
                logger.warning("the database does not answer yet; retrying", metadata: [
                    "larder.database": "\(url)", "larder.attempts": "\(attempts)", "larder.error": "\(reason)",
                ])
            }
            // One last try at the deadline itself.
            try await Task.sleep(for: min(delay, remaining))
            delay = min(delay * 2, .seconds(5))
        }
    }

    /// What went wrong, without PostgresNIO's deliberately generic description.
    static func describe(_ failure: PSQLError) -> String {
        if let message = failure.serverInfo?[.message] { return message }
        if let underlying = failure.underlying { return "\(underlying)" }
        return "\(failure.code)"
    }
}

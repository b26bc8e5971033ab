import PostgresNIO

/// Reading PostgreSQL's errors as the API's.
enum PostgresFailure {
    /// Runs `body`; a foreign-key violation it meets (SQLSTATE 23503: a row names
    /// one that does not exist) is thrown as `error`.
    static func missingReference<Result>(is error: any Error, _ body: () async throws -> Result) async throws -> Result {
        do {
            return try await body()
        } catch let failure as PSQLError where failure.serverInfo?[.sqlState] == "23503" {
            throw error
        }
    }
}

import Foundation
import NIOCore
import PostgresNIO

// What of an error may be told to the control plane. Job failures cross the
// boundary; the customer's data must not: every report is built from stable
// codes and names (SQLSTATE, file, line, column, constraint), never from a
// server's message text or a value. The agent's own log keeps the whole text.

/// A query's failure as the control plane may be told it: built only from
/// the server's stable, structured fields (SQLSTATE and its condition name;
/// the schema, table, column, data type and constraint the error names),
/// never from its message, which may carry data unquoted ("date field value
/// out of range: 1234-13-01") and whose detail repeats key values. The agent's
/// log has the message whole. Mistakes in the query itself (bad SQL, a
/// missing column, a bad cast) will not go away by retrying. Nil when the
/// error did not come from the server.
func queryFailure(_ error: PSQLError, what: String) -> JobExecutionError? {
    guard let info = error.serverInfo, let state = info[.sqlState] else { return nil }
    // Syntax and access (42), data (22) and read-only transaction (25) errors come back on every attempt.
    let permanent = state.hasPrefix("42") || state.hasPrefix("22") || state.hasPrefix("25")
    return JobExecutionError(
        "\(what) failed: \(SQLState.reported(state, info: info)); the agent's log has the server's message",
        retryable: !permanent, localDetail: [info[.message], info[.detail]].compactMap { $0 }.joined(separator: " — "))
}

/// SQLSTATE codes in words, and what of a server error may be reported.
enum SQLState {
    /// Condition names of the codes a source or entity query commonly meets (PostgreSQL's appendix A).
    static let names: [String: String] = [
        "22001": "string_data_right_truncation", "22003": "numeric_value_out_of_range", "22007": "invalid_datetime_format",
        "22008": "datetime_field_overflow", "22012": "division_by_zero", "22P02": "invalid_text_representation",
        "22023": "invalid_parameter_value", "22004": "null_value_not_allowed", "23502": "not_null_violation",
        "23503": "foreign_key_violation", "23505": "unique_violation", "23514": "check_violation", "25006": "read_only_sql_transaction",
        "42501": "insufficient_privilege", "42601": "syntax_error", "42703": "undefined_column", "42883": "undefined_function",
        "42P01": "undefined_table", "42804": "datatype_mismatch", "42846": "cannot_coerce", "53100": "disk_full",
        "53200": "out_of_memory", "57014": "query_canceled", "40001": "serialization_failure", "40P01": "deadlock_detected",
    ]

    /// `SQLSTATE 22008 (datetime_field_overflow)`, with the objects the
    /// server named (`table public.labels, column x`): names, never values.
    static func reported(_ state: String, info: PSQLError.ServerInfo) -> String {
        let fields: [String: String?] = [
            "schema": info[.schemaName], "table": info[.tableName], "column": info[.columnName], "type": info[.dataTypeName],
            "constraint": info[.constraintName],
        ]
        return reported(state, fields: fields.compactMapValues { $0 })
    }

    /// The same from the fields by name: `schema`, `table`, `column`, `type`, `constraint`.
    static func reported(_ state: String, fields: [String: String]) -> String {
        let code = state.count == 5 && state.unicodeScalars.allSatisfy { ("0"..."9").contains($0) || ("A"..."Z").contains($0) } ? state : "?"
        var text = "SQLSTATE \(code)" + (names[code].map { " (\($0))" } ?? "")
        var objects: [String] = []
        if let table = fields["table"].flatMap(name) { objects.append("table " + (fields["schema"].flatMap(name).map { $0 + "." } ?? "") + table) }
        if let column = fields["column"].flatMap(name) { objects.append("column \(column)") }
        if let type = fields["type"].flatMap(name) { objects.append("type \(type)") }
        if let constraint = fields["constraint"].flatMap(name) { objects.append("constraint \(constraint)") }
        if !objects.isEmpty { text += " at " + objects.joined(separator: ", ") }
        return text
    }

    /// An object name the server reported, if it looks like one (at most 63 bytes of letters, digits, `_`, `$`).
    static func name(_ text: String) -> String? {
        guard !text.isEmpty, text.utf8.count <= 63,
              text.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) || $0 == "_" || $0 == "$" })
        else { return nil }
        return text
    }
}

/// Any error, reported by its codes only: no message text.
enum ReportedError {
    /// `PostgreSQL client error connectionError`, or the error's type and errno: no message text.
    static func codes(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let state = error.serverInfo?[.sqlState] { return SQLState.reported(state, info: error.serverInfo!) }
            return "PostgreSQL client error \(error.code.description)"
        }
        if let error = error as? IOError { return "I/O error \(error.errnoCode)" }
        return "\(type(of: error))"
    }
}

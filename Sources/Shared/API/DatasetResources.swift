import Foundation

/// Where a dataset job reads its entity rows, or writes its output, on the
/// agent's side: a connection of the agent's configuration and, in it, a CSV
/// file (`path`, in a folder connection), a SELECT (`query`, entities only,
/// operators and above) or a table (`table`, output only), in a PostgreSQL
/// connection. Outputs are confined by the agent to the connection's
/// `datasets` folder or schema. The control plane checks their shape; it
/// never reads them.
public struct DatasetLocation: Sendable, Codable, Hashable, CustomStringConvertible {
    /// The connection's name in the agent's configuration.
    public var connection: String
    /// A CSV file: for entities relative to the connection's folder, for an
    /// output relative to its `datasets` folder.
    public var path: String?
    /// A SELECT statement run in the connection's database (entities; the operator role).
    public var query: String?
    /// A new table (output): `name`, or `schema.name` where the schema is the
    /// connection's `datasets` schema.
    public var table: String?

    /// Creates a location.
    public init(connection: String, path: String? = nil, query: String? = nil, table: String? = nil) {
        self.connection = connection
        self.path = path
        self.query = query
        self.table = table
    }

    public var description: String {
        if let path { return "\(connection):\(path)" }
        if let table { return "\(connection):\(table)" }
        return "\(connection): query"
    }

    /// Why `path` cannot name a file inside a folder: absolute, empty, or with
    /// `.`, `..` or empty parts, or a control character; nil when it can.
    public static func pathProblem(_ path: String) -> String? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        if path.isEmpty || path.hasPrefix("/") || parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) {
            return "'\(path.prefix(200))' must be a relative path inside the folder, without '.', '..', empty parts or a leading '/'"
        }
        if path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) || path.utf8.count > 1024 {
            return "the path has a control character or is longer than 1,024 bytes"
        }
        return nil
    }
}

/// `POST /v1/workspaces/{workspace}/datasets`: build a point-in-time correct
/// training dataset on an agent (see docs/point-in-time.md).
public struct CreateDatasetRequest: Sendable, Codable, Hashable {
    /// A feature service, or
    public var featureService: String?
    /// feature references (`view:feature`, or `view`).
    public var features: [String]?
    /// The entity table: a CSV file or (operators) a query; or
    public var entities: DatasetLocation?
    /// a named entity query of the workspace (an `EntityQuery` definition).
    public var entityQuery: String?
    /// Where the dataset goes: a new CSV file or a new table, in the connection's `datasets` folder or schema.
    public var output: DatasetLocation
    /// The entity table's timestamp column (default `event_timestamp`).
    public var timestampColumn: String?
    /// Take timestamps without a UTC offset as UTC (otherwise they are refused).
    public var assumeUtc: Bool?
    /// Only agents of this environment may build it.
    public var environment: String?

    /// Creates a request.
    public init(
        featureService: String? = nil, features: [String]? = nil, entities: DatasetLocation? = nil, entityQuery: String? = nil,
        output: DatasetLocation, timestampColumn: String? = nil, assumeUtc: Bool? = nil, environment: String? = nil
    ) {
        self.featureService = featureService
        self.features = features
        self.entities = entities
        self.entityQuery = entityQuery
        self.output = output
        self.timestampColumn = timestampColumn
        self.assumeUtc = assumeUtc
        self.environment = environment
    }

    /// Whether the request carries SQL of its own (free SQL needs the operator role).
    public var hasFreeSQL: Bool { entities?.query != nil }

    /// The first problem with the request, as (field, detail), if any.
    public var problem: (field: String, detail: String)? {
        switch (featureService, features) {
        case (nil, nil), (_?, _?): return ("feature_service", "give either feature_service or features, not both")
        case (nil, let list?) where list.isEmpty: return ("features", "list at least one feature, such as driver_hourly_stats:conv_rate")
        default: break
        }
        switch (entities, entityQuery) {
        case (nil, nil), (_?, _?): return ("entities", "give the entity table as entities (a CSV path or a query) or as entity_query (a name), one of them")
        case (nil, let name?) where !Identifier.isValid(name): return ("entity_query", "'\(name.prefix(100))' is not an entity query's name")
        case (let entities?, nil):
            if [entities.path, entities.query].compactMap({ $0 }).count != 1 || entities.table != nil {
                return ("entities", "give the entity table as a CSV path or a query, one of them")
            }
            if let path = entities.path, let problem = DatasetLocation.pathProblem(path) { return ("entities.path", problem) }
            if !Identifier.isValid(entities.connection) { return ("entities.connection", "'\(entities.connection.prefix(100))' is not a connection name") }
        default: break
        }
        if [output.path, output.table].compactMap({ $0 }).count != 1 || output.query != nil {
            return ("output", "give the output as a CSV path or a table, one of them")
        }
        if let path = output.path, let problem = DatasetLocation.pathProblem(path) { return ("output.path", problem) }
        if let table = output.table {
            let parts = table.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard (1...2).contains(parts.count), parts.allSatisfy(Identifier.isValid) else {
                return ("output.table", "'\(table.prefix(200))' is not a table name (name or schema.name, lowercase letters, digits and '_')")
            }
        }
        if !Identifier.isValid(output.connection) { return ("output.connection", "'\(output.connection.prefix(100))' is not a connection name") }
        return nil
    }
}

/// What a dataset is, as the agent reports it: its shape, never its values.
public struct DatasetMetadata: Sendable, Codable, Hashable {
    /// One output column.
    public struct Column: Sendable, Codable, Hashable {
        /// Its name.
        public var name: String
        /// A feature's declared type, or `input` for a column of the entity table.
        public var type: String

        /// Creates a column.
        public init(name: String, type: String) {
            self.name = name
            self.type = type
        }
    }

    /// A feature view version the dataset read.
    public struct ViewVersion: Sendable, Codable, Hashable {
        public var view: String
        public var version: Int

        /// Creates a view version.
        public init(view: String, version: Int) {
            self.view = view
            self.version = version
        }
    }

    /// Rows (one per entity row).
    public var rows: Int64
    /// The columns, in order.
    public var columns: [Column]
    /// The feature view versions read.
    public var views: [ViewVersion]
    /// The earliest and latest entity timestamps.
    public var earliest: Date?
    public var latest: Date?
    /// The registry revision the features were resolved at.
    public var registryRevision: Int64
    /// SHA-256 of the output as written (CSV bytes, or the table's COPY rows), hex.
    public var sha256: String

    /// Creates metadata.
    public init(rows: Int64, columns: [Column], views: [ViewVersion], earliest: Date?, latest: Date?, registryRevision: Int64, sha256: String) {
        self.rows = rows
        self.columns = columns
        self.views = views
        self.earliest = earliest
        self.latest = latest
        self.registryRevision = registryRevision
        self.sha256 = sha256
    }
}

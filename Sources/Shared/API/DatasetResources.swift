import Foundation

/// Where a dataset job reads its entity rows, or writes its output, on the
/// agent's side: a connection of the agent's configuration and, in it, a CSV
/// file (`path`, in a folder connection), a SELECT (`query`, entities only)
/// or a table (`table`, `schema.table`, output only), in a PostgreSQL
/// connection. The control plane passes these along; it never reads them.
public struct DatasetLocation: Sendable, Codable, Hashable, CustomStringConvertible {
    /// The connection's name in the agent's configuration.
    public var connection: String
    /// A CSV file, relative to the connection's folder.
    public var path: String?
    /// A SELECT statement run in the connection's database (entities).
    public var query: String?
    /// A table, `schema.table`, created in the connection's database (output).
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
}

/// `POST /v1/workspaces/{workspace}/datasets`: build a point-in-time correct
/// training dataset on an agent (see docs/point-in-time.md).
public struct CreateDatasetRequest: Sendable, Codable, Hashable {
    /// A feature service, or
    public var featureService: String?
    /// feature references (`view:feature`, or `view`).
    public var features: [String]?
    /// The entity table: a CSV file or a query.
    public var entities: DatasetLocation
    /// Where the dataset goes: a CSV file or a new table.
    public var output: DatasetLocation
    /// The entity table's timestamp column (default `event_timestamp`).
    public var timestampColumn: String?
    /// Take timestamps without a UTC offset as UTC (otherwise they are refused).
    public var assumeUtc: Bool?
    /// Only agents of this environment may build it.
    public var environment: String?

    /// Creates a request.
    public init(
        featureService: String? = nil, features: [String]? = nil, entities: DatasetLocation, output: DatasetLocation,
        timestampColumn: String? = nil, assumeUtc: Bool? = nil, environment: String? = nil
    ) {
        self.featureService = featureService
        self.features = features
        self.entities = entities
        self.output = output
        self.timestampColumn = timestampColumn
        self.assumeUtc = assumeUtc
        self.environment = environment
    }

    /// The first problem with the request, as (field, detail), if any.
    public var problem: (field: String, detail: String)? {
        switch (featureService, features) {
        case (nil, nil), (_?, _?): return ("feature_service", "give either feature_service or features, not both")
        case (nil, let list?) where list.isEmpty: return ("features", "list at least one feature, such as driver_hourly_stats:conv_rate")
        default: break
        }
        if [entities.path, entities.query].compactMap({ $0 }).count != 1 || entities.table != nil {
            return ("entities", "give the entity table as a CSV path or a query, one of them")
        }
        if [output.path, output.table].compactMap({ $0 }).count != 1 || output.query != nil {
            return ("output", "give the output as a CSV path or a table, one of them")
        }
        if let table = output.table {
            let parts = table.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2, parts.allSatisfy(Identifier.isValid) else {
                return ("output.table", "'\(table)' is not schema.table (lowercase letters, digits and '_')")
            }
        }
        for (field, location) in [("entities", entities), ("output", output)] where !Identifier.isValid(location.connection) {
            return ("\(field).connection", "'\(location.connection)' is not a connection name")
        }
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

/// The example repository `larder init` writes: the `examples/driver-stats`
/// repository of the Larder source tree (a test keeps the two identical).
/// Regenerate with `scripts/sync-scaffold`.
public enum RepositoryScaffold {
    /// The files, keyed by their paths relative to the repository root.
    public static let files: [(path: String, contents: String)] = [
        (
            "entities.yaml",
            #"""
            # Entities: what the features describe, and the keys that identify each one.
            kind: Entity
            name: driver
            join_keys:
              driver_id: int64
            description: A driver on the rides platform.
            owner: rides-ml@example.com
            tags:
              domain: rides
            ---
            kind: Entity
            name: customer
            join_keys:
              customer_id: string
            description: A customer who books trips.
            owner: rides-ml@example.com
            tags:
              domain: rides
            """# + "\n"
        ),
        (
            "features.yaml",
            #"""
            # Batch feature views: features computed from the sources by the agent.
            kind: FeatureView
            name: driver_hourly_stats
            entities: [driver]
            source: driver_stats_files
            ttl: 2d
            schedule: 1h
            feature_start_time: 2025-01-01T00:00:00Z
            features:
              - name: conv_rate
                type: float64
                description: Share of offers the driver converted into trips.
              - name: acc_rate
                type: float64
                description: Share of offers the driver accepted.
              - name: avg_daily_trips
                type: int64
            # Checked by the agent on every materialization job. warn: the job
            # writes and an alert opens; fail: the job fails and writes nothing.
            expectations:
              on_violation: warn
              features:
                conv_rate: {max_null_fraction: 0.1, min: 0, max: 1}
                acc_rate: {min: 0, max: 1}
            description: Hourly quality statistics of each driver.
            owner: rides-ml@example.com
            tags:
              team: ranking
            ---
            # Time-window aggregations over raw trips: one feature per function and window.
            kind: FeatureView
            name: driver_trip_aggregates
            entities: [driver]
            source: trips
            slide: 1h
            schedule: 1h
            feature_start_time: 2025-01-01T00:00:00Z
            aggregations:
              - function: count
                column: trip_id
                windows: [1h, 1d, 7d]
                name: trips_count
              - function: mean
                column: fare
                windows: [1d, 7d]
              - function: sum
                column: distance_km
                windows: [7d]
            description: Trip counts, fares and distances of each driver over the last hour, day and week.
            owner: rides-ml@example.com
            tags:
              team: ranking
            ---
            # A SQL transformation, run by the agent inside the customer's PostgreSQL.
            kind: FeatureView
            name: customer_trip_stats
            entities: [customer]
            source: trips
            ttl: 30d
            schedule:
              cron: "0 2 * * *"
            feature_start_time: 2025-01-01T00:00:00Z
            sql: |
              SELECT customer_id,
                     completed_at,
                     fare / NULLIF(distance_km, 0) AS fare_per_km,
                     rating
              FROM {{ source }}
            features:
              - name: fare_per_km
                type: float64
              - name: rating
                type: int32
                description: The rating the customer gave the trip.
            description: Per-trip price and rating of each customer, refreshed nightly.
            owner: rides-ml@example.com
            """# + "\n"
        ),
        (
            "larder.yaml",
            #"""
            # The workspace this repository describes, and the control plane that keeps it.
            workspace: driver-stats
            control_plane: http://127.0.0.1:7070
            """# + "\n"
        ),
        (
            "on_demand.yaml",
            #"""
            # On-demand features: computed when a model asks, from stored features and
            # fields of the request.
            kind: OnDemandFeatureView
            name: trip_quote
            inputs:
              features:
                - driver_hourly_stats:conv_rate
                - driver_trip_aggregates:fare_mean_7d
              request:
                trip_distance_km: float64
            outputs:
              - name: expected_fare
                type: float64
                expression: trip_distance_km * fare_mean_7d
                description: What the trip would cost at the driver's usual fare.
              - name: likely_to_convert
                type: bool
                expression: conv_rate > 0.5
            description: Request-time estimates for a quoted trip.
            owner: rides-ml@example.com
            """# + "\n"
        ),
        (
            "services.yaml",
            #"""
            # Feature services: the feature sets models consume.
            kind: FeatureService
            name: driver_ranking
            features:
              - driver_hourly_stats
              - driver_trip_aggregates:trips_count_1d
              - driver_trip_aggregates:trips_count_7d
              - driver_trip_aggregates:fare_mean_7d
              - trip_quote
            description: Features of the driver-ranking model.
            owner: rides-ml@example.com
            tags:
              model: driver_ranking
            """# + "\n"
        ),
        (
            "sources.yaml",
            #"""
            # Sources: where raw events live. Connection names ("local_files", "rides_db")
            # are resolved by the data-plane agent from its own configuration; credentials
            # never appear in the repository or reach the control plane.
            kind: FileSource
            name: driver_stats_files
            connection: local_files
            paths:
              - driver_hourly_stats.csv
            timestamp_field: event_timestamp
            created_timestamp_field: created
            columns:
              driver_id: int64
              conv_rate: float64
              acc_rate: float64
              avg_daily_trips: int64
            description: Hourly driver quality statistics exported by the rides pipeline.
            owner: rides-data@example.com
            ---
            kind: PostgresSource
            name: trips
            connection: rides_db
            table: public.trips
            timestamp_field: completed_at
            columns:
              trip_id: int64
              driver_id: int64
              customer_id: string
              fare: float64
              distance_km: float64
              rating: int32
            description: Completed trips, one row per trip.
            owner: rides-data@example.com
            """# + "\n"
        ),
    ]
}

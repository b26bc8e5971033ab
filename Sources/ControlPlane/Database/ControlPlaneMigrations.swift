import Foundation

/// The control plane's schema migrations: the numbered SQL files in
/// `Database/Migrations`, compiled into the binary. A test checks that every
/// file there is listed here.
public enum ControlPlaneMigrations {
    /// Every migration, in order.
    public static let all: [Migration] = [
        // SwiftPM names embedded files after their paths; a leading digit becomes "_".
        migration("0001_registry.sql", PackageResources._001_registry_sql),
        migration("0002_access.sql", PackageResources._002_access_sql),
        migration("0003_plan_writes.sql", PackageResources._003_plan_writes_sql),
        migration("0004_signing_key.sql", PackageResources._004_signing_key_sql),
        migration("0005_jobs.sql", PackageResources._005_jobs_sql),
        migration("0006_access_version.sql", PackageResources._006_access_version_sql),
        migration("0007_dataset_jobs.sql", PackageResources._007_dataset_jobs_sql),
        migration("0008_alerts.sql", PackageResources._008_alerts_sql),
        migration("0009_alert_deliveries.sql", PackageResources._009_alert_deliveries_sql),
        migration("0010_enrollment.sql", PackageResources._010_enrollment_sql),
        migration("0011_token_audience.sql", PackageResources._011_token_audience_sql),
        migration("0012_lease_terms.sql", PackageResources._012_lease_terms_sql),
        migration("0013_signing_key_rotation.sql", PackageResources._013_signing_key_rotation_sql),
        migration("0014_metrics_audience.sql", PackageResources._014_metrics_audience_sql),
        migration("0015_sessions.sql", PackageResources._015_sessions_sql),
        migration("0016_audit_partitions.sql", PackageResources._016_audit_partitions_sql),
        migration("0017_environments.sql", PackageResources._017_environments_sql),
        migration("0018_recompute.sql", PackageResources._018_recompute_sql),
    ]

    static func migration(_ fileName: String, _ bytes: [UInt8]) -> Migration {
        let stem = fileName.replacingOccurrences(of: ".sql", with: "")
        let number = stem.prefix { $0.isNumber }
        return Migration(
            version: Int(number) ?? 0, name: String(stem.dropFirst(number.count + 1)), sql: String(decoding: bytes, as: UTF8.self))
    }
}

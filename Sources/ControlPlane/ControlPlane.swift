import Shared

/// The control plane: the registry of feature definitions and their versions,
/// access control, and job dispatch, kept in PostgreSQL and served over HTTP by
/// `larder-control`. It never links the data plane and never sees feature values.
public enum ControlPlane {
    /// The component name used in logs and `--version` output.
    public static let component = "larder-control"
}

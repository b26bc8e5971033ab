import Shared

/// The data plane: the agent installed in a customer environment. It pulls
/// jobs from the control plane, runs them against the customer's own sources
/// and stores, and serves features. It never links the control plane.
public enum DataPlane {
    /// The component name used in logs and `--version` output.
    public static let component = "larder-agent"

    /// The executors this build of the agent has. None yet: materialization
    /// arrives with the materialization engine, and nothing here pretends to do it.
    public static func executors(configuration: AgentConfiguration) -> [any JobExecutor] { [] }
}

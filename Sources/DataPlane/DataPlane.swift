import Foundation
import Logging
import Shared

/// The data plane: the agent installed in a customer environment. It pulls
/// jobs from the control plane, runs them against the customer's own sources
/// and stores, and serves features. It never links the control plane.
public enum DataPlane {
    /// The component name used in logs and `--version` output.
    public static let component = "larder-agent"

    /// The executors this build of the agent has.
    public static func executors(configuration: AgentConfiguration, online: OnlineBackend, logger: Logger) -> [any JobExecutor] {
        [
            MaterializeExecutor(configuration: configuration, online: online, logger: logger),
            DatasetExecutor(configuration: configuration, logger: logger),
        ]
    }

    static func inDataDirectory(_ configuration: AgentConfiguration, _ name: String) -> String {
        (configuration.dataDirectory as NSString).appendingPathComponent(name)
    }

    /// Where the feature server spools uploaded entity tables while their datasets are built.
    public static func datasetUploadsDirectory(_ configuration: AgentConfiguration) -> String {
        inDataDirectory(configuration, "datasets")
    }

    /// Where the agent keeps its online store under its data directory.
    public static func onlineStoreDirectory(_ configuration: AgentConfiguration) -> String {
        inDataDirectory(configuration, "online")
    }

    /// Where the agent keeps its signed definitions under its data directory.
    public static func definitionsDirectory(_ configuration: AgentConfiguration) -> String {
        inDataDirectory(configuration, "definitions")
    }

    /// Where the agent keeps its workspace's signed registry snapshot.
    public static func registrySnapshotFile(_ configuration: AgentConfiguration) -> String {
        inDataDirectory(configuration, "registry-snapshot.json")
    }

    /// The signing keys the agent trusts, as key rotations moved them (see `TrustedSigningKeys`).
    public static func signingKeysFile(_ configuration: AgentConfiguration) -> String {
        inDataDirectory(configuration, "signing-keys.json")
    }

    /// Where the agent keeps its workspace's signed access snapshot.
    public static func accessSnapshotFile(_ configuration: AgentConfiguration) -> String {
        inDataDirectory(configuration, "access-snapshot.json")
    }

    /// The folder of the push journal (accepted pushes, replayed at start).
    public static func pushDirectory(_ configuration: AgentConfiguration) -> String {
        inDataDirectory(configuration, "push")
    }

    /// The file the feature server writes its bound address to (`http://host:port`) once it listens.
    public static func servingAddressFile(_ configuration: AgentConfiguration) -> String {
        inDataDirectory(configuration, "serving-address")
    }
}

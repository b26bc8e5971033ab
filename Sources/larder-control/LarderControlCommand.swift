import ArgumentParser
import ControlPlane
import Shared

/// `larder-control`: the control-plane server.
@main
struct LarderControlCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: ControlPlane.component,
        abstract: "The Larder control plane: registry, access control and job dispatch.",
        version: LarderVersion.description
    )
}

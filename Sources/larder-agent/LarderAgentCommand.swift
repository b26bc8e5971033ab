import ArgumentParser
import DataPlane
import Shared

/// `larder-agent`: the data-plane agent.
@main
struct LarderAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: DataPlane.component,
        abstract: "The Larder data-plane agent: runs jobs and serves features in your environment.",
        version: LarderVersion.description
    )
}

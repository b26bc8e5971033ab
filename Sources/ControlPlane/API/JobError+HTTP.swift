import Hummingbird
import Shared

extension APIProblem {
    /// The HTTP form of each job error.
    init(_ error: JobError) {
        switch error {
        case .jobNotFound(let id):
            self.init(status: .notFound, code: "job-not-found", title: "Job not found", detail: "no job \(id) in this workspace", field: "job")
        case .leaseLost(let id):
            self.init(status: .conflict, code: "lease-lost", title: "Lease lost",
                      detail: "the lease on job \(id) is no longer yours (it expired or the job was given to another attempt); stop working on it",
                      field: "lease_token")
        case .invalidState(let id, let state, let detail):
            self.init(status: .conflict, code: "invalid-job-state", title: "Invalid job state",
                      detail: "job \(id) is \(state.rawValue): \(detail)", field: "job")
        case .featureViewNotFound(let name):
            self.init(status: .notFound, code: "feature-view-not-found", title: "Feature view not found",
                      detail: "no current feature view named '\(name)'", field: "feature_view")
        case .invalidArgument(let field, let detail):
            self = .badRequest(field: field, detail)
        case .unknownAgent(let name):
            self.init(status: .forbidden, code: "forbidden", title: "Forbidden", detail: "'\(name)' is not an agent")
        case .environmentNotFound(let name):
            self.init(status: .notFound, code: "environment-not-found", title: "Environment not found",
                      detail: "no environment named '\(name)' in this workspace; create it first (larder environments create \(name))",
                      field: "environment")
        case .environmentExists(let name):
            self.init(status: .conflict, code: "environment-exists", title: "Environment exists",
                      detail: "the workspace has an environment named '\(name)' already", field: "name")
        case .environmentInUse(let name, let agents):
            self.init(status: .conflict, code: "environment-in-use", title: "Environment in use",
                      detail: "environment '\(name)' still has agents (\(agents.joined(separator: ", "))); remove them first (larder agents remove NAME)",
                      field: "environment")
        case .embeddedStoreTaken(let environment, let writer):
            self.init(status: .conflict, code: "embedded-store-taken", title: "Environment has its agent",
                      detail: "environment '\(environment)' keeps its online store embedded in agent '\(writer)', so it takes no second agent: "
                          + "two agents would each hold part of the values. To run several agents, give the environment a shared store "
                          + "(create one with --online-store redis and point the agents' online_store at Redis); to replace the agent, "
                          + "remove it first (larder agents remove \(writer))",
                      field: "environment")
        case .onlineStoreMismatch(let environment, let declared, let agent):
            self.init(status: .conflict, code: "online-store-mismatch", title: "Online store mismatch",
                      detail: "environment '\(environment)' declares a \(declared.rawValue) online store, but this agent's settings "
                          + "configure \(agent.rawValue); set online_store in the agent's settings to match (or use another environment)",
                      field: "online_store")
        }
    }
}

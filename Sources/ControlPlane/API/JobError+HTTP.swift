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
        }
    }
}

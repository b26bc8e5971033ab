import Hummingbird
import Shared

extension APIProblem {
    /// The HTTP form of each registry error.
    init(_ error: RegistryError) {
        switch error {
        case .workspaceNotFound(let name):
            self.init(status: .notFound, code: "workspace-not-found", title: "Workspace not found",
                      detail: "no workspace named '\(name)'", field: "workspace")
        case .workspaceExists(let name):
            self.init(status: .conflict, code: "workspace-exists", title: "Workspace exists",
                      detail: "a workspace named '\(name)' exists already", field: "name")
        case .workspaceNotEmpty(let name, let objects):
            self.init(status: .conflict, code: "workspace-not-empty", title: "Workspace not empty",
                      detail: "workspace '\(name)' still has \(objects) current objects; apply an empty repository to retire them first",
                      field: "workspace")
        case .objectNotFound(let collection, let name):
            self.init(status: .notFound, code: "object-not-found", title: "Object not found",
                      detail: "no object named '\(name)' in \(collection.rawValue)", field: "name")
        case .versionNotFound(let key, let version):
            self.init(status: .notFound, code: "version-not-found", title: "Version not found",
                      detail: "\(key) has no version \(version)", field: "version", object: key.description)
        case .planNotFound(let id):
            self.init(status: .notFound, code: "plan-not-found", title: "Plan not found",
                      detail: "no plan \(id) in this workspace", field: "plan_id")
        case .invalidRepository(let diagnostics):
            let first = diagnostics.first.map { ": first, \($0)" } ?? ""
            self.init(status: .unprocessableContent, code: "invalid-repository", title: "Invalid repository",
                      detail: "the repository has \(diagnostics.count) error(s)\(first)", field: "files",
                      diagnostics: diagnostics)
        case .workspaceMismatch(let url, let repository):
            self.init(status: .unprocessableContent, code: "workspace-mismatch", title: "Workspace mismatch",
                      detail: "the repository's larder.yaml names workspace '\(repository)', but it was sent to '\(url)'",
                      field: "files")
        case .planConflict(let planRevision, let currentRevision):
            self.init(status: .conflict, code: "plan-conflict", title: "Plan out of date",
                      detail: "the plan was computed at revision \(planRevision), but the workspace is at revision \(currentRevision); plan again",
                      field: "plan_id")
        case .planAlreadyApplied(let id):
            self.init(status: .conflict, code: "plan-already-applied", title: "Plan already applied",
                      detail: "plan \(id) was applied already; plan again", field: "plan_id")
        case .unplannable(let error):
            self.init(status: .unprocessableContent, code: "unplannable", title: "Repository cannot be applied",
                      detail: error.detail, field: "files", object: error.object.description)
        case .invalidArgument(let field, let detail):
            self = .badRequest(field: field, detail)
        }
    }
}

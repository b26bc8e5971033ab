import ArgumentParser
import Foundation
import Shared

/// `larder login`: checks a token (or a user's password) and stores it.
struct LoginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "login",
        abstract: "Store the control plane's URL and a token in ~/.config/larder/config.json (mode 0600).",
        discussion: """
            Give a token with --token (or on standard input with --token -), or a user name with --user to be asked \
            for the password and get a session token.
            """)
    @Option(help: "The control plane's URL.") var url: String = ProcessInfo.processInfo.environment["LARDER_URL"] ?? "http://127.0.0.1:7070"
    @Option(help: "A token; '-' reads it from standard input.") var token: String?
    @Option(help: "A user name: log in with the user's password.") var user: String?
    @Flag(help: "Allow http:// to a control plane on another host (tokens cross the network unencrypted).") var allowInsecureHttp = false

    func validate() throws {
        if (token == nil) == (user == nil) { throw ValidationError("give either --token or --user") }
        try CLIHTTP.check(url, allowInsecureHTTP: allowInsecureHttp)
    }

    func run() async throws {
        try await CLIOutput.reportingErrors {
            var secret = token
            if secret == "-" { secret = readLine()?.trimmingCharacters(in: .whitespaces) }
            if let user {
                let password = String(cString: getpass("password for \(user): "))
                let session = try await ControlPlaneClient(baseURL: url, httpClient: CLIHTTP.client).login(name: user, password: password)
                secret = session.token
            }
            guard let secret, !secret.isEmpty else { throw ValidationError("no token given") }
            let me = try await ControlPlaneClient(baseURL: url, token: secret, httpClient: CLIHTTP.client).whoami()
            try CLIConfiguration(url: url, token: secret).save()
            print("logged in to \(url) as \(me.principal.name) (\(me.principal.kind.rawValue)); saved to \(CLIConfiguration.path().path)")
        }
    }
}

/// `larder whoami`.
struct WhoAmICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "whoami", abstract: "Show who the current token belongs to.")
    @OptionGroup var server: ServerOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await CLIOutput.reportingErrors {
            let me = try await try server.client().whoami()
            if json { return try CLIOutput.json(me) }
            print("\(me.principal.name) (\(me.principal.kind.rawValue)\(me.principal.admin ? ", admin" : "")), token \(me.tokenPublicId)")
            for (workspace, roles) in me.roles.sorted(by: { $0.key < $1.key }) {
                print("  \(workspace): \(roles.map(\.rawValue).joined(separator: ", "))")
            }
        }
    }
}

/// `larder principals …` and `larder service-accounts …`.
struct PrincipalsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "principals", abstract: "Manage users and service accounts (admins).",
        subcommands: [List.self, Create.self, Disable.self, Password.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List principals.")
        @OptionGroup var server: ServerOptions
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            try await CLIOutput.reportingErrors {
                let principals = try await try server.client().principals()
                if json { return try CLIOutput.json(principals) }
                print(CLIOutput.table(
                    ["NAME", "KIND", "ADMIN", "WORKSPACE", "STATE", "DESCRIPTION"],
                    principals.map {
                        [$0.name, $0.kind.rawValue, $0.admin ? "yes" : "", $0.workspace ?? "", $0.disabledAt == nil ? "active" : "disabled",
                         $0.description ?? ""]
                    }))
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a user (--password asks for one) or a service account.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The name.") var name: String
        @Flag(help: "Create a service account (a machine identity with tokens only).") var serviceAccount = false
        @Flag(help: "Grant the instance role admin.") var admin = false
        @Flag(help: "Ask for a password (users only).") var password = false
        @Option(help: "A description.") var description: String?
        func run() async throws {
            try await CLIOutput.reportingErrors {
                let secret = password ? String(cString: getpass("password for \(name): ")) : nil
                let created = try await try server.client().createPrincipal(CreatePrincipalRequest(
                    name: name, kind: serviceAccount ? .serviceAccount : .user, admin: admin, description: description, password: secret))
                print("created \(created.kind.rawValue) '\(created.name)'")
            }
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a principal: its tokens stop working at once.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The name.") var name: String
        func run() async throws {
            try await CLIOutput.reportingErrors {
                try await try server.client().disablePrincipal(name)
                print("disabled '\(name)'")
            }
        }
    }

    struct Password: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "password",
            abstract: "Set a user's password: yours (asks for the current one too, and ends your other sessions), or any as admin.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The user.") var name: String
        func run() async throws {
            try await CLIOutput.reportingErrors {
                let client = try server.client()
                let me = try await client.whoami().principal.name
                let current = me == name ? String(cString: getpass("current password for \(name): ")) : nil
                try await client.setPassword(String(cString: getpass("new password for \(name): ")), for: name, current: current)
                print(me == name ? "password set; your other sessions have ended" : "password set; \(name)'s sessions have ended")
            }
        }
    }
}

/// `larder service-accounts create NAME`: shorthand for `principals create --service-account`.
struct ServiceAccountsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service-accounts", abstract: "Create service accounts (admins).", subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a service account, optionally with a first token and a role.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The name.") var name: String
        @Option(help: "A description.") var description: String?
        @Option(help: "Also grant this role in --workspace.") var role: WorkspaceRole?
        @Flag(help: "Also create a token and print it (shown once).") var token = false
        @Option(help: """
            Where the token works: control-plane, data-plane (agents' feature servers only) or both. \
            Default: data-plane with --role consumer (a model server's), else control-plane.
            """)
        var audience: TokenAudience?
        func run() async throws {
            try await CLIOutput.reportingErrors {
                let client = try server.client()
                _ = try await client.createPrincipal(CreatePrincipalRequest(name: name, kind: .serviceAccount, description: description))
                print("created service account '\(name)'")
                if let role {
                    let workspace = try server.workspaceName()
                    try await client.grant(role, to: name, workspace: workspace)
                    print("granted \(role.rawValue) in '\(workspace)'")
                }
                if token {
                    let created = try await client.createToken(
                        for: name, description: "created with the service account", audience: audience ?? (role == .consumer ? .dataPlane : .controlPlane))
                    print("token (shown only now): \(created.token)")
                    print("audience: \(created.resource.audience.rawValue)" + (created.resource.audience == .dataPlane
                        ? " (agents' feature servers only; the control plane takes it for whoami alone)" : ""))
                }
            }
        }
    }
}

extension WorkspaceRole: ExpressibleByArgument {}
extension TokenAudience: ExpressibleByArgument {}

/// `larder tokens …`.
struct TokensCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokens", abstract: "Create, list and revoke API tokens.",
        subcommands: [List.self, Create.self, Revoke.self], defaultSubcommand: List.self)

    /// The principal whose tokens: `--principal`, else the caller.
    static func owner(_ principal: String?, client: ControlPlaneClient) async throws -> String {
        if let principal { return principal }
        return try await client.whoami().principal.name
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List tokens (never their secrets).")
        @OptionGroup var server: ServerOptions
        @Option(help: "Whose tokens (default: yours).") var principal: String?
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            try await CLIOutput.reportingErrors {
                let client = try server.client()
                let tokens = try await client.tokens(of: try await TokensCommand.owner(principal, client: client))
                if json { return try CLIOutput.json(tokens) }
                print(CLIOutput.table(
                    ["ID", "STATE", "AUDIENCE", "EXPIRES", "LAST USED", "DESCRIPTION"],
                    tokens.map {
                        [$0.publicId, $0.revokedAt != nil ? "revoked" : ($0.expiresAt.map { $0 < Date() } == true ? "expired" : "active"),
                         $0.audience.rawValue,
                         $0.expiresAt.map(RFC3339.format) ?? "never", $0.lastUsedAt.map(RFC3339.format) ?? "", $0.description ?? ""]
                    }))
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a token and print it (shown only once).")
        @OptionGroup var server: ServerOptions
        @Option(help: "For whom (default: yourself).") var principal: String?
        @Option(help: "Where it will be used.") var description: String?
        @Option(help: "Lifetime such as 30d or 12h (default: no expiry).") var expiresIn: String?
        @Option(help: "Where it works: control-plane (default), data-plane (agents' feature servers only), both, or metrics (/metrics only).")
        var audience: TokenAudience = .controlPlane
        func run() async throws {
            var seconds: Int?
            if let expiresIn {
                guard let span = try? TimeSpan.parse(expiresIn), span.seconds > 0 else { throw ValidationError("--expires-in takes a duration such as 30d") }
                seconds = Int(span.seconds)
            }
            try await CLIOutput.reportingErrors {
                let client = try server.client()
                let created = try await client.createToken(
                    for: try await TokensCommand.owner(principal, client: client), description: description, expiresInSeconds: seconds,
                    audience: audience)
                print(created.token)
                CLIOutput.error("token \(created.resource.publicId) for \(created.resource.principal): shown only now; store it safely")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token by its id.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The token's id (the part after lrd_).") var id: String
        @Option(help: "Whose token (default: yours).") var principal: String?
        func run() async throws {
            try await CLIOutput.reportingErrors {
                let client = try server.client()
                try await client.revokeToken(id, of: try await TokensCommand.owner(principal, client: client))
                print("revoked \(id)")
            }
        }
    }
}

/// `larder access …`.
struct AccessCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "access", abstract: "Grant, revoke and list workspace roles (owners).",
        subcommands: [List.self, Grant.self, Revoke.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List a workspace's role bindings.")
        @OptionGroup var server: ServerOptions
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            try await CLIOutput.reportingErrors {
                let bindings = try await try server.client().bindings(workspace: try server.workspaceName())
                if json { return try CLIOutput.json(bindings) }
                print(CLIOutput.table(
                    ["PRINCIPAL", "KIND", "ROLE", "GRANTED BY", "AT"],
                    bindings.map { [$0.principal, $0.kind.rawValue, $0.role.rawValue, $0.createdBy, RFC3339.format($0.createdAt)] }))
            }
        }
    }

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Grant a principal a role in the workspace.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The principal.") var principal: String
        @Argument(help: "viewer, consumer, operator, editor or owner.") var role: WorkspaceRole
        func run() async throws {
            try await CLIOutput.reportingErrors {
                let workspace = try server.workspaceName()
                try await try server.client().grant(role, to: principal, workspace: workspace)
                print("granted \(role.rawValue) in '\(workspace)' to \(principal)")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a principal's role in the workspace.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The principal.") var principal: String
        @Argument(help: "The role.") var role: WorkspaceRole
        func run() async throws {
            try await CLIOutput.reportingErrors {
                let workspace = try server.workspaceName()
                try await try server.client().revoke(role, from: principal, workspace: workspace)
                print("revoked \(role.rawValue) in '\(workspace)' from \(principal)")
            }
        }
    }
}

/// `larder audit`.
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "audit", abstract: "Read the audit log (admins; owners with -w).")
    @OptionGroup var server: ServerOptions
    @Option(help: "Only this principal's records.") var principal: String?
    @Option(help: "success, failure or denied.") var outcome: String?
    @Option(help: "Only records since this RFC 3339 time.") var since: String?
    @Option(help: "How many records.") var limit = 50
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        var sinceDate: Date?
        if let since {
            guard let date = RFC3339.parse(since) else { throw ValidationError("--since takes an RFC 3339 time such as 2025-01-01T00:00:00Z") }
            sinceDate = date
        }
        try await CLIOutput.reportingErrors {
            let page = try await try server.client().audit(
                workspace: server.workspace ?? ProcessInfo.processInfo.environment["LARDER_WORKSPACE"], principal: principal,
                outcome: outcome, since: sinceDate, limit: limit)
            if json { return try CLIOutput.json(page.items) }
            print(CLIOutput.table(
                ["AT", "PRINCIPAL", "OUTCOME", "STATUS", "ACTION", "CLIENT"],
                page.items.map { [RFC3339.format($0.at), $0.principal, $0.outcome, "\($0.status)", $0.action, $0.clientAddress ?? ""] }))
        }
    }
}

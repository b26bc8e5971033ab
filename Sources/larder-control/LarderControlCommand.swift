import ArgumentParser
import ControlPlane
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import Shared

/// `larder-control`: the control-plane server.
@main
struct LarderControlCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: ControlPlane.component,
        abstract: "The Larder control plane: registry, access control and job dispatch.",
        version: LarderVersion.description,
        subcommands: [Serve.self, Migrate.self, Token.self, Key.self],
        defaultSubcommand: Serve.self
    )
}

/// Flags shared by the subcommands; each falls back to its environment variable.
struct ControlOptions: ParsableArguments {
    @Option(help: "PostgreSQL URL of the registry (LARDER_DATABASE_URL).") var databaseURL: String?
    @Option(help: "host:port to listen on (LARDER_LISTEN, default 127.0.0.1:7070).") var listen: String?
    @Option(help: "PEM certificate chain for HTTPS (LARDER_TLS_CERTIFICATE).") var tlsCertificate: String?
    @Option(help: "PEM private key for HTTPS (LARDER_TLS_KEY).") var tlsKey: String?
    @Option(help: "trace, debug, info, notice, warning, error or critical (LARDER_LOG_LEVEL, default info).") var logLevel: String?

    /// Reads the configuration and sets up logging to stderr at its level.
    func setUp() throws -> (ControlPlaneConfiguration, Logger) {
        let configuration: ControlPlaneConfiguration
        do {
            configuration = try ControlPlaneConfiguration(
                databaseURL: databaseURL, listen: listen, tlsCertificate: tlsCertificate, tlsKey: tlsKey, logLevel: logLevel)
        } catch {
            throw ValidationError(error.description)
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = configuration.logLevel
            return handler
        }
        return (configuration, Logger(label: ControlPlane.component))
    }
}

extension LarderControlCommand {
    /// Runs the server until SIGTERM or SIGINT.
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Apply pending migrations and serve the API (the default).")
        @OptionGroup var options: ControlOptions

        func run() async throws {
            let (configuration, logger) = try options.setUp()
            let application = try ControlPlaneApplication.build(configuration: configuration, logger: logger)
            try await application.runService(gracefulShutdownSignals: [.sigterm, .sigint])
        }
    }

    /// Prints a new random token, for `LARDER_BOOTSTRAP_TOKEN`.
    struct Token: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a new random API token (for LARDER_BOOTSTRAP_TOKEN); nothing is stored.")

        func run() {
            print(APIToken.generate().text)
        }
    }

    /// Prints the public key agents pin, creating the key pair if needed.
    struct Key: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the public key that signs job specs (agents pin it) and its fingerprint.")
        @OptionGroup var options: ControlOptions

        func run() async throws {
            let (configuration, logger) = try options.setUp()
            let client = PostgresClient(configuration: configuration.database.clientConfiguration(), backgroundLogger: logger)
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await client.run() }
                try await MigrationRunner().run(on: client, logger: logger)
                let keys = try await SigningKeyStore.loadOrCreate(client: client, encryption: configuration.signingKeyEncryption, logger: logger)
                print("public key:  \(keys.publicKey)")
                print("fingerprint: \(keys.publicKey.fingerprint)")
                group.cancelAll()
            }
        }
    }

    /// Applies pending migrations and exits.
    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Apply pending schema migrations and exit.")
        @OptionGroup var options: ControlOptions

        func run() async throws {
            let (configuration, logger) = try options.setUp()
            let client = PostgresClient(configuration: configuration.database.clientConfiguration(), backgroundLogger: logger)
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await client.run() }
                let applied = try await MigrationRunner().run(on: client, logger: logger)
                print(applied.isEmpty ? "schema is up to date" : "applied migrations \(applied.map(String.init).joined(separator: ", "))")
                group.cancelAll()
            }
        }
    }
}

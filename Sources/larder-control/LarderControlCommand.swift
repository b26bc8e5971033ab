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
    @Option(help: "Event loops (and blocking threads) to run (LARDER_EVENT_LOOPS, default: the CPUs this process may use).") var eventLoops: Int?

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
            do {
                try EventLoopSizing.apply(configured: options.eventLoops, environment: ProcessInfo.processInfo.environment, logger: logger)
            } catch {
                throw ValidationError("\(error)")
            }
            let application = try ControlPlaneApplication.build(configuration: configuration, logger: logger)
            do {
                try await application.runService(gracefulShutdownSignals: [.sigterm, .sigint])
            } catch is CancellationError {
                // SIGTERM or SIGINT while it was still starting (waiting for its database, say).
                logger.notice("stopped before the server started")
            }
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

    /// The signing keys: print the active one, list them, rotate, seal.
    struct Key: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The keys that sign job specs and snapshots: print, list, rotate (rotate, activate, retire), seal.",
            discussion: """
                A rotation takes three steps. 'rotate' makes a new key: agents learn it with their next heartbeat \
                and accept it, but it signs nothing yet. 'activate' makes it sign; the old key stays accepted, and \
                still vouches for the new one to agents that were away. 'retire' ends the overlap: agents drop the \
                old key, its private key is erased, and the specs of unfinished jobs it signed are signed again. \
                'list' shows which agents hold the newest key set: retire once they all do (an agent that was away \
                through all three steps must be given the new key by hand, as public_key in its settings).
                """,
            subcommands: [Show.self, List.self, Rotate.self, Activate.self, Retire.self, Seal.self],
            defaultSubcommand: Show.self)

        /// Runs `body` with a migrated registry database.
        static func withRegistry<Result: Sendable>(
            _ options: ControlOptions,
            _ body: @Sendable @escaping (ControlPlaneConfiguration, PostgresClient, Logger) async throws -> Result
        ) async throws -> Result {
            let (configuration, logger) = try options.setUp()
            try await DatabaseStartup.waitUntilReachable(configuration.database, patience: configuration.databaseWait, logger: logger)
            let client = PostgresClient(configuration: configuration.database.clientConfiguration(), backgroundLogger: logger)
            return try await withThrowingTaskGroup(of: Result?.self) { group in
                group.addTask { await client.run(); return nil }
                defer { group.cancelAll() }
                try await MigrationRunner().run(on: client, logger: logger)
                return try await body(configuration, client, logger)
            }
        }

        static func describe(_ ring: SigningKeyRing) {
            print("generation:  \(ring.generation)")
            print("active:      \(ring.active.publicKey.fingerprint)  \(ring.active.publicKey)")
            if let next = ring.next { print("next:        \(next.fingerprint)  \(next)") }
            if let previous = ring.previous { print("previous:    \(previous.publicKey.fingerprint)  \(previous.publicKey)") }
        }

        /// Prints the public key agents pin, creating the key pair if needed.
        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "show", abstract: "Print the public key that signs now (agents pin it) and its fingerprint.")
            @OptionGroup var options: ControlOptions

            func run() async throws {
                let keys = try await Key.withRegistry(options) { configuration, client, logger in
                    try await SigningKeyStore.loadOrCreate(client: client, encryption: configuration.signingKeyEncryption, logger: logger)
                }
                print("public key:  \(keys.publicKey)")
                print("fingerprint: \(keys.publicKey.fingerprint)")
            }
        }

        /// Lists every key and the key set each agent holds.
        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "List the signing keys (state, fingerprint) and the key set generation each agent last reported.")
            @OptionGroup var options: ControlOptions

            func run() async throws {
                let (records, ring, agents) = try await Key.withRegistry(options) { configuration, client, logger in
                    let ring = try await SigningKeyStore.loadOrCreateRing(client: client, encryption: configuration.signingKeyEncryption, logger: logger)
                    return (
                        try await SigningKeyStore.list(client: client, logger: logger), ring,
                        try await SigningKeyStore.agentGenerations(client: client, logger: logger))
                }
                print("generation \(ring.generation)")
                for record in records {
                    let state = record.state.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)
                    print("\(state) \(record.publicKey.fingerprint)  \(record.publicKey)  since \(record.changedAt.formatted(.iso8601))\(record.state != .retired && !record.sealed ? "  (stored in clear)" : "")")
                }
                if !agents.isEmpty { print("\nagents (key set generation they hold, last seen):") }
                for agent in agents {
                    let held = agent.generation.map { $0 == ring.generation ? "\($0) (current)" : "\($0) (behind)" } ?? "unknown"
                    print("  \(agent.agent)  \(held)  \(agent.lastSeen.formatted(.iso8601))")
                }
            }
        }

        /// Step 1: a new key, announced to agents.
        struct Rotate: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Make a new signing key and announce it to agents; the active key goes on signing until 'activate'.")
            @OptionGroup var options: ControlOptions

            func run() async throws {
                let ring = try await Key.withRegistry(options) { configuration, client, logger in
                    try await SigningKeyStore.rotate(client: client, encryption: configuration.signingKeyEncryption, logger: logger)
                }
                Key.describe(ring)
                print("agents accept the new key from their next heartbeat; then run 'larder-control key activate'")
            }
        }

        /// Step 2: the new key signs.
        struct Activate: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Make the key from 'rotate' the one that signs; the previous key stays accepted until 'retire'.")
            @OptionGroup var options: ControlOptions

            func run() async throws {
                let ring = try await Key.withRegistry(options) { configuration, client, logger in
                    try await SigningKeyStore.activate(client: client, encryption: configuration.signingKeyEncryption, logger: logger)
                }
                Key.describe(ring)
                print("check with 'larder-control key list' that every agent holds generation \(ring.generation), then run 'larder-control key retire'")
            }
        }

        /// Step 3: the previous key is dropped.
        struct Retire: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Retire the previous key: agents stop accepting it and its private key is erased.")
            @OptionGroup var options: ControlOptions
            @Flag(help: "Retire even though some agents seen in the last hour hold an older key set.") var force = false

            func run() async throws {
                let force = self.force
                let (ring, resigned) = try await Key.withRegistry(options) { configuration, client, logger in
                    let current = try await SigningKeyStore.loadOrCreateRing(client: client, encryption: configuration.signingKeyEncryption, logger: logger)
                    let behind = try await SigningKeyStore.agentGenerations(client: client, logger: logger).filter {
                        $0.lastSeen > Date().addingTimeInterval(-3600) && ($0.generation ?? 0) < current.generation
                    }
                    if !behind.isEmpty, !force {
                        throw SigningKeyRefusal(description: """
                            these agents hold an older key set and would not follow: \(behind.map(\.agent).joined(separator: ", ")); \
                            wait for their heartbeats, or retire with --force (they then need the new key pinned by hand)
                            """)
                    }
                    return try await SigningKeyStore.retire(client: client, encryption: configuration.signingKeyEncryption, logger: logger)
                }
                Key.describe(ring)
                print("retired the previous key; signed \(resigned) queued job spec(s) again with the active key")
            }
        }

        /// Seals keys stored in clear.
        struct Seal: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Seal the signing keys stored in clear with LARDER_SIGNING_KEY_FILE (once, after setting it).")
            @OptionGroup var options: ControlOptions

            func run() async throws {
                let sealed = try await Key.withRegistry(options) { configuration, client, logger in
                    guard let encryption = configuration.signingKeyEncryption else {
                        throw SigningKeyRefusal(description: "set LARDER_SIGNING_KEY_FILE to the key-encryption key first")
                    }
                    return try await SigningKeyStore.seal(client: client, encryption: encryption, logger: logger)
                }
                print("sealed \(sealed) signing key(s) with LARDER_SIGNING_KEY_FILE")
            }
        }
    }

    /// Applies pending migrations and exits.
    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Apply pending schema migrations and exit.")
        @OptionGroup var options: ControlOptions

        func run() async throws {
            let (configuration, logger) = try options.setUp()
            try await DatabaseStartup.waitUntilReachable(configuration.database, patience: configuration.databaseWait, logger: logger)
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

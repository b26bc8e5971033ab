import ArgumentParser
import AsyncHTTPClient
import DataPlane
import Foundation
import Logging
import Shared

/// Where an enrolled agent keeps its files, and how they are written.
enum AgentFiles {
    static let configurationName = "agent.yaml"
    static let tokenName = "agent.token"

    /// `--config`, else `<data dir>/agent.yaml`, else `LARDER_AGENT_CONFIG`, else `./agent.yaml`.
    static func configurationPath(config: String?, dataDirectory: String?) -> String {
        if let config { return config }
        if let dataDirectory { return (dataDirectory as NSString).appendingPathComponent(configurationName) }
        return ProcessInfo.processInfo.environment["LARDER_AGENT_CONFIG"] ?? configurationName
    }

    /// Runs `body` with an HTTP client trusting `caFile` (or the system's store), shut down after.
    static func withHTTPClient<Result: Sendable>(caFile: String?, _ body: (HTTPClient) async throws -> Result) async throws -> Result {
        do { try ControlPlaneConnection.checkCAFile(caFile) } catch { throw ValidationError(error.description) }
        let http = ControlPlaneConnection.makeHTTPClient(caFile: caFile)
        do {
            let result = try await body(http)
            try? await http.shutdown()
            return result
        } catch {
            try? await http.shutdown()
            throw error
        }
    }

    /// Writes `text` to `path` with mode 0600, replacing it atomically (a temporary file renamed into place).
    static func writePrivate(_ text: String, to path: String) throws {
        let temporary = path + ".tmp-\(getpid())"
        unlink(temporary)
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard descriptor >= 0 else { throw ValidationError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        fsync(descriptor)
        close(descriptor)
        guard written == bytes.count, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw ValidationError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}

extension LarderAgentCommand {
    /// Exchanges an enrollment token for this agent's credentials and writes its configuration.
    struct Enroll: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Enroll this host's agent with a one-time token from `larder agents enroll-token`, then exit.",
            discussion: """
                Writes <data-dir>/agent.yaml (the control plane, its pinned signing key, the token file) and \
                <data-dir>/agent.token (mode 0600; never printed). Add the connections your sources name to agent.yaml \
                (passwords may stay in the environment as ${VARIABLE}), then start it with `larder-agent run --data-dir <data-dir>`.
                """)

        @Option(help: "The control plane's URL.") var url: String
        @Option(help: "The enrollment token (or LARDER_ENROLLMENT_TOKEN).") var token: String?
        @Option(help: "Read the enrollment token from this file (a mounted secret, say) instead of --token.") var tokenFile: String?
        @Option(help: "Where the agent keeps its configuration, credentials and stores.") var dataDir: String
        @Option(help: """
            A YAML file of this agent's own settings (connections, offline_store, serving, concurrency, datasets, \
            report_statistics, source_statement_timeout), copied into agent.yaml ahead of what enroll writes.
            """)
        var settings: String?
        @Flag(help: """
            When <data-dir> already holds credentials, keep them (an enrollment token works once) and only rewrite agent.yaml \
            from --settings; exit 0. Makes the command safe to run on every container start.
            """)
        var skipIfEnrolled = false
        @Option(help: "Refuse to enroll unless the control plane's key has this fingerprint (as `larder agents enroll-token` printed it).")
        var expectFingerprint: String?
        @Option(help: "Trust only the CA certificates in this PEM file for the control plane (default: the system's trust store).") var caFile: String?
        @Flag(help: "Allow http:// to a host other than this one (tokens cross the network unencrypted).") var allowInsecureHttp = false

        func run() async throws {
            let environment = ProcessInfo.processInfo.environment
            let directory = URL(fileURLWithPath: dataDir).standardizedFileURL.path
            let tokenPath = (directory as NSString).appendingPathComponent(AgentFiles.tokenName)
            let configPath = (directory as NSString).appendingPathComponent(AgentFiles.configurationName)
            let settingsText: String?
            do { settingsText = try settings.map(EnrolledConfiguration.settings(file:)) } catch { throw ValidationError(error.description) }

            if FileManager.default.fileExists(atPath: tokenPath) {
                guard skipIfEnrolled else {
                    throw ValidationError("\(directory) already holds an enrolled agent (\(AgentFiles.tokenName)); use another folder, or remove it first")
                }
                try keepEnrollment(directory: directory, configPath: configPath, settingsText: settingsText, environment: environment)
                return
            }
            let secret = try enrollmentToken(environment: environment)
            do { try ControlPlaneConnection.check(url, allowInsecureHTTP: allowInsecureHttp) } catch { throw ValidationError(error.description) }
            let caPath = caFile.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
            func identity(_ key: SigningPublicKey, summary: String, workspace: String? = nil) -> EnrolledConfiguration.Identity {
                EnrolledConfiguration.Identity(
                    controlPlane: url, publicKey: key, tokenFile: tokenPath, dataDirectory: directory, caFile: caPath,
                    allowInsecureHTTP: allowInsecureHttp, summary: summary, workspace: workspace)
            }
            // The settings are checked before the one-time token is spent.
            if let settingsText, let settings {
                do {
                    try EnrolledConfiguration.validate(
                        settings: settingsText, settingsPath: settings, identity: identity(SigningKeyPair.generate().publicKey, summary: ""),
                        environment: environment)
                } catch { throw ValidationError(error.description) }
            }
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw ValidationError("cannot create \(directory): \(error.localizedDescription)")
            }
            let answer: EnrollResponse = try await AgentFiles.withHTTPClient(caFile: caFile) { http in
                do {
                    return try await ControlPlaneClient(baseURL: url, httpClient: http)
                        .enroll(EnrollRequest(token: secret, hostname: ProcessInfo.processInfo.hostName))
                } catch let problem as ProblemDetails {
                    throw ValidationError("the control plane refused the enrollment: \(problem.detail)")
                } catch {
                    throw ValidationError("cannot reach the control plane at \(url): \(error)")
                }
            }
            let key: SigningPublicKey
            do { key = try SigningPublicKey(parsing: answer.publicKey) } catch {
                throw ValidationError("the control plane sent an unreadable signing key: \(error.description)")
            }
            if let expected = expectFingerprint, expected != key.fingerprint {
                // The token is spent, but nothing is written: this host trusts nothing it was sent.
                throw ValidationError("the control plane's key has fingerprint \(key.fingerprint), not \(expected); nothing was written")
            }
            try AgentFiles.writePrivate(answer.token + "\n", to: tokenPath)
            let enrolled = identity(
                key, summary: "agent \(answer.agent) of workspace \(answer.workspace) (\(answer.environment))", workspace: answer.workspace)
            try AgentFiles.writePrivate(EnrolledConfiguration.render(enrolled, settings: settingsText, settingsPath: settings), to: configPath)
            print("enrolled as agent \(answer.agent) of workspace \(answer.workspace) (environment \(answer.environment))")
            print("control plane key fingerprint: \(key.fingerprint)  (check it against what `larder agents enroll-token` printed)")
            print("wrote \(configPath) and \(tokenPath) (mode 0600)")
            if settingsText == nil {
                print("next: add your sources' connections to \(configPath), then run: larder-agent run --data-dir \(directory)")
            } else {
                print("next: larder-agent run --data-dir \(directory)")
            }
        }

        /// The token from --token, --token-file or LARDER_ENROLLMENT_TOKEN (exactly one).
        func enrollmentToken(environment: [String: String]) throws -> String {
            guard token == nil || tokenFile == nil else { throw ValidationError("give the enrollment token with --token or --token-file, not both") }
            if let tokenFile {
                let text: String
                do { text = try String(contentsOfFile: tokenFile, encoding: .utf8) } catch {
                    throw ValidationError("cannot read the enrollment token file \(tokenFile): \(error.localizedDescription)")
                }
                let secret = text.trimmingCharacters(in: .whitespacesAndNewlines)
                guard !secret.isEmpty else { throw ValidationError("the enrollment token file \(tokenFile) is empty") }
                return secret
            }
            guard let secret = token ?? environment["LARDER_ENROLLMENT_TOKEN"], !secret.isEmpty else {
                throw ValidationError("give the enrollment token with --token, --token-file or LARDER_ENROLLMENT_TOKEN")
            }
            return secret
        }

        /// Already enrolled: keeps the credentials and the pinned key; rewrites agent.yaml when settings are given.
        func keepEnrollment(directory: String, configPath: String, settingsText: String?, environment: [String: String]) throws {
            let existing: String
            do { existing = try String(contentsOfFile: configPath, encoding: .utf8) } catch {
                throw ValidationError("\(directory) holds \(AgentFiles.tokenName) but no readable \(AgentFiles.configurationName); remove the folder and enroll again")
            }
            let identity: EnrolledConfiguration.Identity
            do { identity = try EnrolledConfiguration.identity(inConfiguration: existing, path: configPath) } catch {
                throw ValidationError(error.description)
            }
            if identity.controlPlane != url {
                print("note: keeping the enrolled control plane \(identity.controlPlane); --url \(url) is not used")
            }
            guard let settingsText, let settings else {
                print("already enrolled (\(identity.summary)); kept \(configPath) as it is")
                return
            }
            do { try EnrolledConfiguration.validate(settings: settingsText, settingsPath: settings, identity: identity, environment: environment) } catch {
                throw ValidationError(error.description)
            }
            try AgentFiles.writePrivate(EnrolledConfiguration.render(identity, settings: settingsText, settingsPath: settings), to: configPath)
            print("already enrolled (\(identity.summary)); kept its credentials and pinned key \(identity.publicKey.fingerprint)")
            print("wrote \(configPath) with the settings of \(settings)")
        }
    }
}

extension LarderAgentCommand {
    /// Replaces the agent's token with a new one while it runs.
    struct RotateCredentials: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-credentials",
            abstract: "Replace the agent's token with a new one; a running agent picks it up from its token file, no restart needed.")

        @Option(help: "The agent's configuration file (LARDER_AGENT_CONFIG, default ./agent.yaml).") var config: String?
        @Option(help: "The folder `larder-agent enroll` wrote.") var dataDir: String?
        @Option(help: "Seconds the old token keeps working, for requests in flight (0 to 3600).") var graceSeconds: Int64 = 600

        func run() async throws {
            let path = AgentFiles.configurationPath(config: config, dataDirectory: dataDir)
            let configuration: AgentConfiguration
            do { configuration = try AgentConfiguration(file: path, environment: [:]) } catch { throw ValidationError(error.description) }
            guard let tokenFile = configuration.tokenFile else {
                throw ValidationError("\(path) has no token_file: rotation rewrites that file (a token from LARDER_AGENT_TOKEN cannot be replaced here)")
            }
            let answer: RotateCredentialsResponse = try await AgentFiles.withHTTPClient(caFile: configuration.caFile) { http in
                let client = ControlPlaneClient(baseURL: configuration.controlPlaneURL, token: configuration.token, httpClient: http)
                do { return try await client.rotateCredentials(graceSeconds: graceSeconds) } catch let problem as ProblemDetails {
                    throw ValidationError("the control plane refused: \(problem.detail)")
                }
            }
            try AgentFiles.writePrivate(answer.token + "\n", to: tokenFile)
            print("wrote a new token to \(tokenFile); the old one stops working at \(RFC3339.format(answer.previousExpiresAt))")
        }
    }
}

extension LarderAgentCommand {
    /// Rebuilds the online store from the offline store, with the agent stopped.
    struct RebuildOnline: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rebuild-online",
            abstract: "Rebuild the online store from the offline store (after losing or restoring the data directory); stop the agent first.",
            discussion: """
                For each feature view the agent has materialized (its cached signed definitions), every entity's newest offline row \
                becomes its online row. Each table is built aside and then replaces the old one, so a failure leaves it as it was.
                """)

        @Option(help: "The agent's configuration file (LARDER_AGENT_CONFIG, default ./agent.yaml).") var config: String?
        @Option(help: "The folder `larder-agent enroll` wrote.") var dataDir: String?
        @Option(name: .customLong("view"), help: "Only this feature view; repeatable (default: every view kept online and offline).") var views: [String] = []

        func run() async throws {
            let path = AgentFiles.configurationPath(config: config, dataDirectory: dataDir)
            let configuration: AgentConfiguration
            do { configuration = try AgentConfiguration(file: path, requireToken: false) } catch { throw ValidationError(error.description) }
            let lock: AgentLock
            do { lock = try AgentLock(directory: configuration.dataDirectory) } catch { throw ValidationError(error.description) }
            defer { withExtendedLifetime(lock) {} }
            var logger = Logger(label: DataPlane.component)
            logger.logLevel = .notice
            let rebuilt: [OnlineRebuild.Rebuilt]
            do {
                let backend = try OnlineBackend.open(configuration, logger: logger)
                let cache = try DefinitionCache(
                    directory: DataPlane.definitionsDirectory(configuration), trustedKeys: TrustedSigningKeys(configuration: configuration, logger: logger))
                do {
                    rebuilt = try await OnlineRebuild(configuration: configuration, backend: backend, cache: cache, logger: logger)
                        .run(views: views.isEmpty ? nil : Set(views))
                    await backend.close()
                } catch {
                    await backend.close()
                    throw error
                }
            } catch let failure as JobExecutionError {
                throw ValidationError(failure.message)
            } catch {
                throw ValidationError("the rebuild failed: \(error)")
            }
            for table in rebuilt { print("rebuilt \(table.view) v\(table.version): \(table.entities) entities") }
            if rebuilt.isEmpty { print("nothing to rebuild: this agent has materialized no view kept both online and offline") }
        }
    }
}

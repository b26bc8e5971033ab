import ArgumentParser
import DataPlane
import Foundation
import Logging
import ServiceLifecycle
import Shared

/// `larder-agent`: the data-plane agent.
@main
struct LarderAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: DataPlane.component,
        abstract: "The Larder data-plane agent: runs jobs and serves features in your environment.",
        version: LarderVersion.description,
        subcommands: [Run.self, Enroll.self, RotateCredentials.self, Online.self, RebuildOnline.self],
        defaultSubcommand: Run.self
    )
}

extension LarderAgentCommand {
    /// Connects to the control plane and runs jobs until SIGTERM or SIGINT.
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Connect to the control plane and run jobs (the default).")

        @Option(help: "The agent's configuration file (LARDER_AGENT_CONFIG, default ./agent.yaml).") var config: String?
        @Option(help: "The folder `larder-agent enroll` wrote: its agent.yaml is the configuration.") var dataDir: String?
        @Option(help: "trace, debug, info, notice, warning, error or critical (LARDER_LOG_LEVEL, default info).") var logLevel: String?
        @Option(help: "Event loops (and blocking threads) to run (LARDER_EVENT_LOOPS, default: the CPUs this process may use).") var eventLoops: Int?

        func run() async throws {
            let environment = ProcessInfo.processInfo.environment
            let path = AgentFiles.configurationPath(config: config, dataDirectory: dataDir)
            let configuration: AgentConfiguration
            do { configuration = try AgentConfiguration(file: path) } catch { throw ValidationError(error.description) }
            let levelText = logLevel ?? environment["LARDER_LOG_LEVEL"] ?? "info"
            guard let level = Logger.Level(rawValue: levelText.lowercased()) else { throw ValidationError("unknown log level '\(levelText)'") }
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
            let logger = Logger(label: DataPlane.component)
            // Before anything starts NIO's shared event loops: as many as the CPUs this process may use.
            do { try EventLoopSizing.apply(configured: eventLoops, environment: environment, logger: logger) } catch { throw ValidationError("\(error)") }
            // One agent per data directory, and no store-rewriting tool beside it.
            let lock: AgentLock
            do {
                try FileManager.default.createDirectory(
                    atPath: configuration.dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                lock = try AgentLock(directory: configuration.dataDirectory)
            } catch let busy as AgentLock.Busy {
                throw ValidationError(busy.description)
            } catch {
                throw ValidationError("cannot create the data directory \(configuration.dataDirectory): \(error.localizedDescription)")
            }
            defer { withExtendedLifetime(lock) {} }
            // The stores and the signed definitions open from local disk: no control plane needed.
            let trustedKeys = TrustedSigningKeys(configuration: configuration, logger: logger)
            let online: OnlineBackend
            let cache: DefinitionCache
            do {
                online = try OnlineBackend.open(configuration, logger: logger)
                cache = try DefinitionCache(directory: DataPlane.definitionsDirectory(configuration), trustedKeys: trustedKeys)
            } catch {
                throw ValidationError("cannot open the agent's data directory \(configuration.dataDirectory): \(error)")
            }
            let cached = cache.loadAll(logger: logger)
            let accessGuard = AccessGuard(
                file: URL(fileURLWithPath: DataPlane.accessSnapshotFile(configuration)), trustedKeys: trustedKeys, logger: logger)
            let registryCache = RegistryCache(
                file: URL(fileURLWithPath: DataPlane.registrySnapshotFile(configuration)), trustedKeys: trustedKeys, logger: logger)
            logger.info("opened the online store", metadata: [
                "online_store": .string(configuration.onlineStore.kind.rawValue), "tables": "\(online.embedded?.schemas.count ?? 0)",
                "cached_definitions": "\(cached.count)",
                "access_version": "\(accessGuard.version.map(String.init) ?? "none")",
                "registry_revision": "\(registryCache.revision.map(String.init) ?? "none")",
            ])
            let runner = AgentRunner(
                configuration: configuration, executors: DataPlane.executors(configuration: configuration, online: online, logger: logger),
                logger: logger, definitionCache: cache, accessGuard: accessGuard, registryCache: registryCache, trustedKeys: trustedKeys)
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
                .init(service: runner, successTerminationBehavior: .gracefullyShutdownGroup),
            ]
            if let store = online.embedded { services.append(.init(service: OnlineStoreMaintenance(store: store, logger: logger))) }
            if let serving = configuration.serving {
                // Serves from the local store and snapshots: it keeps answering while the control plane is down.
                let addressFile = DataPlane.servingAddressFile(configuration)
                try? FileManager.default.removeItem(atPath: addressFile)
                let reader = OnlineFeatureReader(backend: online, registry: registryCache)
                let metrics = AgentMetrics()
                let push: PushIngestor
                var offline: (schema: String, url: PostgresURL)?
                if let location = configuration.offlineStore, case .postgres(let url)? = configuration.connections[location.connection] {
                    offline = (location.schema, url)
                }
                do {
                    push = try PushIngestor(
                        directory: DataPlane.pushDirectory(configuration), store: online, reader: reader, metrics: metrics,
                        offlineStore: offline, logger: logger)
                } catch {
                    throw ValidationError("cannot open the push journal in \(configuration.dataDirectory): \(error)")
                }
                services.append(.init(service: push))
                let server: any Service
                do {
                    server = try FeatureServer.build(
                        settings: serving, reader: reader, guard: accessGuard, metrics: metrics, push: push,
                        datasets: .init(
                            builder: {
                                var builder = TrainingDatasetBuilder(reader: reader, offlineStore: offline, logger: logger)
                                builder.createsLookupIndexes = configuration.datasets.lookupIndexes
                                return builder
                            }(),
                            uploads: DataPlane.datasetUploadsDirectory(configuration), settings: configuration.datasets),
                        logger: logger,
                        onListening: { address in try? Data((address + "\n").utf8).write(to: URL(fileURLWithPath: addressFile), options: .atomic) })
                } catch {
                    throw ValidationError("cannot serve HTTPS with serving.tls_certificate and serving.tls_key: \(error)")
                }
                services.append(.init(service: server))
            }
            let group = ServiceGroup(configuration: .init(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            do {
                try await group.run()
                await online.close()
            } catch let refusal as AgentRunner.Refusal {
                await online.close()
                throw ValidationError(refusal.description)
            }
        }
    }

    /// Prints what the online store holds, reading its files or Redis (the agent may be running).
    struct Online: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the online store's tables, or the stored values of some entities (read-only).")

        @Option(help: "The agent's configuration file (LARDER_AGENT_CONFIG, default ./agent.yaml).") var config: String?
        @Option(help: "The folder `larder-agent enroll` wrote: its agent.yaml is the configuration.") var dataDir: String?
        @Option(help: "The feature view to look up.") var view: String?
        @Option(help: "The view's version (default: the newest stored, or the one Redis serves).") var version: Int?
        @Option(name: .customLong("key"), help: "An entity's join key value(s), comma-separated for several keys; repeatable.") var keys: [String] = []

        func run() async throws {
            let path = AgentFiles.configurationPath(config: config, dataDirectory: dataDir)
            let configuration: AgentConfiguration
            do { configuration = try AgentConfiguration(file: path, requireToken: false) } catch { throw ValidationError(error.description) }
            if view == nil, !keys.isEmpty { throw ValidationError("--key needs --view") }
            if view != nil, keys.isEmpty { throw ValidationError("give at least one --key") }
            if case .redis(let settings) = configuration.onlineStore {
                let redis = try RedisOnlineStore(settings: settings, logger: Logger(label: DataPlane.component))
                do {
                    if let view {
                        print(try await OnlineStoreReport.lookup(redis, view: view, version: version, keys: keys, now: Date()))
                    } else {
                        print(try await OnlineStoreReport.tables(redis))
                    }
                    await redis.close()
                } catch {
                    await redis.close()
                    throw ValidationError("cannot read the online store in Redis: \(error)")
                }
                return
            }
            let store: OnlineStore
            do { store = try OnlineStore(directory: DataPlane.onlineStoreDirectory(configuration), readOnly: true) } catch {
                throw ValidationError("cannot read the online store: \(error)")
            }
            guard let view else { return print(OnlineStoreReport.tables(store)) }
            do { print(try OnlineStoreReport.lookup(store, view: view, version: version, keys: keys, now: Date())) } catch {
                throw ValidationError(error.description)
            }
        }
    }
}

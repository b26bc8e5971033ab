import ControlPlane
import Foundation
import Logging
import Shared
import TestSupport

/// `larder-bench`: measures the control plane end to end, over real HTTP and
/// PostgreSQL, and prints the figures. Run through `scripts/bench`, which
/// starts a throwaway PostgreSQL and builds in release mode.
@main
struct LarderBench {
    static func main() async throws {
        let arguments = CommandLine.arguments.dropFirst()
        if arguments.first == "serve-features" {
            // The child process of the serving benchmark: event loops sized as the agent sizes them.
            var logger = Logger(label: "bench-server")
            logger.logLevel = .warning
            try EventLoopSizing.apply(environment: ProcessInfo.processInfo.environment, logger: logger)
            let options = arguments.dropFirst(2)
            try await serveFeatures(
                entities: Int(arguments.dropFirst().first ?? "") ?? 1_000_000, routerOnly: options.contains("router-only"),
                writerRowsPerLock: options.first { $0.hasPrefix("writer=") }.flatMap { Int($0.dropFirst("writer=".count)) },
                redis: options.first { $0.hasPrefix("redis=") }.flatMap { Int($0.dropFirst("redis=".count)) })
            return
        }
        if arguments.first == "load" {
            do {
                try load(Array(arguments.dropFirst()))
            } catch {
                FileHandle.standardError.write(Data("larder-bench load: \(error)\n".utf8))
                exit(1)
            }
            return
        }
        let selected = Set(arguments.filter { !$0.hasPrefix("-") })
        let runs = Int(ProcessInfo.processInfo.environment["LARDER_BENCH_RUNS"] ?? "") ?? 5
        print("larder-bench \(LarderVersion.description): \(ProcessInfo.processInfo.activeProcessorCount) cores, \(runs) runs each")
        if selected.isEmpty || selected.contains("phases") { try planningPhases(runs: runs) }
        if selected.isEmpty || selected.contains("plan-apply") { try await planAndApply(runs: runs) }
        if selected.isEmpty || selected.contains("lineage") { try await lineage(runs: max(runs * 10, 50)) }
        if selected.isEmpty || selected.contains("csv") { try csv(drivers: 1_000, runs: runs) }
        if selected.isEmpty || selected.contains("materialize") {
            for drivers in (ProcessInfo.processInfo.environment["LARDER_BENCH_DRIVERS"] ?? "1000,10000").split(separator: ",").compactMap({ Int($0) }) {
                try await materialize(drivers: drivers, runs: min(runs, 3))
            }
        }
        if selected.isEmpty || selected.contains("online-memory") { try onlineMemory(entities: 1_000_000) }
        if selected.isEmpty || selected.contains("serving") {
            let environment = ProcessInfo.processInfo.environment
            try await serving(
                entities: Int(environment["LARDER_BENCH_ENTITIES"] ?? "") ?? 1_000_000, seconds: Int(environment["LARDER_BENCH_SECONDS"] ?? "") ?? 10)
        }
        // Only when named: it pins this process to the second CPU.
        if selected.contains("serving-pinned") {
            let environment = ProcessInfo.processInfo.environment
            try await servingPinned(
                entities: Int(environment["LARDER_BENCH_ENTITIES"] ?? "") ?? 1_000_000, seconds: Int(environment["LARDER_BENCH_SECONDS"] ?? "") ?? 10)
        }
        if selected.isEmpty || selected.contains("redis") {
            let environment = ProcessInfo.processInfo.environment
            try await redis(
                entities: Int(environment["LARDER_BENCH_ENTITIES"] ?? "") ?? 1_000_000, rows: Int(environment["LARDER_BENCH_ROWS"] ?? "") ?? 2_000_000,
                seconds: Int(environment["LARDER_BENCH_SECONDS"] ?? "") ?? 10)
        }
        if selected.isEmpty || selected.contains("datasets") {
            let environment = ProcessInfo.processInfo.environment
            try await datasets(
                driverCounts: (environment["LARDER_BENCH_DRIVERS"] ?? "1000,10000").split(separator: ",").compactMap { Int($0) },
                entityRows: (environment["LARDER_BENCH_ENTITY_ROWS"] ?? "10000,100000,1000000").split(separator: ",").compactMap { Int($0) },
                runs: min(runs, 3))
        }
        if selected.isEmpty || selected.contains("jobs") { try await jobs(jobsPerRun: Int(ProcessInfo.processInfo.environment["LARDER_BENCH_JOBS"] ?? "") ?? 2_000) }
        if selected.isEmpty || selected.contains("abuse") {
            let environment = ProcessInfo.processInfo.environment
            try await abuse(
                seconds: Int(environment["LARDER_BENCH_SECONDS"] ?? "") ?? 30, rate: Int(environment["LARDER_BENCH_RATE"] ?? "") ?? 2_000,
                slowConnections: Int(environment["LARDER_BENCH_SLOW_CONNECTIONS"] ?? "") ?? 200)
        }
    }

    /// Plan + apply of 1,000 feature views and 200 services, each run on a fresh database.
    static func planAndApply(runs: Int) async throws {
        let repository = GeneratedRepository(entities: 20, sources: 50, views: 1_000, onDemandViews: 0, services: 200, servicesPerView: 10)
        let bytes = repository.files.reduce(0) { $0 + $1.contents.utf8.count }
        print("\n## plan + apply: \(repository.objectCount) objects (1,000 feature views, 200 services), \(bytes / 1024) KiB of YAML")
        var first = Samples(), noop = Samples(), edit = Samples()
        for _ in 0..<runs {
            try await TestControlPlane.withControlPlane { server in
                let client = server.client
                _ = try await client.createWorkspace("bench")
                first.add(try await measure {
                    let plan = try await client.plan(workspace: "bench", files: repository.files)
                    _ = try await client.apply(workspace: "bench", planID: plan.id)
                })
                noop.add(try await measure {
                    let plan = try await client.plan(workspace: "bench", files: repository.files)
                    precondition(!plan.hasChanges)
                    _ = try await client.apply(workspace: "bench", planID: plan.id)
                })
                let edited = repository.editingSource(0)
                edit.add(try await measure {
                    let plan = try await client.plan(workspace: "bench", files: edited)
                    precondition(plan.hasChanges)
                    _ = try await client.apply(workspace: "bench", planID: plan.id)
                })
            }
        }
        print(Samples.header)
        print(first.row("first plan + apply (all create)"))
        print(noop.row("re-plan + apply, unchanged"))
        print(edit.row("edit one source, plan + apply"))
    }

    /// The in-process steps of planning the same repository, without HTTP or
    /// PostgreSQL: where the time of a plan goes.
    static func planningPhases(runs: Int) throws {
        let repository = GeneratedRepository(entities: 20, sources: 50, views: 1_000, onDemandViews: 0, services: 200, servicesPerView: 10)
        print("\n## planning steps in process: \(repository.objectCount) objects")
        let files = repository.files.map { ($0.path, $0.contents) }
        var load = Samples(), canonicalize = Samples(), encode = Samples(), decode = Samples(), plan = Samples()
        for _ in 0..<runs {
            var loaded: LoadedRepository?
            load.add(measureSync { loaded = RepositoryLoader.load(files: files) })
            precondition(loaded!.isValid)
            var definitions: [CanonicalDefinition] = []
            canonicalize.add(measureSync { definitions = DefinitionCanonicalizer.canonicalize(loaded!.repository) })
            plan.add(try measureThrowing { _ = try PlanBuilder.changes(applying: definitions, to: RegistrySnapshot(revision: 0)) })
            var data = Data()
            encode.add(try measureThrowing { data = try APICoding.makeEncoder().encode(definitions.map(PlannedWrite.init)) })
            decode.add(try measureThrowing { _ = try APICoding.makeDecoder().decode([PlannedWrite].self, from: data) })
        }
        print(Samples.header)
        print(load.row("read + validate YAML"))
        print(canonicalize.row("canonicalize + hash"))
        print(plan.row("diff against an empty registry"))
        print(encode.row("render + JSON-encode the plan's writes (all objects)"))
        print(decode.row("JSON-decode the plan's writes at apply"))
    }

    static func measureSync(_ body: () -> Void) -> Duration {
        ContinuousClock().measure(body)
    }

    static func measureThrowing(_ body: () throws -> Void) throws -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        try body()
        return clock.now - start
    }

    /// Lineage queries of depth 5 over a registry of 10,000 objects.
    static func lineage(runs: Int) async throws {
        let repository = GeneratedRepository(entities: 100, sources: 400, views: 8_000, onDemandViews: 1_000, services: 500, servicesPerView: 40)
        print("\n## lineage, depth 5, over \(repository.objectCount) objects")
        try await TestControlPlane.withControlPlane { server in
            let client = server.client
            _ = try await client.createWorkspace("bench")
            let setup = try await measure {
                let plan = try await client.plan(workspace: "bench", files: repository.files)
                _ = try await client.apply(workspace: "bench", planID: plan.id)
            }
            print("(setup: plan + apply of \(repository.objectCount) objects took \(Samples.format(setup)))")
            var downstream = Samples(), upstream = Samples()
            var downNodes = 0, upNodes = 0
            for index in 0..<runs {
                downstream.add(try await measure {
                    downNodes = try await client.lineage(
                        workspace: "bench", collection: .sources, name: "source_\(index % 400)", direction: .downstream, depth: 5
                    ).nodes.count
                })
                upstream.add(try await measure {
                    upNodes = try await client.lineage(
                        workspace: "bench", collection: .featureServices, name: "service_\(index % 500)", direction: .upstream, depth: 5
                    ).nodes.count
                })
            }
            print(Samples.header)
            print(downstream.row("downstream of a source (\(downNodes) nodes)"))
            print(upstream.row("upstream of a service (\(upNodes) nodes)"))
        }
    }

    static func measure(_ body: () async throws -> Void) async throws -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        try await body()
        return clock.now - start
    }
}

/// Timings of repeated runs, summarized.
struct Samples {
    var values: [Duration] = []
    mutating func add(_ value: Duration) { values.append(value) }

    static let header = "| what | runs | median | min | max |\n|---|---|---|---|---|"

    func row(_ name: String) -> String {
        let sorted = values.sorted()
        return "| \(name) | \(sorted.count) | \(Self.format(sorted[sorted.count / 2])) | \(Self.format(sorted.first!)) | \(Self.format(sorted.last!)) |"
    }

    static func format(_ duration: Duration) -> String {
        let milliseconds = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
        return milliseconds >= 1000 ? String(format: "%.2f s", milliseconds / 1000) : String(format: "%.1f ms", milliseconds)
    }
}

/// A synthetic repository: entities, PostgreSQL sources, plain feature views
/// (each on one source and entity), chained on-demand views, and services
/// that each select several views.
struct GeneratedRepository {
    let files: [RepositoryFile]
    let objectCount: Int
    private let sourceCount: Int

    init(entities: Int, sources: Int, views: Int, onDemandViews: Int, services: Int, servicesPerView: Int) {
        var yaml: [String: String] = ["larder.yaml": "workspace: bench\n"]
        yaml["entities.yaml"] = (0..<entities).map { "kind: Entity\nname: entity_\($0)\njoin_keys:\n  entity_\($0)_id: int64\n" }
            .joined(separator: "---\n")
        yaml["sources.yaml"] = (0..<sources).map { Self.source($0, entities: entities) }.joined(separator: "---\n")
        var chunk: [String] = []
        for view in 0..<views {
            let entity = view % entities
            chunk.append("""
                kind: FeatureView
                name: view_\(view)
                entities: [entity_\(entity)]
                source: source_\(Self.sourceFor(view: view, sources: sources, entities: entities))
                ttl: 1d
                schedule: 1h
                description: Generated view \(view) of entity \(entity).
                features:
                  - name: amount
                    type: float64
                  - name: quantity
                    type: int64

                """)
            if chunk.count == 500 || view == views - 1 {
                yaml["views_\(view / 500).yaml"] = chunk.joined(separator: "---\n")
                chunk = []
            }
        }
        if onDemandViews > 0 {
            yaml["on_demand.yaml"] = (0..<onDemandViews).map { index in
                let input = index % 5 == 0 || index == 0 ? "view_\(index % views):amount" : "odfv_\(index - 1):score"
                return """
                    kind: OnDemandFeatureView
                    name: odfv_\(index)
                    inputs:
                      features: [\(input)]
                      request:
                        factor: float64
                    outputs:
                      - name: score
                        type: float64
                        expression: factor * 2

                    """
            }.joined(separator: "---\n")
        }
        yaml["services.yaml"] = (0..<services).map { index in
            let views = (0..<servicesPerView).map { "  - view_\((index * servicesPerView + $0) % views)" }
            let odfv = onDemandViews > 0 ? ["  - odfv_\((index * 7) % onDemandViews)"] : []
            return "kind: FeatureService\nname: service_\(index)\nfeatures:\n" + (views + odfv).joined(separator: "\n") + "\n"
        }.joined(separator: "---\n")
        files = yaml.sorted { $0.key < $1.key }.map { RepositoryFile(path: $0.key, contents: $0.value) }
        objectCount = entities + sources + views + onDemandViews + services
        sourceCount = sources
    }

    /// A source whose columns include the join key of every entity it serves.
    static func source(_ index: Int, entities: Int) -> String {
        let keys = (0..<entities).filter { $0 % max(1, entities) == index % entities }.map { "  entity_\($0)_id: int64" }
        return """
            kind: PostgresSource
            name: source_\(index)
            connection: warehouse
            table: public.events_\(index)
            timestamp_field: ts
            columns:
            \(keys.joined(separator: "\n"))
              amount: float64
              quantity: int64

            """
    }

    /// A view of entity `view % entities` reads a source that carries that entity's key.
    static func sourceFor(view: Int, sources: Int, entities: Int) -> Int {
        let entity = view % entities
        let candidates = stride(from: entity, to: sources, by: entities).map { $0 }
        return candidates[(view / entities) % candidates.count]
    }

    /// The files with source 0's table renamed (a semantic change that reaches its views and services).
    func editingSource(_ index: Int) -> [RepositoryFile] {
        files.map { file in
            guard file.path == "sources.yaml" else { return file }
            return RepositoryFile(path: file.path, contents: file.contents.replacingOccurrences(
                of: "table: public.events_\(index)\n", with: "table: public.events_\(index)_v2\n"))
        }
    }
}

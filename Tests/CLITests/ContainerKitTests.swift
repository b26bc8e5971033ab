import DataPlane
import Foundation
import Shared
import Synchronization
import Testing
import Yams

/// The container and Kubernetes kit names what really exists. No Docker
/// engine or cluster runs here, so these read the Dockerfile, the compose
/// file as Docker Compose resolved it, and the charts as Helm rendered them
/// (`scripts/check-deploy-kit`, which `scripts/test` runs first), and check
/// them against the real binaries: every command's binary, subcommand and
/// flags (`--help`), every `LARDER_` variable (read somewhere in Sources),
/// every probe's path (a route), every port (the one the process is told to
/// listen on), every file a flag names (inside a mounted volume), the agent
/// settings (accepted by `larder-agent enroll --settings`), and in compose
/// that the agent's probe and Prometheus speak what those settings serve.
@Suite("Container and Kubernetes kit")
struct ContainerKitTests {
    static let root = LarderBinary.root
    static let tools = root.appendingPathComponent(".build-tools")
    static let binaries: Set<String> = ["larder", "larder-control", "larder-agent"]

    /// Every `LARDER_…` name a Swift source reads or mentions as a string.
    static let knownVariables: Set<String> = {
        var names: Set<String> = []
        let sources = root.appendingPathComponent("Sources")
        let files = FileManager.default.enumerator(atPath: sources.path)?.compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") } ?? []
        for file in files {
            let text = (try? String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)) ?? ""
            for match in text.matches(of: /"(LARDER_[A-Z0-9_]+)"/) { names.insert(String(match.output.1)) }
        }
        return names
    }()

    /// The paths the control plane's API and the agent's feature server answer unauthenticated probes on.
    static func probePaths(binary: String) throws -> Set<String> {
        let file = binary == "larder-control" ? "Sources/ControlPlane/API/HealthRoutes.swift" : "Sources/DataPlane/Serving/FeatureServer.swift"
        let text = try String(contentsOf: root.appendingPathComponent(file), encoding: .utf8)
        return Set(text.matches(of: /\.get[^"]*"(\/(?:healthz|readyz))"/).map { String($0.output.1) })
    }

    /// `binary subcommands… --help`, once each.
    static let helpCache = Mutex<[[String]: (status: Int32, text: String)]>([:])
    static func help(_ binary: String, _ subcommands: [String]) async throws -> (status: Int32, text: String) {
        let key = [binary] + subcommands
        if let cached = helpCache.withLock({ $0[key] }) { return cached }
        let result = try await LarderBinary.command([LarderBinary.directory.appendingPathComponent(binary).path] + subcommands + ["--help"])
        helpCache.withLock { $0[key] = (result.status, result.standardOutput) }
        return (result.status, result.standardOutput)
    }

    /// What is wrong with a command line: a binary we do not build, a subcommand or a flag it lacks.
    /// Nested subcommands (`larder workspaces create`) are followed as far as they go.
    static func problems(_ command: [String], in place: String) async throws -> [String] {
        guard let first = command.first, let subcommand = command.dropFirst().first else { return ["\(place): no subcommand in \(command)"] }
        let binary = (first as NSString).lastPathComponent
        guard binaries.contains(binary) else { return ["\(place): \(first) is not a Larder binary"] }
        var path = [subcommand]
        var help = try await help(binary, path)
        guard help.status == 0 else { return ["\(place): '\(subcommand)' is not a subcommand of \(binary)"] }
        for word in command.dropFirst(2) {
            guard word.wholeMatch(of: /[a-z][a-z-]*/) != nil else { break }
            let deeper = try await Self.help(binary, path + [word])
            guard deeper.status == 0 else { break }
            path.append(word)
            help = deeper
        }
        return command.dropFirst(1 + path.count).filter { $0.hasPrefix("--") }.compactMap { flag in
            let name = String(flag.split(separator: "=")[0])
            return help.text.contains(name + " ") || help.text.contains(name + "\n") ? nil : "\(place): \(binary) \(path.joined(separator: " ")) has no \(name)"
        }
    }

    /// The value after `flag` in a command.
    static func value(of flag: String, in command: [String]) -> String? {
        command.firstIndex(of: flag).flatMap { command.indices.contains($0 + 1) ? command[$0 + 1] : nil }
    }

    /// The port of a `host:port`.
    static func port(_ address: String) -> Int? { address.split(separator: ":").last.flatMap { Int($0) } }

    /// The Dockerfile's final stages: entrypoint, default command, exposed ports, user.
    struct Stage {
        var entrypoint: [String] = []
        var command: [String] = []
        var exposed: [Int] = []
        var user = ""
    }

    static func dockerfileStages() throws -> (stages: [String: Stage], text: String) {
        let text = try String(contentsOf: root.appendingPathComponent("deploy/docker/Dockerfile"), encoding: .utf8)
        var stages: [String: Stage] = [:]
        var current: String?
        func array(_ json: Substring) throws -> [String] { try JSONDecoder().decode([String].self, from: Data(json.utf8)) }
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            if line.hasPrefix("FROM "), let name = line.split(separator: " ").last, line.contains(" AS ") {
                current = String(name)
                stages[current!] = Stage()
            } else if let current, line.hasPrefix("ENTRYPOINT ") {
                stages[current]!.entrypoint = try array(line.dropFirst("ENTRYPOINT ".count))
            } else if let current, line.hasPrefix("CMD ") {
                stages[current]!.command = try array(line.dropFirst("CMD ".count))
            } else if let current, line.hasPrefix("EXPOSE ") {
                stages[current]!.exposed = line.split(separator: " ").dropFirst().compactMap { Int($0) }
            } else if let current, line.hasPrefix("USER ") {
                stages[current]!.user = String(line.dropFirst("USER ".count))
            }
        }
        return (stages, text)
    }

    @Test("Dockerfile: both images run a real binary and subcommand as a numeric non-root user, expose the port it listens on, and stamp the revision the C target reads")
    func dockerfile() async throws {
        let (stages, text) = try Self.dockerfileStages()
        let control = try #require(stages["larder-control"]), agent = try #require(stages["larder-agent"])
        for (name, stage) in [("larder-control", control), ("larder-agent", agent)] {
            #expect(stage.entrypoint == [name])
            #expect(try await Self.problems(stage.entrypoint + stage.command, in: "Dockerfile \(name)").isEmpty)
            let ids = stage.user.split(separator: ":").compactMap { Int($0) }
            #expect(ids.count == 2 && ids.allSatisfy { $0 >= 1_000 }, "\(name): USER \(stage.user)")
        }
        #expect(control.exposed == [7070] && text.contains("ENV LARDER_LISTEN=0.0.0.0:7070"))
        #expect(agent.exposed == [AgentConfiguration.ServingSettings().port])
        #expect(Self.value(of: "--data-dir", in: agent.command) == "/var/lib/larder-agent" && text.contains("VOLUME [\"/var/lib/larder-agent\"]"))
        let revisionMacro = try String(contentsOf: Self.root.appendingPathComponent("Sources/LarderBuildInfo/LarderBuildInfo.c"), encoding: .utf8)
        #expect(revisionMacro.contains("#ifdef LARDER_GIT_REVISION") && text.contains("-DLARDER_GIT_REVISION=${LARDER_REVISION}"))
        for binary in Self.binaries { #expect(text.contains(binary), "the build stage builds \(binary)") }
        #expect(text.contains("--static-swift-stdlib"))
    }

    @Test(
        "compose, alone and with compose.plain-http.yaml: each Larder service's command is real, its LARDER_ variables exist, its ports are the ones it listens on, its probes are routes, the agent's settings are ones enroll accepts, and its probe and Prometheus speak what it serves",
        arguments: ["compose-config.yaml", "compose-config-plain-http.yaml"])
    func compose(resolvedFile: String) async throws {
        let resolved = Self.tools.appendingPathComponent(resolvedFile)
        let text = try #require(try? String(contentsOf: resolved, encoding: .utf8), "run scripts/check-deploy-kit first (scripts/test does)")
        let services = try #require((try Yams.load(yaml: text) as? [String: Any])?["services"] as? [String: [String: Any]])
        let (stages, _) = try Self.dockerfileStages()
        var larderServices = 0
        for (name, service) in services {
            guard let target = (service["build"] as? [String: Any])?["target"] as? String, let stage = stages[target] else { continue }
            larderServices += 1
            let environment = service["environment"] as? [String: Any] ?? [:]
            for variable in environment.keys where variable.hasPrefix("LARDER_") {
                #expect(Self.knownVariables.contains(variable), "compose \(name): \(variable) is read by nothing")
            }
            if let entrypoint = service["entrypoint"] as? [String] {
                // A demo script with the CLI: every larder command in it is real.
                let script = try #require(entrypoint.last.flatMap { path in
                    (service["volumes"] as? [[String: Any]])?.first { $0["target"] as? String == path }?["source"] as? String
                })
                for line in try String(contentsOfFile: script, encoding: .utf8).split(separator: "\n") {
                    let words = line.trimmingCharacters(in: .whitespaces).split(separator: " ").map(String.init)
                    guard let first = words.first, Self.binaries.contains(first), words.count > 1, !words[1].hasPrefix("-") else { continue }
                    #expect(try await Self.problems(words, in: "compose \(name) \(script)").isEmpty)
                }
                continue
            }
            let command = stage.entrypoint + (service["command"] as? [String] ?? stage.command)
            let problems = try await Self.problems(command, in: "compose \(name)")
            #expect(problems.isEmpty, "\(problems)")
            let ports = (service["ports"] as? [[String: Any]] ?? []).compactMap { $0["target"] as? Int }
            let mounts = (service["volumes"] as? [[String: Any]] ?? []).compactMap { $0["target"] as? String }
            for flag in ["--token-file", "--settings", "--data-dir", "--ca-file"] {
                if let path = Self.value(of: flag, in: command) {
                    #expect(mounts.contains { path == $0 || path.hasPrefix($0 + "/") }, "compose \(name): \(flag) \(path) is on no volume")
                }
            }
            if let test = (service["healthcheck"] as? [String: Any])?["test"] as? [String] {
                let paths = try Self.probePaths(binary: target)
                #expect(paths.contains { test.joined(separator: " ").contains("GET \($0) ") }, "compose \(name): healthcheck asks no probe route")
            }
            if target == "larder-control", command.contains("serve") {
                let listen = environment["LARDER_LISTEN"] as? String
                #expect(listen.flatMap(Self.port) == 7070 && ports == [7070], "compose \(name): listens on \(listen ?? "?"), publishes \(ports)")
            }
            if target == "larder-agent", let settingsPath = Self.value(of: "--settings", in: command) {
                // The settings file is bind-mounted from the repository.
                let source = try #require((service["volumes"] as? [[String: Any]])?.first { $0["target"] as? String == settingsPath }?["source"] as? String)
                try Self.checkSettings(file: source, place: "compose \(name)")
            }
            if target == "larder-agent", command.contains("run") {
                let enroll = try #require(services.values.first { ($0["command"] as? [String])?.first == "enroll" })
                let settingsPath = try #require(Self.value(of: "--settings", in: enroll["command"] as! [String]))
                let source = try #require((enroll["volumes"] as? [[String: Any]])?.first { $0["target"] as? String == settingsPath }?["source"] as? String)
                let settingsText = try String(contentsOfFile: source, encoding: .utf8)
                let listen = try Self.servingListen(settingsText)
                #expect(ports == [listen], "compose \(name): publishes \(ports), the agent listens on \(listen)")
                let serving = (try Yams.load(yaml: settingsText) as? [String: Any])?["serving"] as? [String: Any] ?? [:]
                try Self.checkServingScheme(agentName: name, agent: service, enroll: enroll, serving: serving, listen: listen, services: services)
            }
        }
        #expect(larderServices >= 4, "the control plane, its migration, the agent and its enrollment")
    }

    /// Where a compose service finds `path`: "volume:path inside it", when a named volume is mounted above it.
    static func volumeLocation(_ path: String, in service: [String: Any]) -> String? {
        let mounts = service["volumes"] as? [[String: Any]] ?? []
        guard let mount = mounts.first(where: { $0["type"] as? String == "volume" && path.hasPrefix(($0["target"] as? String ?? "?") + "/") }),
              let volume = mount["source"] as? String, let target = mount["target"] as? String
        else { return nil }
        return "\(volume):\(path.dropFirst(target.count + 1))"
    }

    /// HTTPS when the agent's settings name TLS files: they are on a named volume that both the agent and its
    /// enroll step (which checks them) mount, its healthcheck asks over TLS, and Prometheus scrapes it with https,
    /// trusting the very certificate file the agent serves, by the agent's name. Plain HTTP otherwise, for both.
    static func checkServingScheme(
        agentName name: String, agent: [String: Any], enroll: [String: Any], serving: [String: Any], listen: Int, services: [String: [String: Any]]
    ) throws {
        let tlsFiles = ["tls_certificate", "tls_key"].compactMap { serving[$0] as? String }
        let https = !tlsFiles.isEmpty
        for file in tlsFiles {
            let inAgent = Self.volumeLocation(file, in: agent)
            #expect(inAgent != nil && inAgent == Self.volumeLocation(file, in: enroll), "compose \(name): \(file) is on no volume both the agent and its enroll step mount")
        }
        let probe = ((agent["healthcheck"] as? [String: Any])?["test"] as? [String] ?? []).joined(separator: " ")
        if https {
            #expect(probe.contains("openssl s_client") && probe.contains("-connect 127.0.0.1:\(listen)"), "compose \(name): the healthcheck does not ask over HTTPS")
        } else {
            #expect(probe.contains("/dev/tcp/127.0.0.1/\(listen)") && !probe.contains("s_client"), "compose \(name): the healthcheck does not ask over plain HTTP")
        }
        let prometheus = try #require(services.values.first { ($0["image"] as? String)?.hasPrefix("prom/prometheus") == true }, "compose: no Prometheus")
        let configFile = try #require(
            (prometheus["volumes"] as? [[String: Any]])?.first { $0["target"] as? String == "/etc/prometheus/prometheus.yml" }?["source"] as? String)
        let configuration = try Yams.load(yaml: try String(contentsOfFile: configFile, encoding: .utf8)) as? [String: Any]
        let jobs = configuration?["scrape_configs"] as? [[String: Any]] ?? []
        let job = try #require(
            jobs.first { job in (job["static_configs"] as? [[String: Any]] ?? []).contains { ($0["targets"] as? [String] ?? []).contains("\(name):\(listen)") } },
            "compose: Prometheus scrapes no \(name):\(listen)")
        let scheme = job["scheme"] as? String ?? "http"
        #expect(scheme == (https ? "https" : "http"), "compose \(name): Prometheus scrapes it with \(scheme)")
        if https {
            let tls = job["tls_config"] as? [String: Any] ?? [:]
            let trusted = (tls["ca_file"] as? String).flatMap { Self.volumeLocation($0, in: prometheus) }
            let served = (serving["tls_certificate"] as? String).flatMap { Self.volumeLocation($0, in: agent) }
            #expect(trusted != nil && trusted == served, "compose \(name): Prometheus' ca_file is not the certificate the agent serves")
            let serverName = tls["server_name"] as? String ?? name
            #expect(serverName == name, "compose \(name): Prometheus expects a certificate for \(serverName)")
        }
    }

    /// The port of `serving.listen` in agent settings.
    static func servingListen(_ text: String) throws -> Int {
        let settings = try #require(try Yams.load(yaml: text) as? [String: Any])
        let listen = try #require((settings["serving"] as? [String: Any])?["listen"] as? String, "serving.listen is set (the default is loopback)")
        #expect(!listen.hasPrefix("127.") && !listen.hasPrefix("localhost"), "a container's feature server listens beyond loopback")
        return try #require(Self.port(listen))
    }

    /// Agent settings `larder-agent enroll --settings` accepts: a block mapping, no identity setting, valid with a
    /// real identity (folders it names are stood in for by a temporary one, TLS files by readable ones).
    static func checkSettings(file: String, place: String) throws {
        var text = try EnrolledConfiguration.settings(file: file)
        let stand = FileManager.default.temporaryDirectory.appendingPathComponent("larder-settings-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: stand, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: stand) }
        let pem = stand.appendingPathComponent("file.pem").path
        try "pem".write(toFile: pem, atomically: true, encoding: .utf8)
        text = text.replacing(/(directory:\s*)(\/\S+)/) { "\($0.output.1)\(stand.path)" }
        text = text.replacing(/(tls_(?:certificate|key):\s*)(\/\S+)/) { "\($0.output.1)\(pem)" }
        let identity = EnrolledConfiguration.Identity(
            controlPlane: "https://larder.example.com", publicKey: SigningKeyPair.generate().publicKey, tokenFile: "/dev/null",
            dataDirectory: stand.path, summary: "test")
        do { try EnrolledConfiguration.validate(settings: text, settingsPath: file, identity: identity, environment: [:]) } catch {
            Issue.record("\(place): \(error)")
        }
    }

    static func renderedCases() throws -> [URL] {
        let folder = tools.appendingPathComponent("rendered")
        let files = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return files.filter { $0.hasSuffix(".yaml") }.sorted().map { folder.appendingPathComponent($0) }
    }

    @Test("Helm: in every rendered case, each container runs a real command, reads only real LARDER_ variables, listens where its port and probes point, probes routes, and finds the files its flags name on its mounts")
    func charts() async throws {
        let cases = try Self.renderedCases()
        try #require(cases.count >= 4, "run scripts/check-deploy-kit first (scripts/test does): it renders the charts")
        var containers = 0
        for file in cases {
            let documents = try Yams.load_all(yaml: try String(contentsOf: file, encoding: .utf8)).compactMap { $0 as? [String: Any] }
            let configMaps = documents.filter { $0["kind"] as? String == "ConfigMap" }
            for workload in documents where ["Deployment", "StatefulSet"].contains(workload["kind"] as? String) {
                let pod = try #require(((workload["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"] as? [String: Any])
                let volumes = pod["volumes"] as? [[String: Any]] ?? []
                for container in (pod["initContainers"] as? [[String: Any]] ?? []) + (pod["containers"] as? [[String: Any]] ?? []) {
                    containers += 1
                    let place = "\(file.lastPathComponent) \(container["name"] ?? "?")"
                    let command = (container["command"] as? [String] ?? []) + (container["args"] as? [String] ?? [])
                    let problems = try await Self.problems(command, in: place)
                    #expect(problems.isEmpty, "\(problems)")
                    let environment = container["env"] as? [[String: Any]] ?? []
                    for variable in environment.compactMap({ $0["name"] as? String }) where variable.hasPrefix("LARDER_") {
                        #expect(Self.knownVariables.contains(variable), "\(place): \(variable) is read by nothing")
                    }
                    let mounts = (container["volumeMounts"] as? [[String: Any]] ?? [])
                    for flag in ["--token-file", "--settings", "--data-dir", "--ca-file"] {
                        guard let path = Self.value(of: flag, in: command) else { continue }
                        #expect(mounts.contains { path.hasPrefix(($0["mountPath"] as? String ?? "?") + "/") || path == $0["mountPath"] as? String },
                                "\(place): \(flag) \(path) is on no mount")
                    }
                    let binary = (command.first.map { ($0 as NSString).lastPathComponent }) ?? ""
                    let ports = (container["ports"] as? [[String: Any]] ?? []).compactMap { $0["containerPort"] as? Int }
                    for probe in ["readinessProbe", "livenessProbe"] {
                        guard let get = (container[probe] as? [String: Any])?["httpGet"] as? [String: Any] else { continue }
                        #expect(try Self.probePaths(binary: binary).contains(get["path"] as? String ?? ""), "\(place): \(probe) path")
                    }
                    if binary == "larder-control", command.contains("serve") {
                        let listen = environment.first { $0["name"] as? String == "LARDER_LISTEN" }?["value"] as? String
                        #expect(listen.flatMap(Self.port).map { ports == [$0] } == true, "\(place): listens on \(listen ?? "?"), declares \(ports)")
                        #expect(container["readinessProbe"] != nil, "\(place): readiness on /readyz")
                        let tls = environment.contains { $0["name"] as? String == "LARDER_TLS_CERTIFICATE" }
                        let scheme = ((container["readinessProbe"] as? [String: Any])?["httpGet"] as? [String: Any])?["scheme"] as? String
                        #expect((scheme ?? "HTTP") == (tls ? "HTTPS" : "HTTP"), "\(place): probes speak what the server serves")
                    }
                    if binary == "larder-agent", command.contains("enroll") {
                        // The settings come from the chart's ConfigMap, mounted where --settings points.
                        let settingsPath = try #require(Self.value(of: "--settings", in: command))
                        let mount = try #require(mounts.first { settingsPath.hasPrefix(($0["mountPath"] as? String ?? "?") + "/") })
                        let volume = try #require(volumes.first { $0["name"] as? String == mount["name"] as? String })
                        let mapName = try #require((volume["configMap"] as? [String: Any])?["name"] as? String)
                        let data = try #require(configMaps.first { ($0["metadata"] as? [String: Any])?["name"] as? String == mapName }?["data"] as? [String: String])
                        let text = try #require(data[(settingsPath as NSString).lastPathComponent])
                        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("larder-chart-settings-\(UUID().uuidString).yaml")
                        try text.write(to: copy, atomically: true, encoding: .utf8)
                        defer { try? FileManager.default.removeItem(at: copy) }
                        try Self.checkSettings(file: copy.path, place: place)
                        let servingPort = try Self.servingListen(text)
                        let agentContainer = try #require((pod["containers"] as? [[String: Any]])?.first)
                        let declared = (agentContainer["ports"] as? [[String: Any]] ?? []).compactMap { $0["containerPort"] as? Int }
                        #expect(declared == [servingPort], "\(place): the agent listens on \(servingPort), the pod declares \(declared)")
                    }
                }
            }
        }
        #expect(containers >= 12, "every case's containers were checked (\(containers))")
    }
}

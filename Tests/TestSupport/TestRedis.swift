import DataPlane
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A throwaway Redis server for tests: Debian's `redis-server` (installed
/// with apt when missing and running as root) on a free port of 127.0.0.1,
/// nothing saved to disk, stopped when the test ends.
public enum TestRedis {
    /// Why a server could not be started.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The path of `redis-server`, installing Debian's package when missing (as root).
    static func serverBinary() async throws -> String {
        for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        guard getuid() == 0 else { throw Failure(description: "redis-server is missing: apt-get install redis-server") }
        let install = Process()
        install.executableURL = URL(fileURLWithPath: "/bin/sh")
        install.arguments = ["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server"]
        try install.run()
        await install.waitForExit()
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/redis-server") else {
            throw Failure(description: "installing redis-server failed")
        }
        return "/usr/bin/redis-server"
    }

    /// A free TCP port of 127.0.0.1 (bound and released).
    public static func freePort() throws -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) } }
        guard bound == 0 else { throw Failure(description: "no free port") }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Runs `body` with the port of a new server; `arguments` are added to its command line
    /// (such as `["--user", "app", "on", ">secret", "~*", "+@all"]`).
    public static func withServer<Result>(
        arguments: [String] = [], port chosen: Int? = nil, _ body: (Int) async throws -> Result
    ) async throws -> Result {
        let binary = try await serverBinary()
        let port = try chosen ?? freePort()
        let server = Process()
        server.executableURL = URL(fileURLWithPath: binary)
        server.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"] + arguments
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer {
            if server.isRunning { kill(server.processIdentifier, SIGKILL) }
            server.waitUntilExit()
        }
        // Ready once it accepts a connection.
        let deadline = Date().addingTimeInterval(10)
        while (try? RawSocket(port: port, timeout: 1)) == nil {
            guard Date() < deadline, server.isRunning else { throw Failure(description: "redis-server did not start on port \(port)") }
            try await Task.sleep(for: .milliseconds(50))
        }
        return try await body(port)
    }

    /// Runs `body` with the ports of a new three-master Cluster: three
    /// `redis-server --cluster-enabled yes`, each given a third of the slots
    /// (`CLUSTER ADDSLOTSRANGE`) and introduced to the others (`CLUSTER
    /// MEET`), as `redis-cli --cluster create` does — spoken over RESP rather
    /// than by running redis-cli, as tests start processes from many threads
    /// at once — once every node sees every slot served.
    public static func withCluster<Result>(_ body: ([Int]) async throws -> Result) async throws -> Result {
        let binary = try await serverBinary()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-redis-cluster-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var servers: [Process] = []
        defer {
            for server in servers where server.isRunning { kill(server.processIdentifier, SIGKILL) }
            for server in servers { server.waitUntilExit() }
            try? FileManager.default.removeItem(at: folder)
        }
        var ports: [Int] = [], buses: [Int] = []
        for index in 0..<3 {
            // The Cluster bus on a port of its own (by default it is 10,000 above, which another test's server may hold).
            let port = try freePort(), bus = try freePort()
            let server = Process()
            server.executableURL = URL(fileURLWithPath: binary)
            server.currentDirectoryURL = folder
            server.arguments = [
                "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--cluster-enabled", "yes", "--cluster-config-file", folder.appendingPathComponent("nodes-\(index).conf").path,
                "--cluster-node-timeout", "2000", "--cluster-port", "\(bus)",
            ]
            server.standardOutput = FileHandle.nullDevice
            server.standardError = FileHandle.nullDevice
            try server.run()
            servers.append(server)
            ports.append(port)
            buses.append(bus)
        }
        let deadline = Date().addingTimeInterval(30)
        for (port, server) in zip(ports, servers) {
            while (try? RawSocket(port: port, timeout: 1)) == nil {
                guard Date() < deadline, server.isRunning else { throw Failure(description: "redis-server did not start on port \(port)") }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        let count = 16_384
        for (index, port) in ports.enumerated() {
            let first = index * count / 3, last = (index + 1) * count / 3 - 1
            try await command(port, ["CLUSTER", "ADDSLOTSRANGE", .text("\(first)"), .text("\(last)")])
        }
        for (port, bus) in zip(ports.dropFirst(), buses.dropFirst()) {
            try await command(ports[0], ["CLUSTER", "MEET", "127.0.0.1", .text("\(port)"), .text("\(bus)")])
        }
        // Every node must agree that every slot is served before the test starts.
        for port in ports {
            while !(try await command(port, ["CLUSTER", "INFO"]).string ?? "").contains("cluster_state:ok") {
                guard Date() < deadline else { throw Failure(description: "the cluster did not become ready") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        return try await body(ports)
    }

    /// Sends one command to the server on `port` of 127.0.0.1 (a connection of its own); its answer.
    @discardableResult
    public static func command(_ port: Int, _ arguments: [RESPArgument]) async throws -> RESPValue {
        let connection = try await RedisConnection.connect(host: "127.0.0.1", port: port, timeout: .seconds(10))
        do {
            let answer = try await connection.send(arguments)
            try await connection.close()
            return answer
        } catch {
            try? await connection.close()
            throw error
        }
    }
}

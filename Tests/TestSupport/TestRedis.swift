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
    static func serverBinary() throws -> String {
        for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        guard getuid() == 0 else { throw Failure(description: "redis-server is missing: apt-get install redis-server") }
        let install = Process()
        install.executableURL = URL(fileURLWithPath: "/bin/sh")
        install.arguments = ["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server"]
        try install.run()
        install.waitUntilExit()
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
    public static func withServer<Result>(arguments: [String] = [], _ body: (Int) async throws -> Result) async throws -> Result {
        let binary = try serverBinary()
        let port = try freePort()
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
}

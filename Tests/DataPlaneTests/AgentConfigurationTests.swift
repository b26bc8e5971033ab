import DataPlane
import Foundation
import Shared
import Testing

@Suite("Agent configuration")
struct AgentConfigurationTests {
    static let key = SigningKeyPair.generate().publicKey

    static func folder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("larder-agent-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func load(_ text: String, in folder: URL, environment: [String: String] = ["LARDER_AGENT_TOKEN": "lrd_x"]) throws -> AgentConfiguration {
        let file = folder.appendingPathComponent("agent.yaml")
        try text.write(to: file, atomically: true, encoding: .utf8)
        return try AgentConfiguration(file: file.path, environment: environment)
    }

    @Test("connections: PostgreSQL URLs and folders, credentials kept out of descriptions")
    func connections() throws {
        let folder = try Self.folder()
        let exports = folder.appendingPathComponent("exports")
        try FileManager.default.createDirectory(at: exports, withIntermediateDirectories: true)
        let configuration = try Self.load("""
            control_plane: https://larder.example.com
            public_key: \(Self.key)
            data_directory: \(folder.path)
            connections:
              rides_db:
                postgres: postgres://reader:s3cret@db.internal:5433/rides?sslmode=require
              local_files:
                directory: \(exports.path)
            """, in: folder)
        guard case .postgres(let url)? = configuration.connections["rides_db"] else { Issue.record("no rides_db"); return }
        #expect(url.password == "s3cret" && url.port == 5433 && url.tls == .require)
        #expect(!String(describing: configuration.connections["rides_db"]!).contains("s3cret"))
        #expect(configuration.connections["local_files"] == .directory(URL(fileURLWithPath: exports.path, isDirectory: true)))
    }

    @Test("online_store: embedded by default; redis with addresses, ACL user, password from a file (never in descriptions), CA, prefix; mistakes name the line")
    func onlineStore() throws {
        let folder = try Self.folder()
        let base = "control_plane: https://larder.example.com\npublic_key: \(Self.key)\ndata_directory: \(folder.path)\n"
        #expect(try Self.load(base, in: folder).onlineStore == .embedded)
        #expect(try Self.load(base + "online_store: embedded\n", in: folder).onlineStore.kind == .embedded)
        let password = folder.appendingPathComponent("redis.password"), ca = folder.appendingPathComponent("ca.pem")
        try "correct horse\n".write(to: password, atomically: true, encoding: .utf8)
        try "-----BEGIN CERTIFICATE-----\n".write(to: ca, atomically: true, encoding: .utf8)
        let configuration = try Self.load(base + """
            online_store:
              redis:
                addresses: [10.0.0.5:6379, "[::1]:7000"]
                user: larder
                password_file: \(password.path)
                tls_ca_file: \(ca.path)
                key_prefix: larder:rides:prod
                connections_per_node: 4
                timeout: 500ms
            """, in: folder)
        guard case .redis(let redis) = configuration.onlineStore else { Issue.record("not redis"); return }
        #expect(redis.endpoints == [RedisEndpoint(host: "10.0.0.5", port: 6379), RedisEndpoint(host: "::1", port: 7000)])
        #expect(redis.user == "larder" && redis.password == "correct horse" && redis.tlsCAFile == ca.path)
        #expect(redis.keyPrefix == "larder:rides:prod" && redis.connectionsPerNode == 4 && redis.timeout == .milliseconds(500))
        #expect(!String(describing: configuration.onlineStore).contains("correct horse"))
        for (block, complaint) in [
            ("online_store: memcached\n", "online_store: 'embedded', or 'redis:'"),
            ("online_store:\n  redis:\n    user: x\n", "online_store.redis.addresses: at least one"),
            ("online_store:\n  redis:\n    addresses: [redis]\n", "'redis' is not host:port"),
            ("online_store:\n  redis:\n    addresses: [redis:6379]\n    key_prefix: \"a{b}\"\n", "without '{' or '}'"),
            ("online_store:\n  redis:\n    addresses: [redis:6379]\n    password_file: /nonexistent/pw\n", "cannot read /nonexistent/pw"),
            ("online_store:\n  redis:\n    addresses: [redis:6379]\n    timeout: 5m\n", "a duration from 10ms to 60s"),
            ("online_store:\n  redis:\n    addresses: [redis:6379]\n    cluster: yes\n", "unknown setting"),
        ] {
            #expect {
                _ = try Self.load(base + block, in: folder)
            } throws: { error in
                let text = String(describing: error)
                return text.contains("agent.yaml:") && text.contains(complaint)
            }
        }
    }

    @Test("mistakes name the file, the line and the setting")
    func mistakes() throws {
        let folder = try Self.folder()
        let base = "control_plane: http://127.0.0.1:7070\npublic_key: \(Self.key)\ndata_directory: /tmp\n"
        #expect { _ = try Self.load(base + "connections:\n  rides_db:\n    mysql: x\n", in: folder) } throws: {
            "\($0)".contains("agent.yaml:") && "\($0)".contains("connections.rides_db: unknown kind 'mysql'")
        }
        #expect { _ = try Self.load(base + "connections:\n  files:\n    directory: /no/such/folder\n", in: folder) } throws: {
            "\($0)".contains("'/no/such/folder' is not a folder")
        }
        #expect { _ = try Self.load(base + "concurency: 2\n", in: folder) } throws: { "\($0)".contains("unknown setting 'concurency'") }
        #expect { _ = try Self.load(base, in: folder, environment: [:]) } throws: { "\($0)".contains("no token") }
        #expect { _ = try Self.load("control_plane: http://127.0.0.1:1\npublic_key: ed25519:nope\ndata_directory: /tmp\n", in: folder) } throws: {
            "\($0)".contains("public_key")
        }
        #expect { _ = try Self.load(base + "ca_file: /no/such/ca.pem\n", in: folder) } throws: { "\($0)".contains("ca_file: cannot read /no/such/ca.pem") }
    }

    @Test("plain HTTP only to this machine unless allowed; passwords from the environment as ${NAME}, never echoed")
    func transportAndSecrets() throws {
        let folder = try Self.folder()
        let rest = "public_key: \(Self.key)\ndata_directory: /tmp\n"
        for host in ["http://127.0.0.1:7070", "http://localhost:7070", "http://[::1]:7070", "https://larder.example.com"] {
            #expect(try Self.load("control_plane: \(host)\n" + rest, in: folder).controlPlaneURL == host)
        }
        #expect { _ = try Self.load("control_plane: http://larder.example.com\n" + rest, in: folder) } throws: {
            "\($0)".contains("agent.yaml:1: control_plane: refusing plain HTTP to larder.example.com")
        }
        let allowed = try Self.load("control_plane: http://larder.example.com\nallow_insecure_http: true\n" + rest, in: folder)
        #expect(allowed.allowInsecureHTTP)
        #expect(try Self.load("control_plane: http://10.0.0.5:7070\n" + rest, in: folder, environment: ["LARDER_AGENT_TOKEN": "t", "LARDER_ALLOW_INSECURE_HTTP": "1"])
            .allowInsecureHTTP)

        let connection = "control_plane: http://127.0.0.1:7070\n" + rest + "connections:\n  db:\n    postgres: postgres://reader:${DB_PASSWORD}@db.internal/rides\n"
        let configuration = try Self.load(connection, in: folder, environment: ["LARDER_AGENT_TOKEN": "t", "DB_PASSWORD": "p@ss:w/rd"])
        guard case .postgres(let url)? = configuration.connections["db"] else { Issue.record("no db connection"); return }
        #expect(url.password == "p@ss:w/rd" && url.host == "db.internal")
        #expect { _ = try Self.load(connection, in: folder, environment: ["LARDER_AGENT_TOKEN": "t"]) } throws: {
            "\($0)".contains("connections.db.postgres: the environment variable DB_PASSWORD is not set")
        }
    }

    @Test("a source's files must stay inside its connection's folder, also through symbolic links")
    func confinement() throws {
        let folder = try Self.folder()
        let root = folder.appendingPathComponent("exports")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("2025"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(at: root.appendingPathComponent("escape"), withDestinationURL: folder)
        let connection = SourceConnection.directory(root)
        #expect(try connection.file("2025/stats.csv").path == root.appendingPathComponent("2025/stats.csv").path)
        for outside in ["../agent.yaml", "/etc/passwd", "2025/../../x", "escape/agent.yaml", "./x", ""] {
            #expect(throws: SourceConnection.Refusal.self, "\(outside)") { try connection.file(outside) }
        }
        #expect(throws: SourceConnection.Refusal.self) {
            try SourceConnection.postgres(PostgresURL(host: "h", username: "u", database: "d")).file("x.csv")
        }
    }

    @Test("a source's paths may be patterns, in the folder itself or in a subfolder, matched in name order")
    func patterns() throws {
        let folder = try Self.folder()
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("daily"), withIntermediateDirectories: true)
        for name in ["b.csv", "a.csv", "notes.txt", "daily/2025-01-02.csv", "daily/2025-01-01.csv"] {
            try "x\n".write(to: folder.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        let connection = SourceConnection.directory(folder)
        #expect(try connection.files(matching: ["*.csv"]).map(\.lastPathComponent) == ["a.csv", "b.csv"])
        #expect(try connection.files(matching: ["daily/2025-01-0?.csv", "notes.txt"]).map(\.lastPathComponent)
            == ["2025-01-01.csv", "2025-01-02.csv", "notes.txt"])
        #expect(try connection.files(matching: ["none-*.csv"]).isEmpty)
        #expect(throws: SourceConnection.Refusal.self) { try connection.files(matching: ["../*.csv"]) }
    }
}


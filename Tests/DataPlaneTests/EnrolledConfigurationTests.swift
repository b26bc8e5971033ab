import DataPlane
import Foundation
import Shared
import Testing
import TestSupport

/// What `larder-agent enroll` writes: settings first and verbatim, the
/// identity after; read back, the identity is the one written.
@Suite("Enrolled configuration")
struct EnrolledConfigurationTests {
    static func folder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("larder-enrolled-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Paths and URLs with the characters YAML treats specially.
    static func awkwardText(_ generator: inout SeededGenerator) -> String {
        let pieces = ["data", " ", "#", ": ", "-", "'", "\"", "\\", "é", "%", "&", "*", "{x}", "[1]", "~", "?", "!", "|", ">", "@", ",", "="]
        return (0..<Int.random(in: 1...6, using: &generator)).map { _ in pieces.randomElement(using: &generator)! }.joined()
    }

    @Test("render → parse: the identity reads back unchanged, and the agent configuration accepts it, over awkward paths", arguments: [1, 2, 3] as [UInt64])
    func roundTrip(seed: UInt64) throws {
        var generator = SeededGenerator(seed: seed)
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        for _ in 0..<40 {
            let directory = folder.path + "/" + Self.awkwardText(&generator)
            let caFile = folder.appendingPathComponent("ca \(Int.random(in: 0...9, using: &generator)).pem").path
            try "unused".write(toFile: caFile, atomically: true, encoding: .utf8)
            let identity = EnrolledConfiguration.Identity(
                controlPlane: "https://larder.example.com:\(Int.random(in: 1...65_535, using: &generator))",
                publicKey: SigningKeyPair.generate().publicKey, tokenFile: directory + "/agent.token", dataDirectory: directory,
                caFile: Bool.random(using: &generator) ? caFile : nil, allowInsecureHTTP: Bool.random(using: &generator), summary: "agent a of workspace w (prod)")
            let settings = Bool.random(using: &generator) ? "concurrency: \(Int.random(in: 1...64, using: &generator))\n" : nil
            let text = EnrolledConfiguration.render(identity, settings: settings, settingsPath: settings == nil ? nil : "/etc/settings.yaml")
            let read = try EnrolledConfiguration.identity(inConfiguration: text, path: "agent.yaml")
            #expect(read == identity, "\(text)")
            if let settings { #expect(text.hasPrefix(settings)) }
            let configuration = try AgentConfiguration(text: text, path: "agent.yaml", environment: ["LARDER_AGENT_TOKEN": "lrd_x"])
            #expect(configuration.dataDirectory == directory && configuration.caFile == identity.caFile)
        }
    }

    @Test("a settings file may set none of what enroll writes, and must be a block mapping", arguments: EnrolledConfiguration.identitySettings.sorted())
    func identityKeysRefused(key: String) throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("settings.yaml").path
        try "concurrency: 2\n\(key): x\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect { _ = try EnrolledConfiguration.settings(file: file) } throws: { "\($0)".contains("\(file):2: \(key): enroll writes this setting") }
        try "[1, 2]\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect { _ = try EnrolledConfiguration.settings(file: file) } throws: { "\($0)".contains("block mapping") }
        try "# nothing yet\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try EnrolledConfiguration.settings(file: file) == "# nothing yet\n")
    }

    @Test("serving over HTTPS needs a readable certificate and key, both")
    func servingTLS() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let certificate = folder.appendingPathComponent("server.pem").path, key = folder.appendingPathComponent("server.key").path
        try "pem".write(toFile: certificate, atomically: true, encoding: .utf8)
        try "pem".write(toFile: key, atomically: true, encoding: .utf8)
        func load(_ serving: String) throws -> AgentConfiguration {
            try AgentConfiguration(text: """
                control_plane: https://larder.example.com
                public_key: \(SigningKeyPair.generate().publicKey)
                data_directory: \(folder.path)
                serving:
                \(serving)
                """, path: "agent.yaml", environment: ["LARDER_AGENT_TOKEN": "lrd_x"])
        }
        #expect(try load("  tls_certificate: \(certificate)\n  tls_key: \(key)").serving?.tls == TLSFiles(certificate: certificate, key: key))
        #expect(try load("  listen: 127.0.0.1:0").serving?.tls == nil)
        #expect { _ = try load("  tls_certificate: \(certificate)") } throws: { "\($0)".contains("agent.yaml:4: serving: HTTPS needs both") }
        #expect { _ = try load("  tls_certificate: \(certificate)\n  tls_key: /nonexistent.key") } throws: {
            "\($0)".contains("agent.yaml:6: serving.tls_key: cannot read /nonexistent.key")
        }
    }
}

import Foundation
import Testing
@testable import Shared

@Suite("CLI configuration file")
struct CLIConfigurationTests {
    @Test("the file goes under XDG_CONFIG_HOME when absolute, else ~/.config; LARDER_CONFIG overrides")
    func location() {
        #expect(CLIConfiguration.path(environment: ["HOME": "/home/ada"]).path == "/home/ada/.config/larder/config.json")
        #expect(CLIConfiguration.path(environment: ["HOME": "/home/ada", "XDG_CONFIG_HOME": "/xdg"]).path == "/xdg/larder/config.json")
        #expect(CLIConfiguration.path(environment: ["HOME": "/home/ada", "XDG_CONFIG_HOME": ""]).path == "/home/ada/.config/larder/config.json")
        #expect(CLIConfiguration.path(environment: ["HOME": "/home/ada", "XDG_CONFIG_HOME": "relative"]).path == "/home/ada/.config/larder/config.json")
        #expect(CLIConfiguration.path(environment: ["LARDER_CONFIG": "/etc/larder.json"]).path == "/etc/larder.json")
    }

    @Test("saving writes 0600 in a 0700 folder and reads back; printing hides the token")
    func saveAndLoad() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-config-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("larder"), withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
        let path = folder.appendingPathComponent("larder/config.json")
        let configuration = CLIConfiguration(url: "http://127.0.0.1:7070", token: "lrd_secretsecret_value")
        try configuration.save(to: path)
        try configuration.save(to: path)
        #expect(CLIConfiguration.load(from: path) == configuration)
        let file = try FileManager.default.attributesOfItem(atPath: path.path)[.posixPermissions] as? NSNumber
        let directory = try FileManager.default.attributesOfItem(atPath: path.deletingLastPathComponent().path)[.posixPermissions] as? NSNumber
        #expect(file?.intValue == 0o600 && directory?.intValue == 0o700)
        #expect(!"\(configuration)".contains("secret") && !String(reflecting: configuration).contains("secret"))
    }
}

@Suite("HTTP clients of the control plane")
struct ControlPlaneHTTPClientTests {
    @Test("a pooled connection is let go before the server would close it as idle (its request-head timeout), so no request is sent on a connection the server is closing")
    func idleTimeoutBelowTheServers() {
        #expect(ControlPlaneConnection.idleTimeout < HTTPConnectionLimits().requestHeadTimeout)
    }
}

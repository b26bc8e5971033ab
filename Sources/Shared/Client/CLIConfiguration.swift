import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What `larder login` remembers: the control plane's URL and a token, in
/// `$XDG_CONFIG_HOME/larder/config.json` (`~/.config/larder/config.json`),
/// readable by the user only (0600).
public struct CLIConfiguration: Codable, Sendable, Equatable, CustomStringConvertible, CustomReflectable {
    /// The control plane's URL.
    public var url: String
    /// The token to send.
    public var token: String

    /// The configuration without its token, safe to print.
    public var description: String { "CLIConfiguration(url: \(url), token: …)" }
    public var customMirror: Mirror { Mirror(self, children: ["url": url]) }

    /// Creates a configuration.
    public init(url: String, token: String) {
        self.url = url
        self.token = token
    }

    /// Where the file lives for `environment`.
    public static func path(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let override = environment["LARDER_CONFIG"], !override.isEmpty { return URL(fileURLWithPath: override) }
        // XDG: an empty or relative XDG_CONFIG_HOME is ignored.
        let base = environment["XDG_CONFIG_HOME"].flatMap { $0.hasPrefix("/") ? URL(fileURLWithPath: $0) : nil }
            ?? URL(fileURLWithPath: environment["HOME"] ?? NSHomeDirectory()).appendingPathComponent(".config")
        return base.appendingPathComponent("larder/config.json")
    }

    /// The stored configuration, if there is one.
    public static func load(from path: URL = path()) -> CLIConfiguration? {
        guard let data = try? Data(contentsOf: path) else { return nil }
        return try? JSONDecoder().decode(CLIConfiguration.self, from: data)
    }

    /// Writes the file with permissions 0600 (its folder 0700), replacing it
    /// atomically. The file is created 0600, so the token is never readable by others.
    public func save(to path: URL = path()) throws {
        let manager = FileManager.default
        try manager.createDirectory(at: path.deletingLastPathComponent(), withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try manager.setAttributes([.posixPermissions: 0o700], ofItemAtPath: path.deletingLastPathComponent().path)
        let temporary = path.deletingLastPathComponent().appendingPathComponent(".config.json.\(UUID().uuidString)")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(self)
        let descriptor = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard descriptor >= 0 else { throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: temporary.path]) }
        let written = data.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        close(descriptor)
        guard written == data.count else {
            try? manager.removeItem(at: temporary)
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: temporary.path])
        }
        guard rename(temporary.path, path.path) == 0 else {
            try? manager.removeItem(at: temporary)
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path.path])
        }
    }
}

import Foundation
import Shared
import Yams

/// The `agent.yaml` that `larder-agent enroll` writes: the operator's own
/// settings (connections, offline store, serving, …), verbatim and first, so
/// an error in them names the settings file's own lines, then the identity
/// the enrollment produced (the control plane, its pinned key, the token file).
///
/// Keeping the two apart is what lets a container re-run `enroll
/// --skip-if-enrolled --settings FILE` on every start: the identity (and the
/// one-time token it cost) stays, the settings follow the mounted file.
public enum EnrolledConfiguration {
    /// The settings enroll writes, which a settings file may not set.
    public static let identitySettings: Set<String> = [
        "control_plane", "public_key", "token_file", "data_directory", "ca_file", "allow_insecure_http", "workspace",
    ]
    /// The first line of the identity block.
    static let marker = "# Written by larder-agent enroll"

    /// Who this agent is and whom it trusts.
    public struct Identity: Sendable, Equatable {
        /// The control plane's URL.
        public var controlPlane: String
        /// The control plane's signing key, pinned.
        public var publicKey: SigningPublicKey
        /// The agent's token file.
        public var tokenFile: String
        /// The agent's data directory.
        public var dataDirectory: String
        /// The only CA bundle trusted for the control plane, when set.
        public var caFile: String?
        /// Whether `http://` to another host is allowed.
        public var allowInsecureHTTP: Bool
        /// Says which agent of which workspace this is (a comment in the file).
        public var summary: String
        /// The workspace the agent was enrolled into, pinned: every spec and snapshot must name it.
        public var workspace: String?

        /// Creates an identity.
        public init(
            controlPlane: String, publicKey: SigningPublicKey, tokenFile: String, dataDirectory: String, caFile: String? = nil,
            allowInsecureHTTP: Bool = false, summary: String, workspace: String? = nil
        ) {
            self.workspace = workspace
            self.controlPlane = controlPlane
            self.publicKey = publicKey
            self.tokenFile = tokenFile
            self.dataDirectory = dataDirectory
            self.caFile = caFile
            self.allowInsecureHTTP = allowInsecureHTTP
            self.summary = summary
        }
    }

    /// Reads an operator's settings file: a block mapping (or nothing) that sets none of the identity settings.
    public static func settings(file path: String) throws(AgentConfiguration.Invalid) -> String {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw AgentConfiguration.Invalid(description: "\(path): cannot read the settings file: \(error.localizedDescription)")
        }
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw AgentConfiguration.Invalid(description: "\(path): not valid YAML: \(error)")
        }
        guard let node else { return text }
        // enroll appends its own lines, which only continue a block mapping (not `{…}`).
        let firstContent = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .first { !$0.isEmpty && !$0.hasPrefix("#") && $0 != "---" }
        guard let mapping = node.mapping, firstContent?.hasPrefix("{") != true else {
            throw AgentConfiguration.Invalid(description: "\(path): expected settings as a block mapping (one 'name: value' per line)")
        }
        for (key, _) in mapping {
            if let name = key.string, identitySettings.contains(name) {
                throw AgentConfiguration.Invalid(
                    description: "\(path):\(key.mark?.line ?? 0): \(name): enroll writes this setting; remove it from the settings file")
            }
        }
        return text
    }

    /// The identity in an `agent.yaml` enroll wrote earlier.
    public static func identity(inConfiguration text: String, path: String) throws(AgentConfiguration.Invalid) -> Identity {
        let mapping: Node.Mapping
        do {
            guard let found = try Yams.compose(yaml: text)?.mapping else { throw AgentConfiguration.Invalid(description: "\(path): expected a mapping of settings") }
            mapping = found
        } catch let invalid as AgentConfiguration.Invalid {
            throw invalid
        } catch {
            throw AgentConfiguration.Invalid(description: "\(path): not valid YAML: \(error)")
        }
        func field(_ name: String) -> String? { mapping.first { $0.key.string == name }?.value.string }
        guard let controlPlane = field("control_plane"), let key = field("public_key"), let tokenFile = field("token_file"),
              let dataDirectory = field("data_directory")
        else {
            throw AgentConfiguration.Invalid(
                description: "\(path): not written by larder-agent enroll (control_plane, public_key, token_file and data_directory are needed)")
        }
        let publicKey: SigningPublicKey
        do { publicKey = try SigningPublicKey(parsing: key) } catch {
            throw AgentConfiguration.Invalid(description: "\(path): public_key: \(error.description)")
        }
        let summary = text.split(separator: "\n").first { $0.hasPrefix(marker + ":") }.map { String($0.dropFirst(marker.count + 1)).trimmingCharacters(in: .whitespaces) }
        return Identity(
            controlPlane: controlPlane, publicKey: publicKey, tokenFile: tokenFile, dataDirectory: dataDirectory, caFile: field("ca_file"),
            allowInsecureHTTP: field("allow_insecure_http") == "true", summary: summary ?? "an agent enrolled earlier", workspace: field("workspace"))
    }

    /// The file's text: the settings (or, without any, a commented example), then the identity.
    public static func render(_ identity: Identity, settings: String?, settingsPath: String? = nil) -> String {
        var text = ""
        if let settings, !settings.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            text = settings.hasSuffix("\n") ? settings : settings + "\n"
            text += "\n"
        }
        var lines = [
            "\(marker): \(identity.summary)",
            settingsPath.map { "# The settings above are a copy of \($0); `larder-agent enroll --skip-if-enrolled --settings` rewrites them." },
            "control_plane: \(scalar(identity.controlPlane))",
            "# The control plane's signing key, pinned: every job spec and snapshot must carry its signature.",
            "public_key: \(identity.publicKey.description)",
            identity.workspace.map { "# The workspace it was enrolled into, pinned: specs and snapshots of any other are refused.\nworkspace: \(scalar($0))" },
            "token_file: \(scalar(identity.tokenFile))",
            "data_directory: \(scalar(identity.dataDirectory))",
            identity.caFile.map { "ca_file: \(scalar($0))" },
            identity.allowInsecureHTTP ? "allow_insecure_http: true" : nil,
        ].compactMap { $0 }
        if settings == nil {
            lines += [
                "# The connections your sources name stay on this host. A password can stay in the environment:",
                "# connections:",
                "#   rides_db:",
                "#     postgres: postgres://reader:${RIDES_DB_PASSWORD}@db.internal:5432/rides?sslmode=require",
                "#   local_files:",
                "#     directory: /data/exports",
                "# offline_store:",
                "#   connection: rides_db",
                "#   schema: larder_offline",
            ]
        }
        return text + lines.joined(separator: "\n") + "\n"
    }

    /// Checks that settings make a usable configuration with `identity`, before anything is written (or a token
    /// spent). Errors name `settingsPath` and its own lines. `${NAME}`s the environment lacks are allowed: the
    /// agent's service may set them (an EnvironmentFile, a Kubernetes secret) where enroll does not run.
    public static func validate(settings: String, settingsPath: String, identity: Identity, environment: [String: String]) throws(AgentConfiguration.Invalid) {
        var lenient = environment
        var rest = settings[...]
        while let open = rest.range(of: "${"), let close = rest[open.upperBound...].firstIndex(of: "}") {
            let name = String(rest[open.upperBound..<close])
            if lenient[name] == nil { lenient[name] = "unset" }
            rest = rest[rest.index(after: close)...]
        }
        // Without token_file: the token does not exist yet, and the check is of the settings.
        var text = render(identity, settings: settings)
        text = text.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.hasPrefix("token_file:") }.joined(separator: "\n")
        _ = try AgentConfiguration(text: text, path: settingsPath, environment: lenient, requireToken: false)
    }

    /// A YAML scalar for a path or URL: plain when that reads back the same, double-quoted otherwise.
    static func scalar(_ value: String) -> String {
        let plain = value.allSatisfy { $0.isLetter || $0.isNumber || "/._-:@+~%=?&,".contains($0) }
            && !value.isEmpty && !"-?:,[]{}#&*!|>'\"%@`".contains(value.first!) && !value.hasSuffix(":")
        if plain { return value }
        let escaped = value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        return "\"\(escaped)\""
    }
}

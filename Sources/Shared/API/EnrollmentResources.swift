import Foundation

/// `POST /v1/workspaces/{ws}/enrollment-tokens`: a one-time token for
/// installing an agent in an environment.
public struct CreateEnrollmentTokenRequest: Sendable, Codable, Hashable {
    /// The environment the agent runs in (such as `prod`).
    public var environment: String
    /// The agent's name; absent: `<environment>-<random>` at enrollment.
    public var agent: String?
    /// How long the token may be used, in seconds (60 to 7 days; default 1 hour).
    public var ttlSeconds: Int64?

    /// Creates a request.
    public init(environment: String, agent: String? = nil, ttlSeconds: Int64? = nil) {
        self.environment = environment
        self.agent = agent
        self.ttlSeconds = ttlSeconds
    }
}

/// A new enrollment token: its secret is shown here once, and only its hash is kept.
public struct EnrollmentTokenResource: Sendable, Codable, Hashable {
    /// The token (`lre_…`), to hand to whoever installs the agent.
    public var token: String
    public var workspace: String
    public var environment: String
    /// The agent it will create, when named in advance.
    public var agent: String?
    /// After this, it is refused.
    public var expiresAt: Date
    /// The fingerprint of the control plane's signing key, to check against
    /// what `larder-agent enroll` prints (or pass to its `--expect-fingerprint`).
    public var keyFingerprint: String

    /// Creates a resource.
    public init(token: String, workspace: String, environment: String, agent: String?, expiresAt: Date, keyFingerprint: String) {
        self.token = token
        self.workspace = workspace
        self.environment = environment
        self.agent = agent
        self.expiresAt = expiresAt
        self.keyFingerprint = keyFingerprint
    }
}

/// `POST /v1/enroll`: an agent host exchanges an enrollment token for its credentials.
public struct EnrollRequest: Sendable, Codable, Hashable {
    /// The enrollment token.
    public var token: String
    /// The host enrolling (recorded in the audit log).
    public var hostname: String

    /// Creates a request.
    public init(token: String, hostname: String) {
        self.token = token
        self.hostname = hostname
    }
}

/// The credentials of a newly enrolled agent.
public struct EnrollResponse: Sendable, Codable, Hashable {
    /// The agent principal created.
    public var agent: String
    public var workspace: String
    public var environment: String
    /// The agent's API token: shown once, stored by the agent with mode 0600.
    public var token: String
    /// The control plane's signing key (`ed25519:…`), which every job spec and snapshot is signed with: the agent pins it.
    public var publicKey: String
    /// Its fingerprint.
    public var keyFingerprint: String

    /// Creates a response.
    public init(agent: String, workspace: String, environment: String, token: String, publicKey: String, keyFingerprint: String) {
        self.agent = agent
        self.workspace = workspace
        self.environment = environment
        self.token = token
        self.publicKey = publicKey
        self.keyFingerprint = keyFingerprint
    }
}

/// `POST /v1/agent/credentials`: a running agent asks for a new token, to
/// replace its own without downtime.
public struct RotateCredentialsRequest: Sendable, Codable, Hashable {
    /// How long the token used for this request stays valid (0 to 3,600 s; default 600), so requests in flight finish.
    public var graceSeconds: Int64?

    /// Creates a request.
    public init(graceSeconds: Int64? = nil) { self.graceSeconds = graceSeconds }
}

/// The agent's new token.
public struct RotateCredentialsResponse: Sendable, Codable, Hashable {
    /// The new token, shown once.
    public var token: String
    /// When the token that asked stops working.
    public var previousExpiresAt: Date

    /// Creates a response.
    public init(token: String, previousExpiresAt: Date) {
        self.token = token
        self.previousExpiresAt = previousExpiresAt
    }
}

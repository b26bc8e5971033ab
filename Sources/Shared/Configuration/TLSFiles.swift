import NIOSSL

/// A PEM certificate chain and private key, which a server answers HTTPS with:
/// the control plane's API, and an agent's feature server.
public struct TLSFiles: Sendable, Hashable {
    /// The certificate chain, leaf first (PEM).
    public var certificate: String
    /// The private key (PEM).
    public var key: String

    /// Names the two files.
    public init(certificate: String, key: String) {
        self.certificate = certificate
        self.key = key
    }

    /// The server-side TLS configuration, reading both files now (errors name what could not be read).
    public func serverConfiguration() throws -> TLSConfiguration {
        let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
        let privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
        return .makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(privateKey))
    }
}

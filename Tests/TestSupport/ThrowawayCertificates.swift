import Foundation

/// A throwaway certificate authority and a server certificate for 127.0.0.1,
/// made with the openssl command at test time.
public struct ThrowawayCertificates {
    /// The folder holding the files (remove it when done).
    public let folder: URL
    /// The CA certificate (PEM), to trust.
    public var caCertificate: String { folder.appendingPathComponent("ca.pem").path }
    /// The server certificate for 127.0.0.1 (PEM).
    public var serverCertificate: String { folder.appendingPathComponent("server.pem").path }
    /// Its private key (PEM).
    public var serverKey: String { folder.appendingPathComponent("server.key").path }

    /// Makes the CA, and a server certificate it signed, with openssl (each run awaited without holding a thread
    /// of the cooperative pool).
    public init() async throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try "subjectAltName=IP:127.0.0.1\n".write(to: folder.appendingPathComponent("san.ext"), atomically: true, encoding: .utf8)
        let steps = [
            ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "1", "-subj", "/CN=larder test CA"],
            ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem",
             "-days", "1", "-extfile", "san.ext"],
        ]
        for arguments in steps {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["openssl"] + arguments
            process.currentDirectoryURL = folder
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            await process.waitForExit()
            guard process.terminationStatus == 0 else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "openssl \(arguments[0]) failed"])
            }
        }
    }
}

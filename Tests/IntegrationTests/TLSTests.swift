import AsyncHTTPClient
import Foundation
import NIOSSL
import Shared
import Testing
import TestSupport

/// A throwaway certificate authority and a server certificate for 127.0.0.1,
/// made with the openssl command at test time.
struct ThrowawayCertificates {
    let folder: URL
    var caCertificate: String { folder.appendingPathComponent("ca.pem").path }
    var serverCertificate: String { folder.appendingPathComponent("server.pem").path }
    var serverKey: String { folder.appendingPathComponent("server.key").path }

    init() throws {
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
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "openssl \(arguments[0]) failed"])
            }
        }
    }
}

@Suite("HTTPS")
struct TLSTests {
    @Test("given a certificate and key, the control plane serves HTTPS that a client trusting the CA can use")
    func servesHTTPS() async throws {
        let certificates = try ThrowawayCertificates()
        defer { try? FileManager.default.removeItem(at: certificates.folder) }
        try await TestControlPlane.withControlPlane(tls: (certificates.serverCertificate, certificates.serverKey)) { server in
            #expect(server.baseURL.hasPrefix("https://127.0.0.1:"))
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(certificates.caCertificate)
            let trusting = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
            let untrusting = HTTPClient(eventLoopGroupProvider: .singleton)
            do {
                let client = ControlPlaneClient(baseURL: server.baseURL, token: server.adminToken, httpClient: trusting, timeout: .seconds(10))
                #expect(try await client.whoami().principal.name == "admin")
                let stranger = ControlPlaneClient(baseURL: server.baseURL, token: server.adminToken, httpClient: untrusting, timeout: .seconds(5))
                await #expect(throws: ControlPlaneClientError.self) { try await stranger.whoami() }
                let plain = ControlPlaneClient(
                    baseURL: server.baseURL.replacingOccurrences(of: "https://", with: "http://"), token: server.adminToken,
                    httpClient: untrusting, timeout: .seconds(5))
                await #expect(throws: (any Error).self) { try await plain.whoami() }
            } catch {
                try await trusting.shutdown()
                try await untrusting.shutdown()
                throw error
            }
            try await trusting.shutdown()
            try await untrusting.shutdown()
        }
    }
}

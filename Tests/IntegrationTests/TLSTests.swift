import AsyncHTTPClient
import Foundation
import NIOSSL
import Shared
import Testing
import TestSupport

@Suite("HTTPS")
struct TLSTests {
    @Test("given a certificate and key, the control plane serves HTTPS that a client trusting the CA can use")
    func servesHTTPS() async throws {
        let certificates = try await ThrowawayCertificates()
        defer { try? FileManager.default.removeItem(at: certificates.folder) }
        try await TestControlPlane.withControlPlane(tls: TLSFiles(certificate: certificates.serverCertificate, key: certificates.serverKey)) { server in
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

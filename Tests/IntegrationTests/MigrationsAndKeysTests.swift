import ControlPlane
import Logging
import PostgresNIO
import Shared
import Testing
import TestSupport

@Suite("Signing key")
struct SigningKeyTests {
    @Test("replicas starting together create one key pair and all load it; it signs what agents verify")
    func oneKeyPair() async throws {
        try await TestDatabase.withIsolatedDatabase { url in
            let logger = Logger(label: "test")
            let client = PostgresClient(configuration: url.clientConfiguration(), backgroundLogger: logger)
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await client.run() }
                try await MigrationRunner().run(on: client, logger: logger)
                let keys = try await withThrowingTaskGroup(of: SigningPublicKey.self) { starts in
                    for _ in 0..<4 { starts.addTask { try await SigningKeyStore.loadOrCreate(client: client, logger: logger).publicKey } }
                    return try await starts.reduce(into: []) { $0.append($1) }
                }
                #expect(Set(keys).count == 1)
                let again = try await SigningKeyStore.loadOrCreate(client: client, logger: logger)
                #expect(again.publicKey == keys[0])
                let document = try again.sign(.object(["job": .integer(1)]))
                #expect(try document.verified(with: keys[0]) == .object(["job": .integer(1)]))
                group.cancelAll()
            }
        }
    }
}

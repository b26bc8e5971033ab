import Foundation
import Logging
import PostgresNIO
import Testing
@testable import ControlPlane
@testable import Shared

@Suite("Server contract")
struct ServerContractTests {
    static func routeTable() throws -> (Set<String>, [RouteDescriptor], Set<String>) {
        let client = PostgresClient(
            configuration: PostgresURL(host: "127.0.0.1", username: "unused", database: "unused").clientConfiguration(),
            backgroundLogger: Logger(label: "test"))
        let (router, descriptors) = ControlPlaneApplication.makeRouter(client: client, logger: Logger(label: "test"))
        try router.validate()
        let registered = Set(router.routes.map { route in
            let path = route.path.description.split(separator: "/", omittingEmptySubsequences: false).map { segment in
                segment.hasPrefix(":") ? "{\(segment.dropFirst())}" : String(segment)
            }.joined(separator: "/")
            return "\(route.method.rawValue) \(path)"
        })
        return (registered, descriptors, OpenAPIDocument.operations)
    }

    @Test("every registered route is in the OpenAPI document, and every documented operation is registered")
    func openAPIMatchesRoutes() throws {
        let (registered, descriptors, documented) = try Self.routeTable()
        #expect(registered == documented, "only registered: \(registered.subtracting(documented)); only documented: \(documented.subtracting(registered))")
        #expect(Set(descriptors.map(\.description)) == registered)
        #expect(registered.count >= 17)
    }

    @Test("the OpenAPI document is valid JSON once converted")
    func documentConverts() throws {
        let object = try #require(try JSONSerialization.jsonObject(with: OpenAPIDocument.json) as? [String: Any])
        #expect((object["paths"] as? [String: Any])?.count == 49)
    }

    @Test("every migration file is listed, numbered without gaps")
    func migrationsListed() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/ControlPlane/Database/Migrations")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".sql") }.sorted()
        #expect(ControlPlaneMigrations.all.map { String(format: "%04d_%@.sql", $0.version, $0.name) } == files)
        #expect(ControlPlaneMigrations.all.map(\.version) == Array(1...ControlPlaneMigrations.all.count))
    }

    @Test("SQL scripts split at semicolons outside quotes, dollar quotes and comments")
    func scriptSplitting() {
        let script = """
            -- a comment; with a semicolon
            CREATE TABLE a (x text DEFAULT 'a;b');
            /* block; comment */ CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;
            INSERT INTO "we;ird" VALUES ('it''s; fine')
            """
        #expect(SQLScript.statements(in: script) == [
            "CREATE TABLE a (x text DEFAULT 'a;b')",
            "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql",
            "INSERT INTO \"we;ird\" VALUES ('it''s; fine')",
        ])
    }

    @Test("configuration reads flags over environment over defaults, and names what is wrong")
    func configuration() throws {
        let fromEnvironment = try ControlPlaneConfiguration(
            databaseURL: nil, listen: nil, tlsCertificate: nil, tlsKey: nil, logLevel: nil,
            environment: ["LARDER_DATABASE_URL": "postgres://larder@db:5433/registry", "LARDER_LISTEN": "0.0.0.0:8080"])
        #expect(fromEnvironment.database.port == 5433 && fromEnvironment.host == "0.0.0.0" && fromEnvironment.port == 8080)
        let flags = try ControlPlaneConfiguration(
            databaseURL: "postgres://x@h/d", listen: "[::1]:9000", tlsCertificate: nil, tlsKey: nil, logLevel: "debug",
            environment: ["LARDER_DATABASE_URL": "postgres://ignored@h/d"])
        #expect(flags.database.username == "x" && flags.host == "::1" && flags.port == 9000 && flags.logLevel == .debug)
        let defaults = try ControlPlaneConfiguration(
            databaseURL: "postgres://x@h/d", listen: nil, tlsCertificate: nil, tlsKey: nil, logLevel: nil, environment: [:])
        #expect(defaults.host == "127.0.0.1" && defaults.port == 7070 && defaults.tls == nil)
        #expect(throws: ControlPlaneConfiguration.Invalid.self) {
            try ControlPlaneConfiguration(databaseURL: nil, listen: nil, tlsCertificate: nil, tlsKey: nil, logLevel: nil, environment: [:])
        }
        #expect(throws: ControlPlaneConfiguration.Invalid.self) {
            try ControlPlaneConfiguration(databaseURL: "postgres://x@h/d", listen: "nohost", tlsCertificate: nil, tlsKey: nil, logLevel: nil, environment: [:])
        }
        #expect(throws: ControlPlaneConfiguration.Invalid.self) {
            try ControlPlaneConfiguration(databaseURL: "postgres://x@h/d", listen: nil, tlsCertificate: "c.pem", tlsKey: nil, logLevel: nil, environment: [:])
        }
        // Alert webhooks: URLs and a secret long enough, or a refusal naming the variable.
        let hooks = try ControlPlaneConfiguration(
            databaseURL: "postgres://x@h/d", listen: nil, tlsCertificate: nil, tlsKey: nil, logLevel: nil,
            environment: ["LARDER_ALERT_WEBHOOKS": "https://hooks.example/a, http://10.0.0.2:9000/b", "LARDER_ALERT_WEBHOOK_SECRET": "0123456789abcdef"])
        #expect(hooks.alertWebhooks?.urls == ["https://hooks.example/a", "http://10.0.0.2:9000/b"] && defaults.alertWebhooks == nil)
        for environment in [["LARDER_ALERT_WEBHOOKS": "https://hooks.example/a"],
                            ["LARDER_ALERT_WEBHOOKS": "https://hooks.example/a", "LARDER_ALERT_WEBHOOK_SECRET": "short"],
                            ["LARDER_ALERT_WEBHOOKS": "hooks.example", "LARDER_ALERT_WEBHOOK_SECRET": "0123456789abcdef"]] {
            do {
                _ = try ControlPlaneConfiguration(
                    databaseURL: "postgres://x@h/d", listen: nil, tlsCertificate: nil, tlsKey: nil, logLevel: nil, environment: environment)
                Issue.record("accepted \(environment)")
            } catch {
                #expect(error.description.hasPrefix("LARDER_ALERT_WEBHOOK"))
            }
        }
    }
}

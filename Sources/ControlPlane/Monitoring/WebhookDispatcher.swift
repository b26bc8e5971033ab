import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle
import Shared

/// Where alert events are posted, and the secret their signatures use.
public struct AlertWebhookSettings: Sendable, Hashable {
    /// Receivers' URLs.
    public var urls: [String]
    /// The HMAC-SHA256 key; receivers hold it too.
    public var secret: String
    /// The first retry delay; each further attempt waits twice as long, up to 10 minutes.
    public var retryBase: Duration

    /// Creates settings.
    public init(urls: [String], secret: String, retryBase: Duration = .seconds(2)) {
        self.urls = urls
        self.secret = secret
        self.retryBase = retryBase
    }

    /// The signature of a delivery: hex HMAC-SHA256 of `timestamp.body` under the secret.
    public static func signature(secret: String, timestamp: String, body: [UInt8]) -> String {
        var message = Array(timestamp.utf8)
        message.append(UInt8(ascii: "."))
        message += body
        let code = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Array(secret.utf8)))
        return code.map { String(format: "%02x", $0) }.joined()
    }
}

/// What a webhook receives: `POST` with this JSON body and the headers
/// `Larder-Delivery` (the delivery's id: a retry repeats it, so receivers can
/// drop repeats), `Larder-Timestamp` (Unix seconds) and `Larder-Signature`
/// (`sha256=` hex HMAC-SHA256 of `timestamp.body` with the shared secret).
public struct AlertDelivery: Sendable, Codable, Hashable {
    public var delivery: Int64
    /// `opened` (the condition's event) or `resolved` (its recovery).
    public var event: String
    public var alert: AlertResource
}

/// Posts alert events to the configured webhooks until each receiver
/// answers 2xx, backing off between attempts. Deliveries are rows written
/// with the events (`alert_deliveries`), so they survive restarts and a
/// receiver's outage; any replica may post them (a claim pushes a delivery's
/// next attempt a minute ahead, so two never post the same one at once).
public struct WebhookDispatcher: Service {
    let client: PostgresClient
    let settings: AlertWebhookSettings
    let logger: Logger

    /// Creates a dispatcher.
    public init(client: PostgresClient, settings: AlertWebhookSettings, logger: Logger) {
        self.client = client
        self.settings = settings
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                let posted = try await cancelWhenGracefulShutdown { try await deliverDue() }
                if posted > 0 { continue }
            } catch {
                logger.warning("cannot deliver alert webhooks", metadata: ["larder.error": "\(String(describing: error))"])
            }
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(250)) } } catch { return }
        }
    }

    /// Posts the deliveries due now; returns how many were attempted.
    @discardableResult
    public func deliverDue() async throws -> Int {
        var due: [(id: Int64, url: String, attempts: Int, delivery: AlertDelivery)] = []
        for try await (id, url, attempts, event, alert, workspace, kind, subject, detail, opened, resolved, resolvedDetail) in try await client.query(
            """
            WITH claimed AS (
                UPDATE alert_deliveries d SET next_attempt_at = now() + interval '60 seconds', attempts = d.attempts + 1
                WHERE d.id IN (SELECT id FROM alert_deliveries WHERE delivered_at IS NULL AND next_attempt_at <= now()
                               ORDER BY id LIMIT 20 FOR UPDATE SKIP LOCKED)
                RETURNING d.id, d.url, d.attempts, d.event, d.alert_id)
            SELECT c.id, c.url, c.attempts, c.event, a.id, w.name, a.kind, a.subject, a.detail, a.opened_at, a.resolved_at, a.resolved_detail
            FROM claimed c JOIN alerts a ON a.id = c.alert_id JOIN workspaces w ON w.id = a.workspace_id ORDER BY c.id
            """, logger: logger).decode((Int64, String, Int, String, Int64, String, String, String, String, Date, Date?, String?).self) {
            due.append((id, url, attempts, AlertDelivery(
                delivery: id, event: event,
                alert: AlertResource(
                    id: alert, workspace: workspace, kind: kind, subject: subject, detail: detail, openedAt: opened, resolvedAt: resolved,
                    resolvedDetail: resolvedDetail))))
        }
        for item in due {
            let failure = await post(item.delivery, to: item.url)
            if let failure {
                let delay = min(Double(settings.retryBase.components.seconds) + Double(settings.retryBase.components.attoseconds) / 1e18, 600)
                    * pow(2, Double(min(item.attempts - 1, 20)))
                try await client.execute(
                    """
                    UPDATE alert_deliveries SET next_attempt_at = now() + make_interval(secs => \(min(delay, 600))), last_error = \(failure)
                    WHERE id = \(item.id)
                    """, logger: logger)
                logger.info("alert webhook failed; it will be retried", metadata: [
                    "larder.delivery": "\(item.id)", "larder.attempts": "\(item.attempts)", "larder.error": .string(failure),
                ])
            } else {
                try await client.execute("UPDATE alert_deliveries SET delivered_at = now(), last_error = NULL WHERE id = \(item.id)", logger: logger)
            }
        }
        return due.count
    }

    /// Posts one delivery; nil when the receiver took it.
    func post(_ delivery: AlertDelivery, to url: String) async -> String? {
        do {
            let body = Array(try APICoding.makeEncoder().encode(delivery))
            let timestamp = String(Int64(Date().timeIntervalSince1970))
            var request = HTTPClientRequest(url: url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: "Larder-Delivery", value: String(delivery.delivery))
            request.headers.add(name: "Larder-Timestamp", value: timestamp)
            request.headers.add(name: "Larder-Signature", value: "sha256=" + AlertWebhookSettings.signature(secret: settings.secret, timestamp: timestamp, body: body))
            request.body = .bytes(ByteBuffer(bytes: body))
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            _ = try? await response.body.collect(upTo: 64 << 10)
            return (200..<300).contains(response.status.code) ? nil : "the receiver answered \(response.status.code)"
        } catch {
            return "cannot reach the receiver: \(String(describing: error).prefix(200))"
        }
    }
}

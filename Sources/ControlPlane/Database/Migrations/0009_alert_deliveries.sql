-- Webhook deliveries: one row per (alert event, webhook URL), written with
-- the event; a dispatcher posts each until the receiver answers 2xx, backing
-- off between attempts. A delivery is claimed by pushing next_attempt_at
-- ahead, so replicas never post the same one at once.
CREATE TABLE alert_deliveries (
    id              bigserial PRIMARY KEY,
    alert_id        bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    event           text NOT NULL CHECK (event IN ('opened', 'resolved')),
    url             text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text,
    UNIQUE (alert_id, event, url)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE delivered_at IS NULL;

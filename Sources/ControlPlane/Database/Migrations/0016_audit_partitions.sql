-- The audit log, partitioned by month so that it can be kept for a bounded
-- time (LARDER_AUDIT_RETENTION: the scheduler's leader drops whole months
-- past it, and audits each drop), with bounded field lengths, and a count:
-- failed authentications are recorded once per source and minute with how
-- many there were, so a flood of bad tokens cannot grow it without end.
ALTER TABLE audit_log RENAME TO audit_log_before_partitions;
ALTER INDEX audit_log_by_workspace RENAME TO audit_log_before_partitions_by_workspace;
ALTER INDEX audit_log_by_principal RENAME TO audit_log_before_partitions_by_principal;
ALTER SEQUENCE audit_log_id_seq OWNED BY NONE;

CREATE TABLE audit_log (
    id             bigint NOT NULL DEFAULT nextval('audit_log_id_seq'),
    at             timestamptz NOT NULL DEFAULT now(),
    principal      text NOT NULL CHECK (length(principal) <= 256),
    action         text NOT NULL CHECK (length(action) <= 256),
    resource       text NOT NULL CHECK (length(resource) <= 1024),
    workspace      text CHECK (length(workspace) <= 256),
    outcome        text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    status         integer NOT NULL,
    request_id     text NOT NULL CHECK (length(request_id) <= 128),
    client_address text CHECK (length(client_address) <= 64),
    count          integer NOT NULL DEFAULT 1 CHECK (count >= 1),
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
ALTER SEQUENCE audit_log_id_seq OWNED BY audit_log.id;
CREATE INDEX audit_log_by_workspace ON audit_log (workspace, id);
CREATE INDEX audit_log_by_principal ON audit_log (principal, id);
CREATE INDEX audit_log_by_id ON audit_log (id);

-- One partition per month: from the oldest record's month to next month.
DO $$
DECLARE
    month date := date_trunc('month', coalesce((SELECT min(at) FROM audit_log_before_partitions), now()) AT TIME ZONE 'UTC')::date;
    last  date := (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month')::date;
BEGIN
    WHILE month <= last LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF audit_log FOR VALUES FROM (%L) TO (%L)',
            'audit_log_' || to_char(month, 'YYYY_MM'),
            (month::timestamp AT TIME ZONE 'UTC'), ((month + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
        month := (month + interval '1 month')::date;
    END LOOP;
END
$$;

INSERT INTO audit_log (id, at, principal, action, resource, workspace, outcome, status, request_id, client_address)
SELECT id, at, left(principal, 256), left(action, 256), left(resource, 1024), left(workspace, 256), outcome, status,
       left(request_id, 128), left(client_address, 64)
FROM audit_log_before_partitions;
DROP TABLE audit_log_before_partitions;

CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

-- A view's `recompute` re-runs intervals that already succeeded, so its jobs
-- (trigger 'recompute') are kept out of the one-per-interval rule: any number
-- may have succeeded for an interval, but only one may be pending at a time.
DROP INDEX jobs_one_per_interval;
CREATE UNIQUE INDEX jobs_one_per_interval ON jobs (version_id, coalesce(environment, ''), interval_start, interval_end)
    WHERE kind = 'materialize' AND state NOT IN ('failed', 'cancelled') AND trigger <> 'recompute';
CREATE UNIQUE INDEX jobs_one_recompute_pending ON jobs (version_id, coalesce(environment, ''), interval_start, interval_end)
    WHERE kind = 'materialize' AND state IN ('queued', 'leased', 'running') AND trigger = 'recompute';

-- Each view version's newest successful materialization per environment: the
-- freshness watermark, which the history's pruning keeps (and the partial
-- indexes above, restricted by trigger, no longer serve).
CREATE INDEX jobs_newest_success ON jobs (version_id, (coalesce(environment, '')), interval_end DESC, id DESC)
    WHERE kind = 'materialize' AND state = 'succeeded';

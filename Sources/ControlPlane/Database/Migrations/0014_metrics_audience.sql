-- A token that can only scrape the control plane's /metrics (Prometheus'):
-- the metrics name every workspace and view, so they are for admins and for
-- tokens made for scraping, not for every signed-in principal.
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_audience_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_audience_check
    CHECK (audience IN ('control-plane', 'data-plane', 'both', 'metrics'));

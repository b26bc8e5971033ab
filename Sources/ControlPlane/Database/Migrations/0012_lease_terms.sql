-- Fencing tokens that reach the customer's stores: every claim of a job
-- takes the next number of one sequence, its lease term. The agent writes an
-- interval of an offline table only if no writer with a higher term has
-- written it (the offline store keeps, per table and interval, the highest
-- term that wrote it), so an agent whose lease ran out while it was paused or
-- cut off cannot overwrite the work of the one that took the job over.
CREATE SEQUENCE job_lease_terms;
ALTER TABLE jobs ADD COLUMN lease_term bigint;
ALTER TABLE job_attempts ADD COLUMN lease_term bigint;

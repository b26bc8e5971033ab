-- Planning reads only hashes of what is unchanged: registry objects keep the
-- hash of their operational and descriptive parts, and a plan keeps only the
-- rows it would write.
ALTER TABLE registry_objects ADD COLUMN state_hash text NOT NULL DEFAULT '';
ALTER TABLE plans RENAME COLUMN definitions TO writes;

-- Dataset jobs: what was asked (the features, where the entity rows are and
-- where the dataset goes, on the agent's side). What was built is in metrics.
ALTER TABLE jobs ADD COLUMN dataset jsonb;
ALTER TABLE jobs ADD CONSTRAINT jobs_dataset_request CHECK ((kind = 'dataset') = (dataset IS NOT NULL));

-- CDF data-modeling identity of a file (`instanceId: {space, externalId}`), optional and unique per project.
ALTER TABLE files ADD COLUMN instance_space TEXT;
ALTER TABLE files ADD COLUMN instance_external_id TEXT;
CREATE UNIQUE INDEX files_instance_id ON files (project, instance_space, instance_external_id)
    WHERE instance_space IS NOT NULL;

-- Named leases: which process of the cluster runs a periodic task (the sweeps) now. A holder renews its
-- lease; another process takes it over only once it has lapsed (on the database clock).
CREATE TABLE leases (
    name    TEXT   PRIMARY KEY NOT NULL,
    holder  TEXT   NOT NULL,
    expires BIGINT NOT NULL
);

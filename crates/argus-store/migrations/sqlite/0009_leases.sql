-- Named leases: which process of those sharing this store runs a periodic task (the sweeps) now. A holder
-- renews its lease; another process takes it over only once it has lapsed.
CREATE TABLE leases (
    name    TEXT    PRIMARY KEY NOT NULL,
    holder  TEXT    NOT NULL,
    expires INTEGER NOT NULL
);

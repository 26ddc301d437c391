-- The server's secrets (API keys, the link-signing key), generated once and kept with the data so that every
-- process serving this store uses the same ones. Data directories from before this table had them in
-- secrets.json; the first start after the upgrade copies them here unchanged.
CREATE TABLE secrets (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

-- Accounts (SFTP usernames) and their registered SSH public keys.
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL
);
CREATE TABLE keys (
    id           INTEGER PRIMARY KEY,
    account      TEXT NOT NULL REFERENCES accounts(id),
    name         TEXT NOT NULL,
    algorithm    TEXT NOT NULL,
    bits         INTEGER NOT NULL,
    fingerprint  TEXT NOT NULL,
    public_key   TEXT NOT NULL,
    comment      TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL,
    UNIQUE (account, name),
    UNIQUE (account, fingerprint)
);

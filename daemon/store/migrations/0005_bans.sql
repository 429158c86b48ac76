-- Addresses refused for a while after too many failed SFTP logins; `ingestd bans lift` deletes them.
-- account '' is a ban of the address for every account (a scanner trying many accounts).
CREATE TABLE bans (
    address       TEXT NOT NULL,
    account       TEXT NOT NULL DEFAULT '',
    reason        TEXT NOT NULL,
    failures      INTEGER NOT NULL,
    banned_at     TEXT NOT NULL,
    banned_until  REAL NOT NULL,          -- epoch seconds
    PRIMARY KEY (address, account)
)

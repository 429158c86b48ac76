-- When each key last logged in (UTC, ISO 8601), written by the SFTP process at each successful login;
-- NULL: never used since it was added (or since this column exists).
ALTER TABLE keys ADD COLUMN last_used TEXT

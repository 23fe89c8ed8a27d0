-- Session consistency and owner-safe login throttling (issue 12, items 4 and 5).
--
-- users.session_epoch counts password changes. A login issues a refresh
-- family only while the epoch it verified against is still current, and
-- every operation that reads or writes a user's refresh tokens first locks
-- the user row (FOR NO KEY UPDATE), so a reset, a logout or a reuse
-- revocation sees every child a concurrent rotation wrote.
ALTER TABLE users ADD COLUMN session_epoch bigint NOT NULL DEFAULT 0;

-- login_throttle holds every throttle row, told apart by the key's prefix:
-- "pair:<hex>" per (account, client address), "acct:<hex>" per account,
-- "reset:<hex>" per forgot-password address. Keys are HMAC-SHA256 (the
-- service's key), so no name, existing or not, is ever stored. account (the
-- acct key) lets a password reset clear the account's pair rows too.
-- updated_at is set on every write; the retention sweep deletes by it.
-- Rows of the old format held raw names: they are dropped, not converted.
DELETE FROM login_throttle;
ALTER TABLE login_throttle
    ADD COLUMN account text NULL,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX login_throttle_account_idx ON login_throttle (account) WHERE account IS NOT NULL;

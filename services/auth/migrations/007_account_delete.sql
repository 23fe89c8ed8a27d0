-- Account deletion (issue 15): DELETE /api/me/ removes the account's relayed
-- outbox rows (their payloads hold the address) in its transaction. Without
-- this index that is a scan of the whole outbox per deletion. Only relayed
-- rows are indexed: unsent ones are never deleted, they must still go out.
CREATE INDEX IF NOT EXISTS outbox_sent_key_idx ON outbox (key) WHERE sent_at IS NOT NULL;
-- Depends on no other migration numbered after the last one on main: cm_db_migrate
-- applies every embedded version not yet recorded, in order, gaps or not, so a
-- lower number merged later runs after this one on an existing database.

-- Retention (common/include/cm/sweep.h): what auth may forget, and when.

-- login_throttle rows are swept by age of their last change. Migration 002
-- (the throttle redesign) guarantees this column; adding it here too keeps
-- this migration correct whether or not 002 ran first.
ALTER TABLE login_throttle ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();

CREATE INDEX IF NOT EXISTS refresh_tokens_expires_idx ON refresh_tokens (expires_at);
CREATE INDEX IF NOT EXISTS one_time_tokens_expires_idx ON one_time_tokens (expires_at);
CREATE INDEX IF NOT EXISTS one_time_tokens_used_idx ON one_time_tokens (used_at)
    WHERE used_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_sent_age_idx ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS login_throttle_updated_idx ON login_throttle (updated_at);

-- Deletes at most `batch` rows from each table and says how many:
--   refresh_tokens   expired more than keep_s ago. Never earlier: a rotated or revoked
--                    token is what detects reuse of a stolen one until it expires, and
--                    after expiry it is refused anyway;
--   one_time_tokens  expired or used more than keep_s ago (a late click gets "invalid"
--                    instead of "used", nothing more);
--   outbox           sent more than keep_s ago;
--   login_throttle   unchanged for keep_s (failures that old no longer lock anyone out).
-- dedup_s is unused: every service's function has the same signature.
CREATE FUNCTION retention_sweep(batch int, keep_s bigint, dedup_s bigint)
RETURNS TABLE (tbl text, removed bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    cutoff timestamptz := now() - make_interval(secs => keep_s);
BEGIN
    DELETE FROM refresh_tokens WHERE token_hash IN (
        SELECT r.token_hash FROM refresh_tokens r WHERE r.expires_at < cutoff
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'refresh_tokens'; removed := n; RETURN NEXT;

    DELETE FROM one_time_tokens WHERE token_hash IN (
        SELECT t.token_hash FROM one_time_tokens t
        WHERE t.expires_at < cutoff OR t.used_at < cutoff
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'one_time_tokens'; removed := n; RETURN NEXT;

    DELETE FROM outbox WHERE id IN (
        SELECT o.id FROM outbox o WHERE o.sent_at IS NOT NULL AND o.sent_at < cutoff
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'outbox'; removed := n; RETURN NEXT;

    DELETE FROM login_throttle WHERE key IN (
        SELECT l.key FROM login_throttle l WHERE l.updated_at < cutoff
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'login_throttle'; removed := n; RETURN NEXT;
END
$$;

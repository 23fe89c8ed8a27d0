-- Sessions you can see and end, and the new sign-in notice (issue 15).
--
-- A session is a refresh-token family: one row per family, written by the
-- login that opened it (in the same transaction as its first token). It is
-- live while its family holds a token that is neither revoked nor expired;
-- ending it revokes the family's tokens, so refresh_rotate() (migration 004)
-- answers the next refresh with outcome 0 (401) at once. user_agent is the
-- coarse class services/auth/signin.c makes ("Firefox on Linux"), never the
-- header itself; ip is the address the login came from.
CREATE TABLE sessions (
    family_id    uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now(),
    user_agent   text NOT NULL CHECK (char_length(user_agent) BETWEEN 1 AND 64),
    ip           inet NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id, last_used_at DESC);
CREATE INDEX sessions_last_used_idx ON sessions (last_used_at);

-- Families that predate this migration become sessions of an unknown class.
INSERT INTO sessions (family_id, user_id, created_at, last_used_at, user_agent)
SELECT family_id, user_id, min(created_at), max(created_at), 'Other'
FROM refresh_tokens GROUP BY family_id, user_id;

-- A refresh rotation is a use of its session. A trigger rather than a new
-- refresh_rotate(): the rotation stays the one statement migration 004 made
-- it, and every child token, whoever inserts it, moves last_used_at.
CREATE FUNCTION sessions_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.parent_hash IS NOT NULL THEN
        UPDATE sessions SET last_used_at = NEW.created_at WHERE family_id = NEW.family_id;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER refresh_tokens_touch_session AFTER INSERT ON refresh_tokens
    FOR EACH ROW EXECUTE FUNCTION sessions_touch();

-- Where an account signed in from: one row per (user agent class, network:
-- IPv4 /24 or IPv6 /64), last_seen_at moved by every login from it. A login
-- from a pair not seen for 90 days is a new sign-in (signin.new).
CREATE TABLE signin_seen (
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_agent   text NOT NULL,
    network      text NOT NULL,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, user_agent, network)
);
CREATE INDEX signin_seen_last_idx ON signin_seen (last_seen_at);

-- first_signin_at: NULL until the account's first login (which sends no
-- notice: it is the registration's own). signin_notice_at: the last notice,
-- for the cap of one an hour. Accounts that already hold tokens have signed in.
ALTER TABLE users
    ADD COLUMN first_signin_at timestamptz NULL,
    ADD COLUMN signin_notice_at timestamptz NULL;
UPDATE users u SET first_signin_at = t.first
FROM (SELECT user_id, min(created_at) AS first FROM refresh_tokens GROUP BY user_id) t
WHERE t.user_id = u.id;

-- Retention, as migration 003's, plus: sessions whose family has no token
-- left (the sweep above deletes expired tokens keep_s after expiry) and
-- sign-in history older than 90 days or keep_s, whichever is longer (the
-- notice needs 90 days of it).
CREATE OR REPLACE FUNCTION retention_sweep(batch int, keep_s bigint, dedup_s bigint)
RETURNS TABLE (tbl text, removed bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    cutoff timestamptz := now() - make_interval(secs => keep_s);
    seen_cutoff timestamptz := least(cutoff, now() - interval '90 days');
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

    DELETE FROM sessions WHERE family_id IN (
        SELECT s.family_id FROM sessions s WHERE s.last_used_at < cutoff
        AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.family_id = s.family_id)
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'sessions'; removed := n; RETURN NEXT;

    DELETE FROM signin_seen WHERE (user_id, user_agent, network) IN (
        SELECT g.user_id, g.user_agent, g.network FROM signin_seen g
        WHERE g.last_seen_at < seen_cutoff LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'signin_seen'; removed := n; RETURN NEXT;
END
$$;

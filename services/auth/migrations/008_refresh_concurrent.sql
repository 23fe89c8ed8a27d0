-- Rotations of different tokens of one user run side by side (issue 16).
--
-- Migration 004's refresh_rotate() took FOR NO KEY UPDATE on the owner's row,
-- so every rotation of one user waited for the previous one to commit: a user
-- with a phone, a laptop and a tablet (or the peer harness's pool of tokens,
-- all one user's) refreshed one at a time. What that lock guaranteed, and how
-- each guarantee holds now (READ COMMITTED; a VOLATILE plpgsql function takes
-- a new snapshot per statement):
--
-- (a) Two requests presenting the same token are one rotation and one replay,
--     never two rotations. The rotation is now one UPDATE of the token's own
--     row WHERE revoked_at IS NULL: the second request blocks on that row
--     lock, and when the first commits PostgreSQL re-checks the row's newest
--     version, finds it revoked and updates nothing; the function then reads
--     the token with a fresh snapshot and judges the replay (grace or reuse)
--     exactly as before.
--
-- (b) A rotation racing a session-wide revocation (password reset, password
--     change, logout, ending a session, account deletion) never leaves a live
--     child. Rotations take FOR SHARE on the owner's row; every revocation
--     takes FOR NO KEY UPDATE or FOR UPDATE (or UPDATEs the row, which takes
--     FOR NO KEY UPDATE) BEFORE its statement that revokes tokens. In
--     PostgreSQL's row-lock table FOR SHARE conflicts with FOR NO KEY UPDATE
--     and FOR UPDATE but not with itself, so rotations do not wait for each
--     other, while a revocation waits until every rotation that holds the
--     share lock has committed and its next statement (a new snapshot) sees
--     and revokes their children; a rotation that comes after waits for the
--     revocation and then reads its token revoked (outcome 0). The share lock
--     costs what the foreign key already cost: inserting the child takes FOR
--     KEY SHARE on the same row (a no-op once FOR SHARE is held), and two
--     concurrent holders make a MultiXact whichever of the two locks it is.
--     Row locks are not queued fairly: a new share locker does not wait for
--     a revocation already waiting, so the revocation gets in at the first
--     instant no rotation of the user is in flight. Each rotation holds the
--     lock for one statement, and every pooled connection has a round trip
--     between two: under 2,100 rotations/s of one user (10 connections), a
--     FOR NO KEY UPDATE on that user's row waited 3-5 ms (2026-12-06).
--
-- (c) A replay outside the grace window revokes the whole family, and no
--     rotation of the family racing it leaves a live child. The replay holds
--     only the share lock now, so a rotation of the family's current token may
--     be in flight: its child is invisible to the revoking UPDATE's snapshot,
--     and its token, locked by it, is skipped once it commits. So the replay
--     repeats the UPDATE until a fresh snapshot shows no unrevoked token in
--     the family. Why that is enough: a rotation in flight holds its token
--     locked, and that token is committed-live (it stays so until the
--     rotation commits), so the final look would have seen it; a token the
--     loop revoked makes any rotation of it wait for this transaction and
--     then update nothing. Two replays of one family take a transaction
--     advisory lock on the family first (only on this path), so they never
--     revoke the same rows in different orders.
--
-- Also here, issue 16's other costs of a rotation:
-- - The owner's columns (those of USER_SELECT in store.c) and the referrer's
--   code come with the lock, in its one statement; the function no longer
--   reads them again at the end, and its answer row is built from variables.
--   The rotated path runs four statements (lock and read the owner; rotate
--   the token; insert the child; touch the session, which writes nothing
--   within the minute) where 004 ran five plus its trigger's UPDATE (and
--   both the foreign key's check of the child).
-- - sessions.last_used_at (indexed, so every write of it is a non-HOT update)
--   moves at most once a minute per session: when it is older than the
--   rotation by more than 60 s. The trigger of migration 005 is gone; only
--   this function ever inserted a child token.
DROP TRIGGER refresh_tokens_touch_session ON refresh_tokens;
DROP FUNCTION sessions_touch();

CREATE OR REPLACE FUNCTION refresh_rotate(p_hash text, p_child text, p_ttl_days int, p_grace_s int)
RETURNS TABLE (outcome int, family_id uuid, id uuid, username text, email text,
               password_hash text, referral_code text, referrer_code text, verified boolean,
               created_us bigint, session_epoch bigint)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    o record;
    t refresh_tokens%ROWTYPE;
    fam uuid;
    child_live boolean;
    result int;
BEGIN
    SELECT u.id, u.username::text AS username, u.email::text AS email, u.password_hash,
           u.referral_code::text AS referral_code,
           coalesce(r.referral_code::text, '') AS referrer_code,
           u.email_verified_at IS NOT NULL AS verified,
           (extract(epoch FROM u.created_at) * 1000000)::bigint AS created_us,
           u.session_epoch
    INTO o
    FROM users u LEFT JOIN users r ON r.id = u.referred_by
    WHERE u.id = (SELECT x.user_id FROM refresh_tokens x WHERE x.token_hash = p_hash)
    FOR SHARE OF u;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE refresh_tokens x SET revoked_at = now(), replaced_by = p_child
    WHERE x.token_hash = p_hash AND x.revoked_at IS NULL AND x.expires_at > now()
    RETURNING x.family_id INTO fam;
    IF FOUND THEN
        INSERT INTO refresh_tokens (token_hash, user_id, family_id, parent_hash, expires_at)
        VALUES (p_child, o.id, fam, p_hash, now() + make_interval(days => p_ttl_days));
        UPDATE sessions s SET last_used_at = now()
        WHERE s.family_id = fam AND s.last_used_at < now() - interval '60 seconds';
        result := 1;
    ELSE
        SELECT * INTO t FROM refresh_tokens x WHERE x.token_hash = p_hash;
        fam := t.family_id;
        IF NOT FOUND OR t.expires_at <= now() OR t.replaced_by IS NULL THEN
            result := 0;
        ELSE
            SELECT c.revoked_at IS NULL AND c.expires_at > now() INTO child_live
            FROM refresh_tokens c WHERE c.token_hash = t.replaced_by;
            IF t.replaced_by = p_child AND coalesce(child_live, false)
               AND now() - t.revoked_at <= make_interval(secs => p_grace_s) THEN
                result := 2;
            ELSE
                PERFORM pg_advisory_xact_lock(hashtextextended(t.family_id::text, 16));
                LOOP
                    UPDATE refresh_tokens x SET revoked_at = now()
                    WHERE x.family_id = t.family_id AND x.revoked_at IS NULL;
                    EXIT WHEN NOT EXISTS (SELECT 1 FROM refresh_tokens x
                                          WHERE x.family_id = t.family_id
                                          AND x.revoked_at IS NULL);
                END LOOP;
                result := 3;
            END IF;
        END IF;
    END IF;
    -- The answer row from variables (no statement): the owner only with 1-3.
    outcome := result;
    family_id := fam;
    IF result <> 0 THEN
        id := o.id; username := o.username; email := o.email;
        password_hash := o.password_hash; referral_code := o.referral_code;
        referrer_code := o.referrer_code; verified := o.verified;
        created_us := o.created_us; session_epoch := o.session_epoch;
    END IF;
    RETURN NEXT;
END
$$;

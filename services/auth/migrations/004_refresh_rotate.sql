-- One round trip per refresh (issue 16). The rotation used to be a four-round-trip
-- transaction (BEGIN; lock and read the owner; rotate and report; COMMIT), and the
-- owner's row stayed locked across the network for all of it, so one user's refreshes
-- ran at the speed of the round trips. This function does the same steps, in the same
-- order and under the same lock, inside the server: `SELECT * FROM refresh_rotate(...)`
-- is one statement and its own transaction.
--
-- The order matters: the owner's row is locked first (every session change of a user —
-- issue, rotate, logout, password reset — takes that lock), and only then is the token
-- read. A plpgsql function that is VOLATILE takes a new snapshot per statement in READ
-- COMMITTED, so the read after the lock sees whatever the previous holder committed,
-- exactly like the separate statements did: two requests presenting the same token are
-- one rotation and one replay, never two rotations and never a missed replay.
--
-- outcome: 0 invalid (no such token, expired, or revoked without a successor: logout,
-- reset), 1 rotated, 2 grace (the same child asked for again within grace_s while it is
-- live), 3 reused (any other replay: the family is revoked here). The owner's columns
-- (those of USER_SELECT in store.c) come with outcomes 1-3; no row for an unknown token.
CREATE FUNCTION refresh_rotate(p_hash text, p_child text, p_ttl_days int, p_grace_s int)
RETURNS TABLE (outcome int, family_id uuid, id uuid, username text, email text,
               password_hash text, referral_code text, referrer_code text, verified boolean,
               created_us bigint, session_epoch bigint)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    owner uuid;
    t refresh_tokens%ROWTYPE;
    child_live boolean;
    result int;
BEGIN
    SELECT u.id INTO owner FROM users u
    WHERE u.id = (SELECT r.user_id FROM refresh_tokens r WHERE r.token_hash = p_hash)
    FOR NO KEY UPDATE;
    IF owner IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO t FROM refresh_tokens r WHERE r.token_hash = p_hash;
    IF NOT FOUND OR t.expires_at <= now() THEN
        result := 0;
    ELSIF t.revoked_at IS NULL THEN
        UPDATE refresh_tokens r SET revoked_at = now(), replaced_by = p_child
        WHERE r.token_hash = p_hash;
        INSERT INTO refresh_tokens (token_hash, user_id, family_id, parent_hash, expires_at)
        VALUES (p_child, t.user_id, t.family_id, p_hash, now() + make_interval(days => p_ttl_days));
        result := 1;
    ELSIF t.replaced_by IS NULL THEN
        result := 0;
    ELSE
        SELECT c.revoked_at IS NULL AND c.expires_at > now() INTO child_live
        FROM refresh_tokens c WHERE c.token_hash = t.replaced_by;
        IF t.replaced_by = p_child AND coalesce(child_live, false)
           AND now() - t.revoked_at <= make_interval(secs => p_grace_s) THEN
            result := 2;
        ELSE
            UPDATE refresh_tokens r SET revoked_at = now()
            WHERE r.family_id = t.family_id AND r.revoked_at IS NULL;
            result := 3;
        END IF;
    END IF;
    IF result = 0 THEN
        RETURN QUERY SELECT 0, t.family_id, NULL::uuid, NULL::text, NULL::text, NULL::text,
            NULL::text, NULL::text, NULL::boolean, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT result, t.family_id, u.id, u.username::text, u.email::text, u.password_hash,
           u.referral_code::text, coalesce(r.referral_code::text, ''),
           u.email_verified_at IS NOT NULL,
           (extract(epoch FROM u.created_at) * 1000000)::bigint, u.session_epoch
    FROM users u LEFT JOIN users r ON r.id = u.referred_by
    WHERE u.id = owner;
END
$$;

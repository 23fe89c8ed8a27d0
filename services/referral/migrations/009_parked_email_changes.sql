-- A user.email.changed that arrives before its user.registered (another
-- topic, so no order between them) waits here, the newest change per user,
-- and is applied when the registration arrives, as a parked verification is
-- (001). Until now such a change was retried until the member existed: the
-- change's partition stood still meanwhile, and for ever if the member never
-- came (a registration skipped as malformed), holding up every other user's
-- change on that partition.
CREATE TABLE parked_email_changes (
    user_id   uuid PRIMARY KEY,
    email     text NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parked_email_changes_age ON parked_email_changes (parked_at);

-- Retention (003, 004) gains the parked changes and the deletion
-- tombstones (007), both kept for the dedup window like processed events:
-- a registration that comes later than that finds neither, exactly as it
-- would find its event id forgotten. The tombstone's other use, a 401 for a
-- deleted subject's access token, needs it for minutes (the token's life).
CREATE INDEX deleted_members_age ON deleted_members (anonymised_at);

CREATE OR REPLACE FUNCTION retention_sweep(batch int, keep_s bigint, dedup_s bigint)
RETURNS TABLE (tbl text, removed bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM outbox WHERE id IN (
        SELECT o.id FROM outbox o
        WHERE o.sent_at IS NOT NULL AND o.sent_at < now() - make_interval(secs => keep_s)
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'outbox'; removed := n; RETURN NEXT;

    DELETE FROM processed_events WHERE event_id IN (
        SELECT p.event_id FROM processed_events p
        WHERE p.processed_at < now() - make_interval(secs => dedup_s)
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'processed_events'; removed := n; RETURN NEXT;

    DELETE FROM parked_verifications WHERE user_id IN (
        SELECT v.user_id FROM parked_verifications v
        WHERE v.parked_at < now() - make_interval(secs => dedup_s)
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'parked_verifications'; removed := n; RETURN NEXT;

    DELETE FROM parked_email_changes WHERE user_id IN (
        SELECT e.user_id FROM parked_email_changes e
        WHERE e.parked_at < now() - make_interval(secs => dedup_s)
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'parked_email_changes'; removed := n; RETURN NEXT;

    DELETE FROM deleted_members WHERE user_id IN (
        SELECT d.user_id FROM deleted_members d
        WHERE d.anonymised_at < now() - make_interval(secs => dedup_s)
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'deleted_members'; removed := n; RETURN NEXT;

    DELETE FROM clicks WHERE id IN (
        SELECT c.id FROM clicks c
        WHERE c.clicked_at < now() - make_interval(secs => dedup_s)
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'clicks'; removed := n; RETURN NEXT;
END
$$;

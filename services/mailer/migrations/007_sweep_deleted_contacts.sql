-- Retention (004) gains the deletion tombstones (006). A tombstone keeps a
-- redelivered user.registered, or an event about the user that arrives
-- late, from making a contact or a mail again; past RETENTION_DEDUP_DAYS
-- (longer than the topics' retention) no such event can arrive, so the row
-- guards nothing. It holds only the user's random id and a time.
CREATE INDEX deleted_contacts_age ON deleted_contacts (deleted_at);

CREATE OR REPLACE FUNCTION retention_sweep(batch int, keep_s bigint, dedup_s bigint)
RETURNS TABLE (tbl text, removed bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    cutoff timestamptz := now() - make_interval(secs => dedup_s);
BEGIN
    DELETE FROM sent WHERE event_id IN (
        SELECT s.event_id FROM sent s WHERE s.sent_at < cutoff
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'sent'; removed := n; RETURN NEXT;

    DELETE FROM parked_mails WHERE event_id IN (
        SELECT p.event_id FROM parked_mails p WHERE p.parked_at < cutoff
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'parked_mails'; removed := n; RETURN NEXT;

    DELETE FROM deleted_contacts WHERE user_id IN (
        SELECT d.user_id FROM deleted_contacts d WHERE d.deleted_at < cutoff
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'deleted_contacts'; removed := n; RETURN NEXT;
END
$$;

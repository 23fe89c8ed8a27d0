-- Retention (common/include/cm/sweep.h): what the mailer may forget.
--   sent          the ledger row of a handled event exists so that a redelivered event is
--                 not mailed twice. Past RETENTION_DEDUP_DAYS (which outlasts the topics'
--                 7-day retention) that event can no longer be redelivered, so the row
--                 guards nothing.
--   parked_mails  a mail waiting for its contact (user.registered) that has not arrived in
--                 dedup_s never will: the registration is older than the topic's retention.
--                 Its link would have expired long ago too (verify 48 h, reset 30 min).
-- contacts is one row per user (the projection the mails need): not swept.
CREATE INDEX sent_age ON sent (sent_at);
CREATE INDEX parked_mails_age ON parked_mails (parked_at);

-- keep_s is unused: every service's function has the same signature.
CREATE FUNCTION retention_sweep(batch int, keep_s bigint, dedup_s bigint)
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
END
$$;

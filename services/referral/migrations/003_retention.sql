-- The daily-cap rule counts one referrer's referrals of the last 24 hours
-- that the cap did not reject itself: this index holds exactly those, so
-- the count stays bounded by the cap (plus fraud rejections) however many
-- referrals a hot referrer has had refused.
CREATE INDEX referrals_referrer_capped ON referrals (referrer_id, created_at)
    WHERE reason IS DISTINCT FROM 'daily_cap';
-- Its predecessor (002) served the old count only; referrals_referrer_page
-- covers any other (referrer_id, created_at) range.
DROP INDEX IF EXISTS referrals_referrer_recent;

-- Retention (common/include/cm/sweep.h). Indexes for the sweeps below.
CREATE INDEX outbox_sent_age ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX processed_events_age ON processed_events (processed_at);
CREATE INDEX parked_verifications_age ON parked_verifications (parked_at);

-- Deletes at most `batch` rows from each table and says how many:
--   outbox                sent longer than keep_s ago (the relay never looks at them again);
--   processed_events      older than dedup_s: RETENTION_DEDUP_DAYS outlasts the topics'
--                         retention (7 days), so an event that old cannot be redelivered;
--                         every effect is also guarded by the state it changes (a known
--                         member, a referral no longer pending), so even a replay changes nothing;
--   parked_verifications  a verification whose registration has not come in dedup_s will
--                         not come (the registration is older than the topic's retention).
-- Referrals, rewards, members and counters are the product's data: never swept.
CREATE FUNCTION retention_sweep(batch int, keep_s bigint, dedup_s bigint)
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
END
$$;

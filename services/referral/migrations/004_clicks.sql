-- Clicks on referral links (/r/<code>) and the funnel clicks → signups →
-- successful, overall and per day.
--
-- Every click the gateway counts is one row here (for audit and the
-- one-hour dedup), and bumps two counters in the same statement's
-- transaction by trigger: referral_counters.clicks and the day's row of
-- referral_daily. Referral inserts and conversions bump the daily rows the
-- same way, so the stats and the daily series are reads of a fixed number
-- of rows whatever the number of clicks.

CREATE TABLE clicks (
    id            bigserial PRIMARY KEY,
    referrer_id   uuid NOT NULL,
    code          text NOT NULL,
    clicked_at    timestamptz NOT NULL DEFAULT now(),
    client_hash   text NOT NULL,        -- HMAC of the client address (gateway's key), hex
    ua_class      text NOT NULL CHECK (ua_class IN ('mobile', 'desktop', 'other')),
    referrer_host text NULL
);
-- The dedup probe: this client on this code within the last hour.
CREATE INDEX clicks_dedup ON clicks (code, client_hash, clicked_at DESC);
CREATE INDEX clicks_age ON clicks (clicked_at);

ALTER TABLE referral_counters ADD COLUMN clicks bigint NOT NULL DEFAULT 0 CHECK (clicks >= 0);

CREATE TABLE referral_daily (
    user_id    uuid NOT NULL,
    day        date NOT NULL,
    clicks     bigint NOT NULL DEFAULT 0,
    signups    bigint NOT NULL DEFAULT 0,
    successful bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day)
);

CREATE FUNCTION clicks_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO referral_counters (user_id, clicks) VALUES (NEW.referrer_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET clicks = referral_counters.clicks + 1;
    INSERT INTO referral_daily (user_id, day, clicks)
        VALUES (NEW.referrer_id, (NEW.clicked_at AT TIME ZONE 'UTC')::date, 1)
        ON CONFLICT (user_id, day) DO UPDATE SET clicks = referral_daily.clicks + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER clicks_count AFTER INSERT ON clicks FOR EACH ROW EXECUTE FUNCTION clicks_count();

CREATE FUNCTION referrals_daily() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO referral_daily (user_id, day, signups)
            VALUES (NEW.referrer_id, (NEW.created_at AT TIME ZONE 'UTC')::date, 1)
            ON CONFLICT (user_id, day) DO UPDATE SET signups = referral_daily.signups + 1;
    END IF;
    IF NEW.status = 'successful' AND (TG_OP = 'INSERT' OR OLD.status <> 'successful') THEN
        INSERT INTO referral_daily (user_id, day, successful)
            VALUES (NEW.referrer_id,
                    (coalesce(NEW.converted_at, now()) AT TIME ZONE 'UTC')::date, 1)
            ON CONFLICT (user_id, day) DO UPDATE SET successful = referral_daily.successful + 1;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER referrals_daily AFTER INSERT OR UPDATE OF status ON referrals
    FOR EACH ROW EXECUTE FUNCTION referrals_daily();

-- Retention: raw clicks serve the one-hour dedup and audits; the counters
-- keep the totals. They are swept like processed events (dedup_s).
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

    DELETE FROM clicks WHERE id IN (
        SELECT c.id FROM clicks c
        WHERE c.clicked_at < now() - make_interval(secs => dedup_s)
        LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    tbl := 'clicks'; removed := n; RETURN NEXT;
END
$$;

-- Striped counters (issue 18). One row per referrer serialised every
-- conversion of a referrer whose link went viral on that row's lock. The
-- counts now live in up to 16 stripe rows per user; a referral's changes
-- all go to the stripe chosen from its referred user when it is created
-- (referrals.stripe), so pending +1 and -1 meet in one row and every
-- per-row CHECK still holds. The stats read sums at most 16 rows of one
-- primary-key prefix: O(1) and exact, through the view referral_counters
-- that keeps the old table's name and columns.

ALTER TABLE referral_counters RENAME TO referral_counter_stripes;
ALTER TABLE referral_counter_stripes
    ADD COLUMN stripe smallint NOT NULL DEFAULT 0 CHECK (stripe BETWEEN 0 AND 15);
ALTER TABLE referral_counter_stripes DROP CONSTRAINT referral_counters_pkey;
ALTER TABLE referral_counter_stripes ADD PRIMARY KEY (user_id, stripe);

-- Existing referrals were counted in the one row there was: stripe 0.
ALTER TABLE referrals ADD COLUMN stripe smallint NOT NULL DEFAULT 0 CHECK (stripe BETWEEN 0 AND 15);

-- The stripe of a new referral (or a reward): a hash of its referred user
-- (or referral), so one referrer's changes spread over all 16 rows.
CREATE FUNCTION referral_stripe(id uuid) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (hashtextextended(id::text, 18) & 15)::smallint $$;

CREATE VIEW referral_counters AS
SELECT user_id,
       sum(total)::bigint AS total,
       sum(pending)::bigint AS pending,
       sum(successful)::bigint AS successful,
       sum(rejected)::bigint AS rejected,
       sum(expired)::bigint AS expired,
       sum(credits)::bigint AS credits,
       sum(rewards_count)::bigint AS rewards_count,
       sum(clicks)::bigint AS clicks
FROM referral_counter_stripes
GROUP BY user_id;

-- 004's click counter and daily rollup follow the stripes too, or a link
-- that goes viral would meet again on one row per referrer (and per day):
-- a click counts in the stripe of its id, a signup or conversion in its
-- referral's stripe; readers sum the stripes (at most 16 rows per day).
ALTER TABLE referral_daily ADD COLUMN stripe smallint NOT NULL DEFAULT 0
    CHECK (stripe BETWEEN 0 AND 15);
ALTER TABLE referral_daily DROP CONSTRAINT referral_daily_pkey;
ALTER TABLE referral_daily ADD PRIMARY KEY (user_id, day, stripe);

CREATE OR REPLACE FUNCTION clicks_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s smallint := (NEW.id & 15)::smallint;
BEGIN
    INSERT INTO referral_counter_stripes AS k (user_id, stripe, clicks)
        VALUES (NEW.referrer_id, s, 1)
        ON CONFLICT (user_id, stripe) DO UPDATE SET clicks = k.clicks + 1;
    INSERT INTO referral_daily AS d (user_id, day, stripe, clicks)
        VALUES (NEW.referrer_id, (NEW.clicked_at AT TIME ZONE 'UTC')::date, s, 1)
        ON CONFLICT (user_id, day, stripe) DO UPDATE SET clicks = d.clicks + 1;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION referrals_daily() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s smallint := referral_stripe(NEW.referred_id);
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO referral_daily AS d (user_id, day, stripe, signups)
            VALUES (NEW.referrer_id, (NEW.created_at AT TIME ZONE 'UTC')::date, s, 1)
            ON CONFLICT (user_id, day, stripe) DO UPDATE SET signups = d.signups + 1;
    END IF;
    IF NEW.status = 'successful' AND (TG_OP = 'INSERT' OR OLD.status <> 'successful') THEN
        INSERT INTO referral_daily AS d (user_id, day, stripe, successful)
            VALUES (NEW.referrer_id,
                    (coalesce(NEW.converted_at, now()) AT TIME ZONE 'UTC')::date, s, 1)
            ON CONFLICT (user_id, day, stripe) DO UPDATE SET successful = d.successful + 1;
    END IF;
    RETURN NULL;
END
$$;

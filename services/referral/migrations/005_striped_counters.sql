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
       sum(rewards_count)::bigint AS rewards_count
FROM referral_counter_stripes
GROUP BY user_id;

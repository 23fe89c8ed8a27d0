-- The monthly leaderboard (issue 14): top referrers by successful
-- referrals this calendar month (UTC), usernames only for members who
-- opted in.
--
-- The ranking is read from 004's daily rollup (successful conversions per
-- referrer, day and stripe) by a timer in each referral process, never by
-- a request: requests are served from that process's cached copy. This
-- partial index holds only the rows with a conversion, ordered by day, so
-- a refresh reads this month's converting rows and nothing else.
CREATE INDEX referral_daily_successful_day ON referral_daily (day)
    INCLUDE (user_id, successful) WHERE successful > 0;

-- The opt-in (PATCH /api/me {"show_on_leaderboard": ...}). Its own table
-- rather than a column of members: a user may set it before their
-- user.registered event has reached this service. No row means hidden.
CREATE TABLE leaderboard_optin (
    user_id    uuid PRIMARY KEY,
    show       boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

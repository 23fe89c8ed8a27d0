-- Account deletion (issue 15). A user.deleted event anonymises the user's
-- rows here: the members row (username, address, referral code) and the
-- clicks on the user's link (client-address hashes) are deleted; the
-- referrals, rewards and counters stay, since they are the referrers'
-- counts and hold no more than the user's random id.
--
-- The tombstone remembers the id so that (a) the API answers 401 to an
-- access token of a deleted subject at once, although the token itself
-- lives on until it expires, (b) a user.registered that arrives after the
-- deletion (another topic, so no ordering) adds the referral but never
-- the member again, and (c) a user.deleted consumed twice changes nothing.
CREATE TABLE deleted_members (
    user_id       uuid PRIMARY KEY,
    deleted_at    timestamptz NOT NULL,
    anonymised_at timestamptz NOT NULL DEFAULT now()
);
-- The anonymisation deletes one referrer's clicks by referrer_id.
CREATE INDEX IF NOT EXISTS clicks_referrer ON clicks (referrer_id);
-- Depends on no other migration numbered after the last one on main: cm_db_migrate
-- applies every embedded version not yet recorded, in order, gaps or not, so a
-- lower number merged later runs after this one on an existing database.

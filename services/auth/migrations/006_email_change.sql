-- Email change while signed in (issue 15). A request stores one row here; the
-- address in users changes only when the confirm link (mailed to the new
-- address) is used. The cancel link (mailed to the old address) ends the
-- request instead. Both tokens are stored as SHA-256 hex, never in clear.
--
-- state: pending → confirmed | cancelled | superseded (a newer request of the
-- same account replaced it). At most one pending row per account. Finished
-- rows stay so a late click can be told "already used" or "cancelled" rather
-- than "unknown". Every new request (of any account) deletes up to 100 rows
-- that finished or expired more than 30 days ago (email_changes_age), so the
-- addresses they hold do not stay for ever; deleting the user deletes its
-- rows at once (CASCADE). The retention sweep (migration 003) is left alone:
-- redefining retention_sweep here would race other migrations that extend it.
--
-- Independent of every other auth migration (none reads or changes this
-- table), so it may be applied before or after a lower-numbered one.
CREATE TABLE email_changes (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    old_email    text NOT NULL CHECK (char_length(old_email) BETWEEN 3 AND 254),
    new_email    text NOT NULL CHECK (char_length(new_email) BETWEEN 3 AND 254),
    confirm_hash text NOT NULL UNIQUE,
    cancel_hash  text NOT NULL UNIQUE,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'confirmed', 'cancelled', 'superseded')),
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz NULL
);
CREATE UNIQUE INDEX email_changes_one_pending ON email_changes (user_id) WHERE state = 'pending';
CREATE INDEX email_changes_user_idx ON email_changes (user_id, created_at);
CREATE INDEX email_changes_age ON email_changes ((coalesce(finished_at, expires_at)));

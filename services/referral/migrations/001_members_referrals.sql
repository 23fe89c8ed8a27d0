-- The referral service's projection of users and the referrals between them.
-- Everything lives in the role's own schema (search_path), so no names are
-- qualified here.

CREATE TABLE members (
    user_id       uuid PRIMARY KEY,
    username      text NOT NULL,
    referral_code text NOT NULL UNIQUE,
    referred_by   uuid NULL,
    email         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE referrals (
    id           uuid PRIMARY KEY,
    referrer_id  uuid NOT NULL,
    referred_id  uuid NOT NULL UNIQUE,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'successful', 'rejected', 'expired')),
    reason       text NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    converted_at timestamptz NULL
);

-- Keyset pagination of one referrer's referrals, newest first: the cost of
-- a page does not grow with the number of referrals.
CREATE INDEX referrals_referrer_page ON referrals (referrer_id, created_at DESC, id DESC);
CREATE INDEX referrals_referrer_status_page
    ON referrals (referrer_id, status, created_at DESC, id DESC);
-- The expiry sweep looks only at pending rows.
CREATE INDEX referrals_pending_age ON referrals (created_at) WHERE status = 'pending';

-- One row per user, changed in the same transaction as the referral it
-- counts, so the stats endpoint is a single-row read.
CREATE TABLE referral_counters (
    user_id    uuid PRIMARY KEY,
    total      bigint NOT NULL DEFAULT 0 CHECK (total >= 0),
    pending    bigint NOT NULL DEFAULT 0 CHECK (pending >= 0),
    successful bigint NOT NULL DEFAULT 0 CHECK (successful >= 0),
    rejected   bigint NOT NULL DEFAULT 0 CHECK (rejected >= 0),
    expired    bigint NOT NULL DEFAULT 0 CHECK (expired >= 0),
    credits    bigint NOT NULL DEFAULT 0,
    rewards_count bigint NOT NULL DEFAULT 0 CHECK (rewards_count >= 0)
);

-- Consumed event ids: stored in the same transaction as their effect, so a
-- redelivered event changes nothing.
CREATE TABLE processed_events (
    event_id     uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- A user.verified that arrived before its user.registered waits here and
-- is applied when the registration arrives.
CREATE TABLE parked_verifications (
    user_id     uuid PRIMARY KEY,
    verified_at timestamptz NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now()
);

-- The transactional outbox of common/include/cm/kafka.h.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    event_id   uuid NOT NULL UNIQUE,
    topic      text NOT NULL,
    key        text NOT NULL,
    payload    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- auth: users, credentials, refresh tokens, one-time tokens, login
-- throttling and the transactional outbox (cm/kafka.h). Runs with
-- search_path = auth as the role auth, which owns the schema.
--
-- Case-insensitive uniqueness uses unique indexes on lower(...) rather than
-- citext (CREATE EXTENSION needs a superuser). The index names carry the
-- field name so the service maps a unique violation to the field it reports.

CREATE TABLE users (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username          text NOT NULL CHECK (char_length(username) BETWEEN 3 AND 30),
    email             text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    password_hash     text NOT NULL,
    referral_code     text NOT NULL CHECK (referral_code ~ '^[0-9A-HJKMNP-TV-Z]{8}$'),
    referred_by       uuid NULL REFERENCES users (id),
    email_verified_at timestamptz NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    registration_ip   inet NULL,
    CONSTRAINT users_referral_code_key UNIQUE (referral_code)
);
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE INDEX users_referred_by_idx ON users (referred_by) WHERE referred_by IS NOT NULL;

CREATE TABLE refresh_tokens (
    token_hash  text PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id   uuid NOT NULL,
    parent_hash text NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz NULL,
    replaced_by text NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

CREATE TABLE one_time_tokens (
    token_hash text PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('verify', 'reset')),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX one_time_tokens_user_kind_idx ON one_time_tokens (user_id, kind, created_at);

CREATE TABLE login_throttle (
    key          text PRIMARY KEY,
    failures     integer NOT NULL DEFAULT 0,
    locked_until timestamptz NULL
);

CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    event_id   uuid NOT NULL UNIQUE,
    topic      text NOT NULL,
    key        text NOT NULL,
    payload    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent_idx ON outbox (id) WHERE sent_at IS NULL;

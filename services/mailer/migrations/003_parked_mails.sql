-- A mail for a user the mailer has no contact for yet (a reward.granted
-- that overtook its user.registered on another topic) waits here instead
-- of blocking the consumer; the user's registration releases it.
CREATE TABLE parked_mails (
    event_id  uuid PRIMARY KEY,
    user_id   uuid NOT NULL,
    payload   text NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parked_mails_user ON parked_mails (user_id);

-- The mailer's projection of who can be written to, and the ledger that
-- makes every event send at most one mail. Unqualified names: the role's
-- search_path is its own schema.

CREATE TABLE contacts (
    user_id    uuid PRIMARY KEY,
    email      text NOT NULL,
    username   text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per event that produced a mail. The unique event id is what
-- stops a redelivered event from writing a second message.
CREATE TABLE sent (
    event_id  uuid PRIMARY KEY,
    recipient text NOT NULL,
    template  text NOT NULL,
    sent_at   timestamptz NOT NULL DEFAULT now(),
    attempts  integer NOT NULL DEFAULT 1 CHECK (attempts >= 1)
);

-- A mail that could not be delivered (a permanent refusal, or the last
-- retry spent) still gets its ledger row, marked dead, so a redelivered
-- event does not try again; the event itself went to the mail.dead topic.
ALTER TABLE sent
    ADD COLUMN outcome text NOT NULL DEFAULT 'sent' CHECK (outcome IN ('sent', 'dead')),
    ADD COLUMN reason text NULL;

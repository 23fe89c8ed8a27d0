-- Email change (issue 15): user.email.changed moves a contact to its new
-- address. email_changed_at is the change's own time (the event's
-- changed_at), so a redelivered or older change never overwrites a newer one,
-- and a user.registered that arrives after the change (another topic) keeps
-- the changed address instead of restoring the old one.
ALTER TABLE contacts ADD COLUMN email_changed_at timestamptz NULL;

-- Account deletion (issue 15). A user.deleted event gets one goodbye mail,
-- then the mailer forgets the person: the contact row is deleted and every
-- ledger row sent to them keeps no address (recipient ''). The ledger row
-- itself stays: it is what stops a redelivered event from mailing again.
--
-- sent.user_id names the user a mail was for (rows written before this
-- migration have NULL and are found by their address instead), so a later
-- address change does not hide old rows from the deletion.
ALTER TABLE sent ADD COLUMN IF NOT EXISTS user_id uuid NULL;
CREATE INDEX IF NOT EXISTS sent_user ON sent (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS sent_recipient_lower ON sent (lower(recipient)) WHERE recipient <> '';

-- Tombstones: a contact is never made again for a deleted user (a
-- user.registered redelivered after the deletion), and events about them
-- that arrive late are dropped instead of mailed or parked.
CREATE TABLE deleted_contacts (
    user_id    uuid PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
-- Depends on no other migration numbered after the last one on main: cm_db_migrate
-- applies every embedded version not yet recorded, in order, gaps or not, so a
-- lower number merged later runs after this one on an existing database.

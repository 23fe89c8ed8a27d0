-- Referral pages without a join (issue 16). GET /api/referrals showed each
-- referred member's username through a join to members: an index probe per
-- row, about a third of what a page cost PostgreSQL. The username now rides
-- on the referral row, kept by triggers whoever writes (the consumer, the
-- bench seed, a test): a referral takes its member's username when it is
-- inserted, a member's insert (or rename) writes it into the referral whose
-- referred user it is, and the member's delete (account deletion) blanks
-- it again, so a deleted account's name leaves its referrer's list too.
ALTER TABLE referrals ADD COLUMN referred_username text NULL;

UPDATE referrals r SET referred_username = m.username
FROM members m WHERE m.user_id = r.referred_id;

CREATE FUNCTION referrals_take_username() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.referred_username := (SELECT m.username FROM members m WHERE m.user_id = NEW.referred_id);
    RETURN NEW;
END
$$;
CREATE TRIGGER referrals_username BEFORE INSERT ON referrals
    FOR EACH ROW EXECUTE FUNCTION referrals_take_username();

CREATE FUNCTION members_give_username() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE referrals SET referred_username = NULL
            WHERE referred_id = OLD.user_id AND referred_username IS NOT NULL;
    ELSE
        UPDATE referrals SET referred_username = NEW.username
            WHERE referred_id = NEW.user_id
              AND referred_username IS DISTINCT FROM NEW.username;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER members_username AFTER INSERT OR DELETE OR UPDATE OF username ON members
    FOR EACH ROW EXECUTE FUNCTION members_give_username();

-- Rewards paid by the reward engine. A grant is idempotent per (rule,
-- referral, user): a replayed or retried verification never pays twice.
-- Milestones are once per user and rule whatever the referral.
CREATE TABLE rewards (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('credit', 'milestone')),
    amount      bigint NOT NULL CHECK (amount >= 0),
    reason      text NOT NULL,
    rule        text NOT NULL,
    referral_id uuid NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX rewards_once_per_rule_referral ON rewards (rule, referral_id, user_id);
CREATE UNIQUE INDEX rewards_milestone_once ON rewards (user_id, rule) WHERE kind = 'milestone';
CREATE INDEX rewards_user_page ON rewards (user_id, created_at DESC, id DESC);
-- The daily-cap rule counts one referrer's recent referrals.
CREATE INDEX referrals_referrer_recent ON referrals (referrer_id, created_at);

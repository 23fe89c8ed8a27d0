/*
 * rules.h — the reward rules and the fraud rules of the referral service.
 *
 * Reward rules come from one JSON file (REFERRAL_RULES_FILE) over built-in
 * defaults:
 *
 *   {"referrer_credit": 10, "welcome_credit": 5,
 *    "milestones": [{"at": 5, "amount": 25}, {"at": 10, "amount": 50},
 *                   {"at": 25, "amount": 150}]}
 *
 * Fraud rules reject a referral when the referred email is an alias of
 * the referrer's own (case; dots and +tags in the local part at the common
 * webmail domains), when its domain is on the disposable-email list (a
 * file in the repo, embedded; REFERRAL_DISPOSABLE_DOMAINS_FILE replaces
 * it), or when the referrer already has REFERRAL_DAILY_CAP referrals in
 * the last 24 hours. Everything here is pure and thread-safe once built.
 */
#ifndef REF_RULES_H
#define REF_RULES_H

#include <stdbool.h>
#include <stddef.h>

#include "cm/error.h"

#define REF_MAX_MILESTONES 16

/** A milestone: when a referrer's successful count reaches at, pay amount. */
typedef struct ref_milestone {
    long long at;
    long long amount;
} ref_milestone_t;

/** The reward rules. The caller owns the struct; nothing inside is allocated. */
typedef struct ref_rules {
    long long referrer_credit; /* per successful referral, to the referrer */
    long long welcome_credit;  /* to the referred user when they verify */
    ref_milestone_t milestones[REF_MAX_MILESTONES];
    size_t nmilestones;
} ref_rules_t;

/** Fills r with the built-in defaults (10, 5, milestones 5/10/25 → 25/50/150). */
void ref_rules_defaults(ref_rules_t *r);

/**
 * Parses a rules document (untrusted bytes) over the defaults already in
 * r: members present replace them. Returns 0, or CM_EPARSE with a short
 * reason in why (why_len bytes) — not JSON, a negative or non-integer
 * amount, milestones not ascending or too many.
 */
CM_MUST_CHECK int ref_rules_parse(const char *json, size_t len, ref_rules_t *r, char *why,
                                  size_t why_len);

/** A sorted set of lower-case domains. The caller owns the struct. */
typedef struct ref_domains {
    char **v;
    size_t n;
} ref_domains_t;

/** The embedded default disposable-domain list (NUL-terminated text). */
extern const char ref_default_disposable[];

/**
 * Builds the set from a list text: one domain a line, '#' comments and
 * blank lines ignored, case folded. Returns 0 or CM_EPARSE (a line that
 * is not a domain). Free with ref_domains_dispose.
 */
CM_MUST_CHECK int ref_domains_parse(const char *text, ref_domains_t *out);

/** Frees the set. NULL-safe. */
void ref_domains_dispose(ref_domains_t *d);

/** True when the email's domain, or a parent of it, is in the set. */
bool ref_domains_match(const ref_domains_t *d, const char *email);

/**
 * Writes the canonical form of an email into out (cap bytes): lower case;
 * at gmail.com / googlemail.com without dots and +tag (and as gmail.com);
 * at the other common webmail domains without the +tag. Returns 0, or
 * CM_EPARSE when email has no '@', does not fit, or its local part is
 * empty once the dots and the +tag are stripped ("+x@gmail.com").
 */
CM_MUST_CHECK int ref_email_canonical(const char *email, char *out, size_t cap);

/** True when a and b are the same mailbox after ref_email_canonical. */
bool ref_email_alias(const char *a, const char *b);

/** Why a referral is rejected, or NULL to accept it. Static strings. */
#define REF_REASON_ALIAS "self_referral_alias"
#define REF_REASON_DISPOSABLE "disposable_email"
#define REF_REASON_DAILY_CAP "daily_cap"

#endif

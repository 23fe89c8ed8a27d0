/*
 * store.h — every SQL statement of the referral service (schema "referral").
 *
 * Functions take a connection the caller holds; the consumer runs them
 * inside one transaction per event (effect + processed_events row), and
 * every change to a referral updates the referrer's counters in that same
 * transaction. The counters are striped (migration 005): a referral counts
 * in one of up to 16 rows of its referrer, so one referrer's conversions do
 * not queue on one row lock, and stats sum those rows (O(1), exact).
 */
#ifndef REF_STORE_H
#define REF_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/db.h"
#include "cm/error.h"

/** A member as user.registered describes it; every string borrowed. */
typedef struct ref_member {
    const char *user_id;
    const char *username;
    const char *email;
    const char *referral_code;
    const char *referred_by;   /* the referrer's user id, or NULL */
    const char *registered_at; /* RFC 3339 */
} ref_member_t;

/** The result of a status change (strings owned by the struct). */
typedef struct ref_conversion {
    char referral_id[37];
    char referrer_id[37];
    char at[40];          /* RFC 3339 UTC */
    char stripe[4];       /* the referrer's counter stripe this referral counts in, as text */
    long long successful; /* set by the consumer: the referrer's successful count after the
                             change, exact while a milestone may still fall due (see consumer.c) */
} ref_conversion_t;

/** One reward to grant; strings borrowed. */
typedef struct ref_grant {
    const char *user_id;
    const char *kind; /* "credit" or "milestone" */
    long long amount;
    const char *reason;
    const char *rule;        /* "referrer_credit", "welcome_credit", "milestone_5" ... */
    const char *referral_id; /* or NULL */
    const char *at;          /* RFC 3339 */
    const char *stripe;      /* the user's counter stripe to add to ("0"-"15"); NULL for 0 */
} ref_grant_t;

/** Statuses a referral can have (matches the CHECK constraint). */
#define REF_PENDING "pending"
#define REF_SUCCESSFUL "successful"
#define REF_REJECTED "rejected"
#define REF_EXPIRED "expired"

/**
 * Records event_id as processed. Returns 0 when it is new, CM_ECONFLICT
 * when it was processed before (the caller then changes nothing).
 */
CM_MUST_CHECK int ref_store_mark_processed(cm_db_t *db, const char *event_id);

/**
 * Serializes this transaction with every other one about user_id (a
 * transaction-scoped advisory lock), so a registration and a verification
 * of one user handled by two consumers cannot miss each other.
 */
CM_MUST_CHECK int ref_store_lock_user(cm_db_t *db, const char *user_id);

/**
 * Inserts the member and an empty counters row. Returns 0 when inserted,
 * CM_ESTATE when the user id is already a member (nothing changes),
 * CM_ECONFLICT when another member has the code.
 */
CM_MUST_CHECK int ref_store_add_member(cm_db_t *db, const ref_member_t *m);

/**
 * Creates the pending referral referrer → referred (created at `at`) and
 * adds it to the referrer's counters (total, pending). Returns 0, or
 * CM_ESTATE when the referred user already has a referral.
 */
CM_MUST_CHECK int ref_store_add_referral(cm_db_t *db, const char *referrer_id,
                                         const char *referred_id, const char *at);

/** Returns 0 when user_id is a member, CM_ENOTFOUND when not, or a CM_E* code. */
CM_MUST_CHECK int ref_store_member_exists(cm_db_t *db, const char *user_id);

/** Parks a verification whose registration has not arrived (first one wins). */
CM_MUST_CHECK int ref_store_park_verification(cm_db_t *db, const char *user_id,
                                              const char *verified_at);

/**
 * Takes (and deletes) a parked verification of user_id. Returns 0 and
 * copies its time into verified_at, or CM_ENOTFOUND.
 */
CM_MUST_CHECK int ref_store_take_parked(cm_db_t *db, const char *user_id, char verified_at[40]);

/**
 * Moves the pending referral of referred_id to status (successful,
 * rejected or expired) with reason (NULL for none) at time `at`, and moves
 * one count in the referral's stripe of the referrer's counters from
 * pending to status (a row lock on that stripe only, to commit). Returns 0
 * and fills *out (successful left 0: see ref_store_successful), or
 * CM_ENOTFOUND when there is no pending referral.
 */
CM_MUST_CHECK int ref_store_convert(cm_db_t *db, const char *referred_id, const char *status,
                                    const char *reason, const char *at, ref_conversion_t *out);

/**
 * The user's successful count: the sum of its stripes as this statement
 * sees them (committed changes and the transaction's own). Returns 0 or CM_EDB.
 */
CM_MUST_CHECK int ref_store_successful(cm_db_t *db, const char *user_id, long long *n);

/**
 * Takes the referrer's milestone lock (a transaction-scoped advisory lock,
 * distinct from ref_store_lock_referrer's), held to commit: conversions
 * that may reach a milestone take it so each sees the exact count.
 */
CM_MUST_CHECK int ref_store_lock_milestones(cm_db_t *db, const char *referrer_id);

/**
 * Copies the member's email into email (255 bytes). Returns 0 or
 * CM_ENOTFOUND when user_id is not a member (yet).
 */
CM_MUST_CHECK int ref_store_member_email(cm_db_t *db, const char *user_id, char email[255]);

/**
 * Serializes this transaction with every other one that creates a
 * referral for referrer_id (a transaction-scoped advisory lock), so the
 * daily-cap count below sees every referral admitted before it. Take it
 * after ref_store_lock_user (always in that order: no deadlock).
 */
CM_MUST_CHECK int ref_store_lock_referrer(cm_db_t *db, const char *referrer_id);

/**
 * Counts, up to limit, referrer_id's referrals created after `at` minus 24
 * hours (later ones included: events arrive out of order) that were not
 * rejected by the daily cap. Returns the count (>= 0) or a CM_E* code.
 */
int ref_store_recent_referrals(cm_db_t *db, const char *referrer_id, const char *at, int limit);

/**
 * Grants a reward: a rewards row and the user's credits and rewards_count,
 * in the caller's transaction. Returns 0 and copies the new reward's id
 * into reward_id, or CM_ESTATE when this rule already paid for this
 * referral (or, for a milestone, for this user): nothing changes then.
 */
CM_MUST_CHECK int ref_store_grant(cm_db_t *db, const ref_grant_t *g, char reward_id[37]);

/**
 * Copies the referred ids of up to limit pending referrals older than
 * ttl_days, oldest first, into ids (the caller's array of limit entries)
 * and sets *n to how many. The rows stay locked until the caller's
 * transaction ends (FOR UPDATE SKIP LOCKED, so replicas share the sweep).
 */
CM_MUST_CHECK int ref_store_expirable(cm_db_t *db, int ttl_days, int limit, char ids[][37], int *n);

/** One user's stats: the counters row plus the member's code. */
typedef struct ref_stats {
    char referral_code[32]; /* "" when the member is not known yet */
    long long total, pending, successful, rejected, expired, credits, rewards_count, clicks;
} ref_stats_t;

/**
 * Reads the stats of user_id (zeros when unknown): one statement that sums
 * the stripes and looks up the code and the tombstone. Returns 0, CM_EAUTH
 * when user_id's account was deleted (its access tokens still verify), or
 * a CM_E* code.
 */
CM_MUST_CHECK int ref_store_stats(cm_db_t *db, const char *user_id, ref_stats_t *out);

/** One click on /r/<code> as the gateway reports it. Strings borrowed. */
typedef struct ref_click {
    const char *code;          /* upper case */
    const char *client_hash;   /* 64 hex: the gateway's keyed hash of the client address */
    const char *ua_class;      /* "mobile", "desktop" or "other" */
    const char *referrer_host; /* NULL when none */
    bool count;                /* false: only say whether the code exists */
} ref_click_t;

/**
 * Records a click when c->count and the same client did not click the
 * same code within the hour (*counted says whether it did). Returns 0,
 * CM_ENOTFOUND when no member owns the code, or a CM_E* code.
 */
CM_MUST_CHECK int ref_store_click(cm_db_t *db, const ref_click_t *c, bool *counted);

/** Longest daily series GET /api/referral-stats/daily answers. */
#define REF_MAX_DAYS 90

/** One UTC day of a referrer's funnel. */
typedef struct ref_day {
    char date[11]; /* YYYY-MM-DD */
    long long clicks, signups, successful;
} ref_day_t;

/**
 * Fills out[0..days-1] with the last days UTC days (today last), zeros for
 * days without activity. days in 1..REF_MAX_DAYS. Returns 0, CM_EAUTH when
 * user_id's account was deleted, or a CM_E* code.
 */
CM_MUST_CHECK int ref_store_daily(cm_db_t *db, const char *user_id, int days, ref_day_t *out);

/** A keyset position: the last row of the previous page. */
typedef struct ref_cursor {
    int64_t created_us; /* created_at in microseconds since the epoch */
    char id[37];
} ref_cursor_t;

/** Bytes of ref_time_text's output with its NUL: "YYYY-MM-DDTHH:MM:SS.mmmZ". */
#define REF_TIME_MAX 32

/**
 * Writes us (microseconds since the epoch) as RFC 3339 UTC text with
 * milliseconds (truncated), exactly as PostgreSQL's
 * to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') writes it,
 * for years 1 to 9999. The pages read times as integers and format them
 * here, once each: cheaper than to_char in the database.
 */
void ref_time_text(int64_t us, char out[REF_TIME_MAX]);

/** The page size the API defaults to (its own statements: see store.c). */
#define REF_PAGE_DEFAULT 20

/** One referral as GET /api/referrals shows it. */
typedef struct ref_referral {
    char id[37];
    char referred_id[37];
    const char *referred_username;   /* borrowed from the page; NULL while not a member */
    char status[16];                 /* REF_PENDING ... */
    const char *reason;              /* borrowed from the page; NULL for none */
    char created_at[REF_TIME_MAX];   /* RFC 3339 UTC */
    char converted_at[REF_TIME_MAX]; /* RFC 3339 UTC, or "" while pending */
    int64_t created_us;              /* created_at in microseconds since the epoch */
} ref_referral_t;

/** One page of referrals; the caller owns it and calls ref_referral_page_dispose. */
typedef struct ref_referral_page {
    ref_referral_t *rows; /* n rows, newest first */
    size_t n;
    bool more;         /* a further page exists */
    ref_cursor_t next; /* when more: the position of rows[n - 1], for the next page */
    PGresult *res;     /* owned: the result the rows' borrowed strings point into */
} ref_referral_page_t;

/**
 * Lists referrer_id's referrals newest first: at most limit rows after
 * cursor (NULL for the first page), only status when not NULL, into *out
 * (left empty on failure). The cost does not depend on the page's depth.
 * One statement, which also looks up the tombstone: CM_EAUTH when
 * referrer_id's account was deleted.
 */
CM_MUST_CHECK int ref_store_list(cm_db_t *db, const char *referrer_id, const char *status,
                                 const ref_cursor_t *cursor, int limit, ref_referral_page_t *out);

/** Frees a page's rows and strings and empties it. NULL-safe. */
void ref_referral_page_dispose(ref_referral_page_t *p);

/** One reward as GET /api/rewards shows it. */
typedef struct ref_reward {
    char id[37];
    char kind[16]; /* "credit" or "milestone" */
    long long amount;
    const char *reason;            /* borrowed from the page */
    char referral_id[37];          /* "" for a reward not tied to one referral (a milestone) */
    char created_at[REF_TIME_MAX]; /* RFC 3339 UTC */
    int64_t created_us;
} ref_reward_t;

/** One page of rewards; the caller owns it and calls ref_reward_page_dispose. */
typedef struct ref_reward_page {
    ref_reward_t *rows; /* n rows, newest first */
    size_t n;
    bool more;         /* a further page exists */
    ref_cursor_t next; /* when more: the position of rows[n - 1] */
    PGresult *res;     /* owned: the result the rows' borrowed strings point into */
} ref_reward_page_t;

/**
 * Lists user_id's rewards newest first: at most limit rows after cursor
 * (NULL: first page), into *out (left empty on failure). CM_EAUTH when
 * user_id's account was deleted (one statement, as ref_store_list).
 */
CM_MUST_CHECK int ref_store_rewards(cm_db_t *db, const char *user_id, const ref_cursor_t *cursor,
                                    int limit, ref_reward_page_t *out);

/** Frees a page's rows and strings and empties it. NULL-safe. */
void ref_reward_page_dispose(ref_reward_page_t *p);

/**
 * Sets the member's email (user.email.changed, issue 15), which the alias
 * fraud rule compares later referrals with. Returns 0, CM_ENOTFOUND when
 * the member is not known yet, or a CM_E* code.
 */
CM_MUST_CHECK int ref_store_member_set_email(cm_db_t *db, const char *user_id, const char *email);

/**
 * Parks an email change whose registration has not arrived (migration 009):
 * the newest change of user_id wins (a user's changes arrive in order).
 */
CM_MUST_CHECK int ref_store_park_email(cm_db_t *db, const char *user_id, const char *email);

/**
 * Takes (and deletes) user_id's parked email change, if any, and sets the
 * member's email to it. Returns 0 (also when none was parked) or a CM_E* code.
 */
CM_MUST_CHECK int ref_store_apply_parked_email(cm_db_t *db, const char *user_id);

/* ---- account deletion (issue 15) ---------------------------------------------- */

/**
 * Anonymises user_id after its account was deleted at deleted_at (RFC
 * 3339), in the caller's transaction: records the tombstone (first time
 * only: *first says whether it was new), deletes the member row (username,
 * address, code: the code stops resolving), the clicks on its link (client
 * hashes) and a parked verification. Referrals, rewards and counters stay.
 */
CM_MUST_CHECK int ref_store_forget_member(cm_db_t *db, const char *user_id, const char *deleted_at,
                                          bool *first);

/** Returns 0 when user_id's account was deleted, CM_ENOTFOUND when not, or a CM_E* code. */
CM_MUST_CHECK int ref_store_deleted(cm_db_t *db, const char *user_id);

/* ---- the monthly leaderboard (migration 006) ----------------------------------------- */

/** Most rows a leaderboard read returns. */
#define REF_BOARD_MAX 100

/** One ranked referrer; a plain value (no pointers). */
typedef struct ref_board_row {
    char user_id[37];
    char username[64];    /* "" when the member is not known here yet */
    bool show;            /* the member opted in to showing their username */
    long long successful; /* successful referrals this month */
} ref_board_row_t;

/**
 * Reads the top referrers of the calendar month starting at month_start
 * ("YYYY-MM-01", UTC) by successful referrals, at most limit (1 to
 * REF_BOARD_MAX) into out, best first; ties go to the earlier member, then
 * the smaller user id, so the order is the same on every read. Referrers
 * with no success this month are left out. Cost: the month's rows of
 * referral_daily with a conversion (never a request's: the leaderboard
 * cache calls it on a timer). Returns 0 with *n set, or a CM_E* code.
 */
CM_MUST_CHECK int ref_store_leaderboard(cm_db_t *db, const char *month_start, int limit,
                                        ref_board_row_t *out, int *n);

/**
 * Stores user_id's leaderboard opt-in (insert or update). Returns 0,
 * CM_EAUTH when user_id's account was deleted (nothing stored), or a CM_E* code.
 */
CM_MUST_CHECK int ref_store_set_optin(cm_db_t *db, const char *user_id, bool show);

#endif

/*
 * store.h — every SQL statement of the auth service (schema auth, see
 * migrations/). Each function takes the pool, checks a connection out for
 * as short as it can, and returns 0 or a CM_E* code: CM_ENOTFOUND when the
 * row is not there, CM_EUNAVAIL / CM_EBUSY when the database cannot be
 * reached or is saturated (the caller answers 503), CM_EDB otherwise.
 *
 * Events are built here, because they must be written to the outbox in the
 * same transaction as the change they describe; the outbox NOTIFY channel
 * is AUTH_OUTBOX_CHANNEL. Tokens are only ever passed in hashed (SHA-256
 * hex) or already sealed for the mailer.
 */
#ifndef AUTH_STORE_H
#define AUTH_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <sodium.h>

#include "cm/db.h"
#include "cm/error.h"
#include "cm/events.h"
#include "code.h"
#include "validate.h"

#define AUTH_OUTBOX_CHANNEL "auth_outbox"
/** Verify tokens live 48 hours, reset tokens 30 minutes (DESIGN.md). */
#define AUTH_VERIFY_TTL_S (48 * 3600)
#define AUTH_RESET_TTL_S (30 * 60)
/** At most this many reset mails per account per hour. */
#define AUTH_RESETS_PER_HOUR 3
/** Failed logins of one (account, client address) pair before it is slowed down. */
#define AUTH_THROTTLE_FREE_FAILURES 5
/** Longest delay of one pair: 2^(failures - 5) s up to this. */
#define AUTH_THROTTLE_PAIR_MAX_S 900
/** Failed logins of one account, from every address, before the account ceiling applies. */
#define AUTH_THROTTLE_ACCOUNT_FREE 20
/** Longest delay of the account ceiling: short, so the owner is never locked out for long. */
#define AUTH_THROTTLE_ACCOUNT_MAX_S 30

/** A user row as the API shows it. The caller owns the struct. */
typedef struct auth_user {
    char id[37];
    char username[AUTH_USERNAME_MAX + 1];
    char email[AUTH_EMAIL_MAX + 1];
    char password_hash[crypto_pwhash_STRBYTES];
    char referral_code[AUTH_CODE_LEN + 1];
    char referred_by[AUTH_CODE_LEN + 1]; /* the referrer's code, or "" */
    bool email_verified;
    int64_t created_us;
    int64_t session_epoch; /* bumped by every password reset */
} auth_user_t;

/** What a registration writes. Every pointer is borrowed. */
typedef struct auth_new_user {
    const char *username;
    const char *email;
    const char *password_hash;
    const char *referral_code; /* normalized referrer's code, or NULL */
    const char *ip;            /* validated IP address text, or NULL */
    const char *verify_hash;   /* SHA-256 hex of the verify token */
    const char *verify_sealed; /* the verify token sealed for the mailer */
    const char *request_id;    /* the request's id: user.registered's correlation_id, or NULL */
} auth_new_user_t;

/** Fetches a user by id (canonical UUID text). */
CM_MUST_CHECK int auth_store_user_by_id(cm_db_pool_t *pool, const char *id, auth_user_t *out);

/**
 * Fetches a user by username or email, ignoring case: text with an '@' is
 * an email (a username cannot hold one), anything else a username.
 */
CM_MUST_CHECK int auth_store_user_by_login(cm_db_pool_t *pool, const char *ident, auth_user_t *out);

/** Sets *username_taken / *email_taken (ignoring case). A hint only: the unique indexes decide. */
CM_MUST_CHECK int auth_store_taken(cm_db_pool_t *pool, const char *username, const char *email,
                                   bool *username_taken, bool *email_taken);

/**
 * Registers a user in one transaction: resolves the referrer's code,
 * inserts the user with a fresh referral code (retried on collision), the
 * verify token and the user.registered outbox row. Returns 0 and fills
 * *out; CM_ECONFLICT with *field "username" or "email" when taken (also
 * when a concurrent registration won the race); CM_ENOTFOUND with *field
 * "referral_code" when the code does not exist.
 */
CM_MUST_CHECK int auth_store_register(cm_db_pool_t *pool, const auth_new_user_t *in,
                                      auth_user_t *out, const char **field);

/**
 * Rehash on login: replaces user_id's password hash old_hash by new_hash,
 * compare-and-set, so it never overwrites a hash a reset wrote meanwhile.
 * Returns 0, or CM_ECONFLICT when the hash is no longer old_hash.
 */
CM_MUST_CHECK int auth_store_set_password_hash(cm_db_pool_t *pool, const char *user_id,
                                               const char *old_hash, const char *new_hash);

/* ---- login throttling (in the database so replicas share it) ----------------- */
/*
 * account is "user:<id>" for an existing account, else "name:<ident>" (ASCII
 * case is ignored); ip is the client address or "". Both only ever reach
 * the table as HMAC-SHA256 under secret (AUTH_THROTTLE_SECRET_LEN bytes,
 * derived from the signing key, so a dictionary of names or emails cannot
 * undo them): rows "pair:<hex>" (progressive, per account and address, up
 * to AUTH_THROTTLE_PAIR_MAX_S) and "acct:<hex>" (a ceiling over every
 * address, up to AUTH_THROTTLE_ACCOUNT_MAX_S).
 */
#define AUTH_THROTTLE_SECRET_LEN 32
/** Room for a throttle key: the longest prefix ("reset:"), 64 hex digits and the NUL. */
#define AUTH_THROTTLE_KEY_MAX 72

/**
 * Writes prefix + hex(HMAC-SHA256(secret, prefix NUL lower(a) NUL b)) to
 * out; b may be NULL. Exposed for tests.
 */
void auth_throttle_key(const uint8_t *secret, const char *prefix, const char *a, const char *b,
                       char out[AUTH_THROTTLE_KEY_MAX]);

/**
 * Sets *retry_after_s to the seconds left while the pair or the account is
 * locked, else 0, and *pair_failures (pair_failures may be NULL) to whether
 * the pair has failures on record: a login that succeeds only needs
 * auth_store_throttle_pass() then, and most logins save that statement.
 */
CM_MUST_CHECK int auth_store_throttle_check(cm_db_pool_t *pool, const uint8_t *secret,
                                            const char *account, const char *ip,
                                            int64_t *retry_after_s, bool *pair_failures);

/**
 * Counts one failure for the pair and the account. From the
 * AUTH_THROTTLE_FREE_FAILURES-th failure the pair is locked for
 * 2^(failures - 5) s; from the AUTH_THROTTLE_ACCOUNT_FREE-th the account for
 * 2^(failures - 20) s, capped as above. Counts restart after an hour
 * without failures.
 */
CM_MUST_CHECK int auth_store_throttle_fail(cm_db_pool_t *pool, const uint8_t *secret,
                                           const char *account, const char *ip);

/** Forgets the pair's failures (after a successful login); the account's stay. */
CM_MUST_CHECK int auth_store_throttle_pass(cm_db_pool_t *pool, const uint8_t *secret,
                                           const char *account, const char *ip);

/* ---- refresh tokens --------------------------------------------------------- */
/*
 * Every statement that reads or writes a user's refresh tokens runs after
 * locking the user row. Logins, logouts, ended sessions, password changes,
 * resets and deletions take FOR NO KEY UPDATE or FOR UPDATE (a reset's
 * UPDATE takes the former) and are serial, each seeing what the one before
 * it committed. Rotations take only FOR SHARE (auth migration 008): they run
 * side by side with each other, serialise per token on the token's row, and
 * still wait for, and are waited for by, every revocation of the user.
 */

/**
 * Stores a new refresh token (hash) opening a new family for user_id, only
 * if the user's session_epoch is still epoch (the one whose password hash
 * the caller verified). Returns CM_ESTATE when a reset came in between.
 * Logins use auth_store_session_open (below), which also writes the
 * session's row; a family opened here has none and is not listed.
 */
CM_MUST_CHECK int auth_store_refresh_issue(cm_db_pool_t *pool, const char *user_id, int64_t epoch,
                                           const char *hash, int ttl_days);

/** What happened to a presented refresh token. */
typedef enum auth_refresh_outcome {
    AUTH_REFRESH_ROTATED = 0, /* the token was current: child stored, old one rotated */
    AUTH_REFRESH_GRACE,       /* already rotated to this child within the grace window */
    AUTH_REFRESH_INVALID,     /* unknown, expired, or its family revoked */
    AUTH_REFRESH_REUSED,      /* an old token presented again: the family is now revoked */
} auth_refresh_outcome_t;

/**
 * Rotates the token whose hash is hash to child_hash (the caller derives
 * the child deterministically from the presented token, so a retry within
 * the grace window yields the same child). On ROTATED and GRACE, *user is
 * the token's owner. Returns 0 with *outcome set, or a CM_E* code.
 * One round trip: refresh_rotate() (auth migrations 004 and 008) share-locks
 * the owner's row, then rotates the token or judges the replay (revoking
 * the family on reuse) in one statement that is its own transaction.
 */
CM_MUST_CHECK int auth_store_refresh_rotate(cm_db_pool_t *pool, const char *hash,
                                            const char *child_hash, int grace_s, int ttl_days,
                                            auth_refresh_outcome_t *outcome, auth_user_t *user);

/**
 * Revokes the family of the (unexpired) token hash, under the user lock.
 * CM_ENOTFOUND when there is none.
 */
CM_MUST_CHECK int auth_store_logout(cm_db_pool_t *pool, const char *hash);

/* ---- one-time tokens ---------------------------------------------------------------- */

/* Every function below that writes an event takes request_id, the id of the
 * request that caused it (borrowed; NULL for none): the event's
 * correlation_id, so the request can be followed through the consumers. */

/**
 * The first step of a password-reset request, one statement and its own
 * transaction for every address. The "reset:<HMAC of the address under
 * secret>" row of login_throttle counts the address's requests, known
 * address or not: the first AUTH_RESETS_PER_HOUR of a window write it (so
 * a known and an unknown address commit with the same flush) and read the
 * account's budget, setting *budget when it has fewer than
 * AUTH_RESETS_PER_HOUR reset tokens in the last hour; the request that
 * reaches the count closes the address for an hour, and until then a
 * request only reads the row (no write, no flush, no account lookup). An
 * unknown address and a spent budget cost the same: this, nothing more; so
 * do an unknown and a known address past their count.
 */
CM_MUST_CHECK int auth_store_reset_probe(cm_db_pool_t *pool, const uint8_t *secret,
                                         const char *email, bool *budget);

/**
 * The second step, after a probe found budget: under the account's lock,
 * re-counts, stores the reset token hash and writes reset.requested with
 * the sealed token. *issued says whether it did (an account that vanished
 * or spent its budget meanwhile is not an error).
 */
CM_MUST_CHECK int auth_store_reset_issue(cm_db_pool_t *pool, const char *email, const char *hash,
                                         const char *sealed, const char *request_id, bool *issued);

/** Both steps: the probe, then the issue when there is budget. */
CM_MUST_CHECK int auth_store_reset_request(cm_db_pool_t *pool, const uint8_t *secret,
                                           const char *email, const char *hash, const char *sealed,
                                           const char *request_id, bool *issued);

/** Finds the owner of an unused, unexpired token of kind ("verify"/"reset"). */
CM_MUST_CHECK int auth_store_token_owner(cm_db_pool_t *pool, const char *kind, const char *hash,
                                         auth_user_t *out);

/**
 * In one transaction: uses the reset token (CM_ENOTFOUND when it is
 * unknown, used or expired), sets the new password hash and bumps
 * session_epoch (locking the user row), revokes every refresh family of
 * the user, clears the account's login throttle and writes
 * password.changed.
 */
CM_MUST_CHECK int auth_store_reset_apply(cm_db_pool_t *pool, const uint8_t *secret,
                                         const char *hash, const char *password_hash,
                                         const char *request_id);

/**
 * In one transaction: uses the verify token (CM_ENOTFOUND when unknown,
 * used or expired), marks the email verified and writes user.verified (only
 * the first time). Fills *out with the user as it now is.
 */
CM_MUST_CHECK int auth_store_verify_email(cm_db_pool_t *pool, const char *hash,
                                          const char *request_id, auth_user_t *out);

/** Event type of a re-sent verification mail (proposed; not yet in proto/events). */
#define AUTH_EV_VERIFY_REQUESTED "verify.requested"
/** At most this many verification mails per account per hour (the first included). */
#define AUTH_VERIFIES_PER_HOUR 3

/**
 * Re-issues a verify token for user_id in one transaction: earlier unused
 * verify tokens stop working, the new hash is stored and verify.requested
 * {user_id, email, username, verify_token_sealed, expires_at} is written.
 * Returns CM_ESTATE when the email is already verified, CM_ENOTFOUND for no
 * such user; *issued is false (and nothing changes) when the hourly cap
 * was reached.
 */
CM_MUST_CHECK int auth_store_verify_reissue(cm_db_pool_t *pool, const char *user_id,
                                            const char *hash, const char *sealed,
                                            const char *request_id, bool *issued);

/* ---- email change (issue 15) ---------------------------------------------------------- */
/*
 * A request stores a pending change (email_changes, migration 006; one per
 * account, a new request supersedes the old) and writes two events: the
 * confirmation link for the new address and the notice with the cancel
 * link for the old one, each token sealed for the mailer. The address in
 * users changes only when the confirm token is used.
 */

/** At most this many email-change requests per account per hour (each sends two mails). */
#define AUTH_EMAIL_CHANGES_PER_HOUR 5

/** What an email-change request writes. Every pointer is borrowed. */
typedef struct auth_email_change {
    const char *user_id;
    const char *new_email;      /* validated (auth_validate_email) */
    const char *confirm_hash;   /* SHA-256 hex of the confirm token */
    const char *confirm_sealed; /* the confirm token sealed for the mailer */
    const char *cancel_hash;    /* SHA-256 hex of the cancel token */
    const char *cancel_sealed;  /* the cancel token sealed for the mailer */
    int ttl_s;                  /* how long both links work */
    const char *request_id;     /* correlation id of the events, or NULL */
} auth_email_change_t;

/**
 * In one transaction, under the user's row lock: supersedes the account's
 * pending change, stores the new one and writes email.change.requested
 * and email.change.notice. Returns 0; CM_ECONFLICT when an account already
 * has new_email (ignoring case); CM_ENOTFOUND for no such user. *limited is
 * true (and nothing changes) when the account made AUTH_EMAIL_CHANGES_PER_HOUR
 * requests in the last hour.
 */
CM_MUST_CHECK int auth_store_email_change_request(cm_db_pool_t *pool, const auth_email_change_t *in,
                                                  bool *limited);

/** What a confirm or cancel token found. */
typedef enum auth_email_outcome {
    AUTH_EMAIL_DONE = 0,   /* confirmed (the address changed) or cancelled, as asked */
    AUTH_EMAIL_UNKNOWN,    /* no change has this token */
    AUTH_EMAIL_CONFIRMED,  /* the change was confirmed already */
    AUTH_EMAIL_CANCELLED,  /* the change was cancelled already */
    AUTH_EMAIL_SUPERSEDED, /* a newer request of the account replaced it */
    AUTH_EMAIL_EXPIRED,    /* still pending, but past its expiry */
    AUTH_EMAIL_TAKEN,      /* confirm only: another account has the address now */
} auth_email_outcome_t;

/**
 * Uses a confirm token (hash): in one transaction, under the user's row
 * lock, re-checks that no other account has the new address, sets it as
 * the user's email, verified, marks the change confirmed, retires the
 * user's unused verify and reset tokens (they went to the old address) and
 * writes user.email.changed (and user.verified when the account was not
 * verified yet). *outcome says what happened; new_email gets the address
 * of the change whenever one was found. Returns 0 or a CM_E* code.
 */
CM_MUST_CHECK int auth_store_email_confirm(cm_db_pool_t *pool, const char *hash,
                                           const char *request_id, auth_email_outcome_t *outcome,
                                           char new_email[AUTH_EMAIL_MAX + 1]);

/**
 * Uses a cancel token (hash): a pending, unexpired change becomes
 * cancelled, so its confirm link stops working. *outcome says what
 * happened. Returns 0 or a CM_E* code.
 */
CM_MUST_CHECK int auth_store_email_cancel(cm_db_pool_t *pool, const char *hash,
                                          auth_email_outcome_t *outcome);
/* ---- sessions, password change, new sign-in notice (issue 15) -------------------- */
/*
 * A session is a refresh-token family (auth migration 005: table sessions),
 * live while the family holds an unrevoked, unexpired token. Ending one
 * revokes its tokens under the user lock, so its refresh token is refused
 * (refresh_rotate() outcome 0) by the next refresh. Its id is the family
 * id, which access tokens carry as the "sid" claim.
 */

/** Event type of a sign-in from a new (user agent class, network) pair. */
#define AUTH_EV_NEW_SIGNIN CM_EV_SIGNIN_NEW
/** A (class, network) pair not seen for this many days is new. */
#define AUTH_SIGNIN_SEEN_DAYS 90
/** At most one new sign-in notice per account in this many seconds. */
#define AUTH_SIGNIN_NOTICE_GAP_S 3600
/** GET /api/sessions/ lists at most this many sessions, most recently used first. */
#define AUTH_SESSIONS_LIST_MAX 100
/** Room for a session's user agent class (the column allows 64 characters). */
#define AUTH_SESSION_UA_MAX 65

/** What a login writes when it opens a session. Every pointer is borrowed. */
typedef struct auth_session_new {
    const char *user_id;
    int64_t epoch;          /* the session_epoch whose password hash the caller verified */
    const char *hash;       /* SHA-256 hex of the first refresh token */
    int ttl_days;           /* refresh token lifetime */
    const char *user_agent; /* the class (signin.h), never the raw header */
    const char *ip;         /* the client address, or NULL */
    const char *network;    /* its network key (signin.h) */
    const char *request_id; /* correlation id of signin.new, or NULL */
} auth_session_new_t;

/**
 * Opens a session in one transaction under the user lock: stores the first
 * refresh token of a new family (only while the session_epoch is still
 * in->epoch, else CM_ESTATE, as auth_store_refresh_issue), its sessions row
 * and the sign-in history, and writes signin.new when the (class,
 * network) pair was not seen for AUTH_SIGNIN_SEEN_DAYS, the account has
 * signed in before, and no notice went out in the last
 * AUTH_SIGNIN_NOTICE_GAP_S. Fills family (the session id) and *noticed.
 */
CM_MUST_CHECK int auth_store_session_open(cm_db_pool_t *pool, const auth_session_new_t *in,
                                          char family[37], bool *noticed);

/**
 * auth_store_refresh_rotate, and also the session (family) id of the
 * token into family (37 bytes; "" when the token is unknown). family may
 * be NULL.
 */
CM_MUST_CHECK int auth_store_refresh_rotate_sid(cm_db_pool_t *pool, const char *hash,
                                                const char *child_hash, int grace_s, int ttl_days,
                                                auth_refresh_outcome_t *outcome, auth_user_t *user,
                                                char *family);

/** One live session as GET /api/sessions/ shows it. */
typedef struct auth_session {
    char id[37];
    int64_t created_us;
    int64_t last_used_us;
    char user_agent[AUTH_SESSION_UA_MAX];
    char ip[46]; /* "" when unknown */
} auth_session_t;

/**
 * The live sessions of user_id, most recently used first, at most
 * AUTH_SESSIONS_LIST_MAX. *out is a new array of *n entries the caller
 * free()s (NULL when there are none).
 */
CM_MUST_CHECK int auth_store_sessions_list(cm_db_pool_t *pool, const char *user_id,
                                           auth_session_t **out, size_t *n);

/**
 * Ends session family_id of user_id under the user lock (revokes its
 * tokens). CM_ENOTFOUND when it is not a live session of that user
 * (another account's, unknown, or already ended); family_id must be a
 * canonical UUID.
 */
CM_MUST_CHECK int auth_store_session_end(cm_db_pool_t *pool, const char *user_id,
                                         const char *family_id);

/**
 * Ends every session of user_id except keep_family (NULL: every one),
 * under the user lock. *ended (may be NULL) receives how many sessions
 * ended.
 */
CM_MUST_CHECK int auth_store_sessions_end_others(cm_db_pool_t *pool, const char *user_id,
                                                 const char *keep_family, int64_t *ended);

/** A signed-in password change. Every pointer is borrowed. */
typedef struct auth_password_change {
    const char *user_id;
    const char *old_hash;    /* the hash the current password was verified against */
    const char *new_hash;    /* argon2id of the new password */
    bool end_others;         /* end every session but keep_family */
    const char *keep_family; /* the caller's session, or NULL */
    const char *request_id;  /* password.changed's correlation id, or NULL */
} auth_password_change_t;

/**
 * In one transaction: replaces the password hash (compare-and-set against
 * old_hash: CM_ECONFLICT when a reset or another change came first) and
 * bumps session_epoch, so a login that verified the old password opens no
 * session; spends the account's unused reset links; ends the other
 * sessions when asked; writes password.changed.
 */
CM_MUST_CHECK int auth_store_password_change(cm_db_pool_t *pool, const auth_password_change_t *in);

/* ---- account deletion and export (issue 15) ------------------------------------------ */

/**
 * Deletes user_id for good, in one transaction: locks the user row (so a
 * login, refresh or reset in flight finishes first or finds no user),
 * detaches the users it referred (their referred_by becomes NULL: the code
 * no longer exists), deletes every refresh token, verify/reset token and
 * login-throttle row of the account, the user row and the account's
 * already-relayed outbox rows (their payloads hold the address), and writes
 * user.deleted {user_id, deleted_at} with request_id (may be NULL) as its
 * correlation id. Returns 0, or CM_ENOTFOUND when the user no longer exists.
 */
CM_MUST_CHECK int auth_store_delete_user(cm_db_pool_t *pool, const uint8_t *secret,
                                         const char *user_id, const char *request_id);

/**
 * The sessions of user_id for the export: one JSON object per refresh
 * family (id, created_at, last_used_at, expires_at, active, and its
 * sessions row's user_agent and ip, null when it has none), oldest
 * first. Returns 0 and a new array in *out (the caller json_decref()s it).
 */
CM_MUST_CHECK int auth_store_sessions_export(cm_db_pool_t *pool, const char *user_id, json_t **out);

/* ---- why a one-time token was refused (issue 14: the pages say which) ----------------- */

/** What a refused one-time token is; the API's problem "code". */
typedef enum auth_token_state {
    AUTH_TOKEN_INVALID = 0, /* no such token of that kind (never issued, or swept) */
    AUTH_TOKEN_USED,        /* spent (or retired by a newer reset) */
    AUTH_TOKEN_EXPIRED,     /* unused but past expires_at */
} auth_token_state_t;

/**
 * After a token of kind was refused: tells why, by its hash (the caller
 * holds the token, so nothing is revealed to someone who does not).
 * Returns 0 with *state set (AUTH_TOKEN_INVALID also for a token that
 * turns out usable: a race the caller already lost), or a CM_E* code.
 */
CM_MUST_CHECK int auth_store_token_state(cm_db_pool_t *pool, const char *kind, const char *hash,
                                         auth_token_state_t *state);

#endif

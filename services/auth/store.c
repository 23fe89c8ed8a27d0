/* All SQL of the auth service (see store.h). */
#include "store.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <jansson.h>

#include "cm/events.h"
#include "cm/outbox.h"
#include "cm/log.h"
#include "cm/util.h"

/* How many fresh referral codes a registration tries before giving up. */
#define CODE_ATTEMPTS 8

#define USER_SELECT                                                                                \
    "SELECT u.id, u.username, u.email, u.password_hash, u.referral_code, "                         \
    "coalesce(r.referral_code, ''), u.email_verified_at IS NOT NULL, "                             \
    "(extract(epoch FROM u.created_at) * 1000000)::bigint, u.session_epoch "                       \
    "FROM users u LEFT JOIN users r ON r.id = u.referred_by "

/* Runs one prepared statement on a connection of its own. */
static int run(cm_db_pool_t *pool, const char *name, const char *sql, int n,
               const char *const *params, PGresult **res)
{
    cm_db_t *db = NULL;
    int rc = cm_db_acquire(pool, &db);
    if (rc != 0)
        return rc;
    rc = cm_db_prepared(db, name, sql, n, params, res);
    cm_db_release(db);
    return rc;
}

/* Copies a text column into a fixed buffer; a value that does not fit is a schema bug. */
static int copy_col(const PGresult *r, int row, int col, char *dst, size_t cap)
{
    int len = PQgetlength(r, row, col);
    if (len < 0 || (size_t)len >= cap)
        return CM_EDB;
    memcpy(dst, PQgetvalue(r, row, col), (size_t)len);
    dst[len] = '\0';
    return 0;
}

static int col_int(const PGresult *r, int row, int col, int64_t *out)
{
    long long v = 0;
    if (cm_strtonum(PQgetvalue(r, row, col), INT64_MIN, INT64_MAX, &v) != 0)
        return CM_EDB;
    *out = (int64_t)v;
    return 0;
}

/* Fills *u from the USER_SELECT columns of a row, starting at column base. */
static int parse_user_at(const PGresult *r, int row, int base, auth_user_t *u)
{
    memset(u, 0, sizeof *u);
    if (PQnfields(r) < base + 9 || copy_col(r, row, base, u->id, sizeof u->id) != 0 ||
        copy_col(r, row, base + 1, u->username, sizeof u->username) != 0 ||
        copy_col(r, row, base + 2, u->email, sizeof u->email) != 0 ||
        copy_col(r, row, base + 3, u->password_hash, sizeof u->password_hash) != 0 ||
        copy_col(r, row, base + 4, u->referral_code, sizeof u->referral_code) != 0 ||
        copy_col(r, row, base + 5, u->referred_by, sizeof u->referred_by) != 0 ||
        col_int(r, row, base + 7, &u->created_us) != 0 ||
        col_int(r, row, base + 8, &u->session_epoch) != 0)
        return CM_EDB;
    u->email_verified = PQgetvalue(r, row, base + 6)[0] == 't';
    return 0;
}

static int parse_user(const PGresult *r, int row, auth_user_t *u)
{
    return parse_user_at(r, row, 0, u);
}

/* Runs a USER_SELECT statement and parses its single row. */
static int fetch_user(cm_db_t *db, cm_db_pool_t *pool, const char *name, const char *sql, int n,
                      const char *const *params, auth_user_t *out)
{
    PGresult *r = NULL;
    int rc =
        db ? cm_db_prepared(db, name, sql, n, params, &r) : run(pool, name, sql, n, params, &r);
    if (rc != 0)
        return rc;
    rc = PQntuples(r) == 1 ? parse_user(r, 0, out) : CM_ENOTFOUND;
    PQclear(r);
    return rc;
}

int auth_store_user_by_id(cm_db_pool_t *pool, const char *id, auth_user_t *out)
{
    const char *p[1] = {id};
    return fetch_user(NULL, pool, "auth_user_by_id", USER_SELECT "WHERE u.id = $1::uuid", 1, p,
                      out);
}

int auth_store_user_by_login(cm_db_pool_t *pool, const char *ident, auth_user_t *out)
{
    const char *p[1] = {ident};
    if (strchr(ident, '@'))
        return fetch_user(NULL, pool, "auth_user_by_email",
                          USER_SELECT "WHERE lower(u.email) = lower($1)", 1, p, out);
    return fetch_user(NULL, pool, "auth_user_by_username",
                      USER_SELECT "WHERE lower(u.username) = lower($1)", 1, p, out);
}

int auth_store_taken(cm_db_pool_t *pool, const char *username, const char *email,
                     bool *username_taken, bool *email_taken)
{
    static const char sql[] =
        "SELECT EXISTS (SELECT 1 FROM users WHERE lower(username) = lower($1)), "
        "EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($2))";
    const char *p[2] = {username, email};
    PGresult *r = NULL;
    int rc = run(pool, "auth_taken", sql, 2, p, &r);
    if (rc != 0)
        return rc;
    *username_taken = PQgetvalue(r, 0, 0)[0] == 't';
    *email_taken = PQgetvalue(r, 0, 1)[0] == 't';
    PQclear(r);
    return 0;
}

/* Builds the envelope (data stolen), with the request's id as its correlation id when
 * given, and writes it to the outbox keyed by user_id. */
static int emit_correlated(cm_db_t *db, const char *type, const char *user_id,
                           const char *request_id, json_t *data)
{
    json_t *env = cm_event_new(type, "auth", data);
    if (!env)
        return CM_EINVAL;
    /* An id cm_http accepted is always valid; anything else is left out, never fatal. */
    if (cm_event_set_correlation(env, request_id) != 0)
        CM_WARN(NULL, "auth: request id not usable as a correlation id");
    int rc = cm_outbox_add(db, AUTH_OUTBOX_CHANNEL, user_id, env);
    json_decref(env);
    return rc;
}

/* ---- registration ------------------------------------------------------------ */

typedef struct reg_ctx {
    const auth_new_user_t *in;
    auth_user_t *out;
    const char *field;
    char referrer_id[37];
} reg_ctx_t;

static int find_referrer(cm_db_t *db, reg_ctx_t *c)
{
    c->referrer_id[0] = '\0';
    if (!c->in->referral_code)
        return 0;
    const char *p[1] = {c->in->referral_code};
    PGresult *r = NULL;
    int rc = cm_db_prepared(db, "auth_referrer", "SELECT id FROM users WHERE referral_code = $1", 1,
                            p, &r);
    if (rc != 0)
        return rc;
    if (PQntuples(r) != 1) {
        c->field = "referral_code";
        rc = CM_ENOTFOUND;
    } else {
        rc = copy_col(r, 0, 0, c->referrer_id, sizeof c->referrer_id);
    }
    PQclear(r);
    return rc;
}

/* Maps a unique violation of users to the field it is about. */
static const char *conflict_field(const cm_db_t *db)
{
    const char *name = cm_db_constraint(db);
    if (strstr(name, "username"))
        return "username";
    if (strstr(name, "email"))
        return "email";
    return NULL;
}

/* Inserts the user with a new code; a code collision (no row back) retries. */
static int insert_user(cm_db_t *db, reg_ctx_t *c)
{
    static const char sql[] =
        "INSERT INTO users (username, email, password_hash, referral_code, referred_by, "
        "registration_ip) VALUES ($1, $2, $3, $4, $5::uuid, $6::inet) "
        "ON CONFLICT (referral_code) DO NOTHING "
        "RETURNING id, (extract(epoch FROM created_at) * 1000000)::bigint";
    const auth_new_user_t *in = c->in;
    for (int attempt = 0; attempt < CODE_ATTEMPTS; attempt++) {
        auth_code_new(c->out->referral_code);
        const char *p[6] = {in->username,
                            in->email,
                            in->password_hash,
                            c->out->referral_code,
                            c->referrer_id[0] ? c->referrer_id : NULL,
                            in->ip};
        PGresult *r = NULL;
        int rc = cm_db_prepared(db, "auth_insert_user", sql, 6, p, &r);
        if (rc == CM_ECONFLICT)
            c->field = conflict_field(db);
        if (rc != 0)
            return rc;
        if (PQntuples(r) == 1) {
            rc = copy_col(r, 0, 0, c->out->id, sizeof c->out->id);
            if (rc == 0)
                rc = col_int(r, 0, 1, &c->out->created_us);
            PQclear(r);
            return rc;
        }
        PQclear(r);
    }
    return CM_ECONFLICT; /* eight collisions in a row: the code space is full */
}

static int insert_token(cm_db_t *db, const char *hash, const char *kind, const char *user_id,
                        int ttl_s, int64_t *expires_us)
{
    static const char sql[] = "INSERT INTO one_time_tokens (token_hash, kind, user_id, expires_at) "
                              "VALUES ($1, $2, $3::uuid, now() + make_interval(secs => $4::int)) "
                              "RETURNING (extract(epoch FROM expires_at) * 1000000)::bigint";
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", ttl_s);
    const char *p[4] = {hash, kind, user_id, ttl};
    PGresult *r = NULL;
    int rc = cm_db_prepared(db, "auth_insert_token", sql, 4, p, &r);
    if (rc != 0)
        return rc;
    rc = (PQntuples(r) == 1 && expires_us) ? col_int(r, 0, 0, expires_us) : 0;
    PQclear(r);
    return rc;
}

static int emit_registered(cm_db_t *db, const reg_ctx_t *c)
{
    const auth_user_t *u = c->out;
    char at[32];
    cm_format_time(u->created_us, at);
    json_t *ref = c->referrer_id[0] ? json_pack("{s:s, s:s}", "user_id", c->referrer_id,
                                                "referral_code", c->in->referral_code)
                                    : json_null();
    json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s?, s:s, s:s}", "user_id", u->id,
                             "username", u->username, "email", u->email, "referral_code",
                             u->referral_code, "referred_by", ref, "ip", c->in->ip,
                             "verify_token_sealed", c->in->verify_sealed, "registered_at", at);
    if (!json_object_get(data, "ip"))
        json_object_set_new(data, "ip", json_null());
    return emit_correlated(db, CM_EV_USER_REGISTERED, u->id, c->in->request_id, data);
}

static int register_tx(cm_db_t *db, void *vctx)
{
    reg_ctx_t *c = vctx;
    c->field = NULL;
    int rc = find_referrer(db, c);
    if (rc == 0)
        rc = insert_user(db, c);
    if (rc == 0)
        rc = insert_token(db, c->in->verify_hash, "verify", c->out->id, AUTH_VERIFY_TTL_S, NULL);
    if (rc == 0)
        rc = emit_registered(db, c);
    return rc;
}

int auth_store_register(cm_db_pool_t *pool, const auth_new_user_t *in, auth_user_t *out,
                        const char **field)
{
    memset(out, 0, sizeof *out);
    reg_ctx_t c = {.in = in, .out = out};
    snprintf(out->username, sizeof out->username, "%s", in->username);
    snprintf(out->email, sizeof out->email, "%s", in->email);
    int rc = cm_db_tx(pool, register_tx, &c);
    *field = c.field;
    if (rc != 0)
        return rc;
    snprintf(out->referred_by, sizeof out->referred_by, "%s",
             c.referrer_id[0] ? in->referral_code : "");
    return 0;
}

int auth_store_set_password_hash(cm_db_pool_t *pool, const char *user_id, const char *old_hash,
                                 const char *new_hash)
{
    const char *p[3] = {user_id, old_hash, new_hash};
    PGresult *r = NULL;
    int rc = run(pool, "auth_set_hash",
                 "UPDATE users SET password_hash = $3 WHERE id = $1::uuid AND password_hash = $2 "
                 "RETURNING 1",
                 3, p, &r);
    if (rc != 0)
        return rc;
    rc = PQntuples(r) == 1 ? 0 : CM_ECONFLICT;
    PQclear(r);
    return rc;
}

/* ---- login throttling ------------------------------------------------------------ */

static void hmac_lower(crypto_auth_hmacsha256_state *st, const char *s)
{
    unsigned char chunk[64];
    size_t n = 0;
    for (; *s; s++) {
        char c = *s;
        chunk[n++] = (unsigned char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
        if (n == sizeof chunk) {
            crypto_auth_hmacsha256_update(st, chunk, n);
            n = 0;
        }
    }
    crypto_auth_hmacsha256_update(st, chunk, n);
}

void auth_throttle_key(const uint8_t *secret, const char *prefix, const char *a, const char *b,
                       char out[AUTH_THROTTLE_KEY_MAX])
{
    static const unsigned char nul = 0;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    size_t plen = strlen(prefix);
    assert(plen + 2 * sizeof mac < AUTH_THROTTLE_KEY_MAX);
    crypto_auth_hmacsha256_init(&st, secret, AUTH_THROTTLE_SECRET_LEN);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)prefix, plen);
    crypto_auth_hmacsha256_update(&st, &nul, 1);
    hmac_lower(&st, a);
    crypto_auth_hmacsha256_update(&st, &nul, 1);
    if (b)
        crypto_auth_hmacsha256_update(&st, (const unsigned char *)b, strlen(b));
    crypto_auth_hmacsha256_final(&st, mac);
    memcpy(out, prefix, plen + 1); /* the hex digits follow from out + plen */
    sodium_bin2hex(out + plen, AUTH_THROTTLE_KEY_MAX - plen, mac, sizeof mac);
    sodium_memzero(&st, sizeof st);
}

/* The account's key and the (account, address) pair's key. */
static void pair_keys(const uint8_t *secret, const char *account, const char *ip,
                      char acct[AUTH_THROTTLE_KEY_MAX], char pair[AUTH_THROTTLE_KEY_MAX])
{
    auth_throttle_key(secret, "acct:", account, NULL, acct);
    auth_throttle_key(secret, "pair:", account, ip ? ip : "", pair);
}

int auth_store_throttle_check(cm_db_pool_t *pool, const uint8_t *secret, const char *account,
                              const char *ip, int64_t *retry_after_s, bool *pair_failures)
{
    static const char sql[] =
        "SELECT coalesce(max(ceil(extract(epoch FROM locked_until - now()))) "
        "FILTER (WHERE locked_until > now()), 0)::bigint, "
        "count(*) FILTER (WHERE key = $2) > 0 FROM login_throttle WHERE key IN ($1, $2)";
    char acct[AUTH_THROTTLE_KEY_MAX], pair[AUTH_THROTTLE_KEY_MAX];
    pair_keys(secret, account, ip, acct, pair);
    const char *p[2] = {acct, pair};
    PGresult *r = NULL;
    *retry_after_s = 0;
    if (pair_failures)
        *pair_failures = false;
    int rc = run(pool, "auth_throttle_check", sql, 2, p, &r);
    if (rc != 0)
        return rc;
    if (PQntuples(r) == 1 && col_int(r, 0, 0, retry_after_s) == 0 && *retry_after_s < 0)
        *retry_after_s = 0;
    if (pair_failures && PQntuples(r) == 1)
        *pair_failures = PQgetvalue(r, 0, 1)[0] == 't';
    PQclear(r);
    return 0;
}

/* N is the failure count after this one; an hour without failures starts over. */
#define N "(CASE WHEN t.updated_at < now() - interval '1 hour' THEN 1 ELSE t.failures + 1 END)"
/* Locked from the free-th failure for 2^(N - free) s, at most max s. */
#define LOCK(free, max)                                                                            \
    "CASE WHEN " N " >= " free "::int THEN now() + make_interval(secs => "                         \
    "least(" max "::int, power(2, least(" N " - " free "::int, 20)))) END"

int auth_store_throttle_fail(cm_db_pool_t *pool, const uint8_t *secret, const char *account,
                             const char *ip)
{
    /* One statement for both rows, always in this order (acct, then pair): no deadlock
     * between two failures. The pair row names its account so a reset can clear it. */
    static const char sql[] =
        "INSERT INTO login_throttle AS t (key, account, failures) VALUES ($1, NULL, 1), "
        "($2, $1, 1) ON CONFLICT (key) DO UPDATE SET failures = " N ", updated_at = now(), "
        "locked_until = CASE WHEN t.account IS NULL THEN " LOCK("$5", "$6") " ELSE " LOCK(
            "$3", "$4") " END";
    char pf[16], pm[16], af[16], am[16];
    snprintf(pf, sizeof pf, "%d", AUTH_THROTTLE_FREE_FAILURES);
    snprintf(pm, sizeof pm, "%d", AUTH_THROTTLE_PAIR_MAX_S);
    snprintf(af, sizeof af, "%d", AUTH_THROTTLE_ACCOUNT_FREE);
    snprintf(am, sizeof am, "%d", AUTH_THROTTLE_ACCOUNT_MAX_S);
    char acct[AUTH_THROTTLE_KEY_MAX], pair[AUTH_THROTTLE_KEY_MAX];
    pair_keys(secret, account, ip, acct, pair);
    const char *p[6] = {acct, pair, pf, pm, af, am};
    return run(pool, "auth_throttle_fail", sql, 6, p, NULL);
}

#undef LOCK
#undef N

int auth_store_throttle_pass(cm_db_pool_t *pool, const uint8_t *secret, const char *account,
                             const char *ip)
{
    char acct[AUTH_THROTTLE_KEY_MAX], pair[AUTH_THROTTLE_KEY_MAX];
    pair_keys(secret, account, ip, acct, pair);
    const char *p[1] = {pair};
    return run(pool, "auth_throttle_pass", "DELETE FROM login_throttle WHERE key = $1", 1, p, NULL);
}

/* ---- refresh tokens ------------------------------------------------------------------ */

int auth_store_refresh_issue(cm_db_pool_t *pool, const char *user_id, int64_t epoch,
                             const char *hash, int ttl_days)
{
    /* The lock waits for a reset in flight; its re-check then sees the new epoch. */
    static const char sql[] =
        "WITH u AS (SELECT id FROM users WHERE id = $2::uuid AND session_epoch = $4::bigint "
        "FOR NO KEY UPDATE) "
        "INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at) "
        "SELECT $1, u.id, gen_random_uuid(), now() + make_interval(days => $3::int) FROM u "
        "RETURNING 1";
    char days[16], ep[24];
    snprintf(days, sizeof days, "%d", ttl_days);
    snprintf(ep, sizeof ep, "%lld", (long long)epoch);
    const char *p[4] = {hash, user_id, days, ep};
    PGresult *r = NULL;
    int rc = run(pool, "auth_refresh_issue", sql, 4, p, &r);
    if (rc != 0)
        return rc;
    rc = PQntuples(r) == 1 ? 0 : CM_ESTATE;
    PQclear(r);
    return rc;
}

/*
 * One statement, one round trip, its own transaction: refresh_rotate()
 * (migrations 004, 008) share-locks the owner's row and reads the owner,
 * then rotates or judges the token, revoking its family on a replay outside
 * the grace window.
 */
int auth_store_refresh_rotate(cm_db_pool_t *pool, const char *hash, const char *child_hash,
                              int grace_s, int ttl_days, auth_refresh_outcome_t *outcome,
                              auth_user_t *user)
{
    return auth_store_refresh_rotate_sid(pool, hash, child_hash, grace_s, ttl_days, outcome, user,
                                         NULL);
}

int auth_store_refresh_rotate_sid(cm_db_pool_t *pool, const char *hash, const char *child_hash,
                                  int grace_s, int ttl_days, auth_refresh_outcome_t *outcome,
                                  auth_user_t *user, char *family_out)
{
    static const char sql[] = "SELECT outcome, family_id, id, username, email, password_hash, "
                              "referral_code, referrer_code, verified, created_us, session_epoch "
                              "FROM refresh_rotate($1, $2, $3::int, $4::int)";
    char days[16], grace[16], family[37] = "";
    snprintf(days, sizeof days, "%d", ttl_days);
    snprintf(grace, sizeof grace, "%d", grace_s);
    const char *p[4] = {hash, child_hash, days, grace};
    PGresult *r = NULL;
    *outcome = AUTH_REFRESH_INVALID;
    memset(user, 0, sizeof *user);
    if (family_out)
        family_out[0] = '\0';
    int rc = run(pool, "auth_refresh_rotate", sql, 4, p, &r);
    if (rc != 0)
        return rc;
    int64_t code = 0;
    if (PQntuples(r) != 1 || PQgetvalue(r, 0, 0)[0] == '0')
        goto out; /* no such token, expired, or revoked without a successor */
    if ((rc = col_int(r, 0, 0, &code)) != 0 || (rc = copy_col(r, 0, 1, family, sizeof family)) != 0)
        goto out;
    /* Columns 2-10 are those of USER_SELECT. */
    rc = parse_user_at(r, 0, 2, user);
    if (rc != 0)
        goto out;
    if (code == 1)
        *outcome = AUTH_REFRESH_ROTATED;
    else if (code == 2)
        *outcome = AUTH_REFRESH_GRACE;
    else if (code == 3) {
        *outcome = AUTH_REFRESH_REUSED;
        CM_WARN(NULL, "security: refresh token reuse for user %s; family %s revoked", user->id,
                family);
    } else
        rc = CM_EDB;
    if (rc == 0 && family_out)
        memcpy(family_out, family, sizeof family);
out:
    PQclear(r);
    sodium_memzero(user->password_hash, sizeof user->password_hash);
    return rc;
}

typedef struct logout_ctx {
    const char *hash;
    bool found;
} logout_ctx_t;

static int logout_tx(cm_db_t *db, void *vctx)
{
    static const char lock[] = "SELECT 1 FROM users WHERE id = (SELECT user_id FROM refresh_tokens "
                               "WHERE token_hash = $1 AND expires_at > now()) FOR NO KEY UPDATE";
    static const char sql[] =
        "UPDATE refresh_tokens t SET revoked_at = now() FROM refresh_tokens f "
        "WHERE f.token_hash = $1 AND t.family_id = f.family_id AND t.revoked_at IS NULL "
        "RETURNING 1";
    logout_ctx_t *c = vctx;
    const char *p[1] = {c->hash};
    PGresult *r = NULL;
    c->found = false;
    int rc = cm_db_prepared(db, "auth_logout_lock", lock, 1, p, &r);
    if (rc != 0)
        return rc;
    bool owner = PQntuples(r) == 1;
    PQclear(r);
    if (!owner)
        return 0;
    rc = cm_db_prepared(db, "auth_logout", sql, 1, p, &r);
    if (rc != 0)
        return rc;
    c->found = PQntuples(r) > 0;
    PQclear(r);
    return 0;
}

int auth_store_logout(cm_db_pool_t *pool, const char *hash)
{
    logout_ctx_t c = {.hash = hash};
    int rc = cm_db_tx(pool, logout_tx, &c);
    if (rc != 0)
        return rc;
    return c.found ? 0 : CM_ENOTFOUND;
}

/* ---- one-time tokens ---------------------------------------------------------------- */

typedef struct reset_req_ctx {
    const char *email, *hash, *sealed, *request_id;
    bool issued;
} reset_req_ctx_t;

/* The issuing path, under the account's lock: re-counts, stores the token, writes the event. */
static int reset_request_tx(cm_db_t *db, void *vctx)
{
    static const char sql[] =
        "SELECT id, username, email, (SELECT count(*) FROM one_time_tokens t WHERE "
        "t.user_id = u.id AND t.kind = 'reset' AND t.created_at > now() - interval '1 hour') "
        "FROM users u WHERE lower(email) = lower($1) FOR UPDATE";
    reset_req_ctx_t *c = vctx;
    const char *p[1] = {c->email};
    PGresult *r = NULL;
    c->issued = false;
    int rc = cm_db_prepared(db, "auth_reset_user", sql, 1, p, &r);
    if (rc != 0)
        return rc;
    int64_t recent = 0, expires_us = 0;
    if (PQntuples(r) != 1 || col_int(r, 0, 3, &recent) != 0 || recent >= AUTH_RESETS_PER_HOUR)
        goto out;
    const char *uid = PQgetvalue(r, 0, 0);
    rc = insert_token(db, c->hash, "reset", uid, AUTH_RESET_TTL_S, &expires_us);
    if (rc != 0)
        goto out;
    char at[32];
    cm_format_time(expires_us, at);
    rc = emit_correlated(db, CM_EV_RESET_REQUESTED, uid, c->request_id,
                         json_pack("{s:s, s:s, s:s, s:s, s:s}", "user_id", uid, "email",
                                   PQgetvalue(r, 0, 2), "username", PQgetvalue(r, 0, 1),
                                   "reset_token_sealed", c->sealed, "expires_at", at));
    c->issued = rc == 0;
out:
    PQclear(r);
    return rc;
}

/* A forgot-password mark's count after this request: 1 when its window has ended. */
#define RESET_COUNT                                                                                \
    "CASE WHEN t.locked_until <= now() OR t.updated_at < now() - interval '1 hour' THEN 1 "        \
    "ELSE t.failures + 1 END"

int auth_store_reset_probe(cm_db_pool_t *pool, const uint8_t *secret, const char *email,
                           bool *budget)
{
    /*
     * The mark: failures counts the window's requests; the one that reaches
     * $3 sets locked_until an hour ahead, and while that is in the future
     * the INSERT selects no row (nothing is written) and, m being empty, the
     * account is not looked up. A window ends when its lock has passed or
     * after an hour without requests. A lock set by a concurrent request
     * (seen once the row lock is granted) is kept.
     */
    /* A new row counts 1 and is never closed at once. */
    _Static_assert(AUTH_RESETS_PER_HOUR > 1, "the first request of a window does not close it");
    static const char probe[] =
        "WITH m AS (INSERT INTO login_throttle AS t (key, failures) SELECT $1, 1 "
        "WHERE NOT EXISTS (SELECT 1 FROM login_throttle l WHERE l.key = $1 "
        "AND l.locked_until > now()) "
        "ON CONFLICT (key) DO UPDATE SET "
        "failures = " RESET_COUNT ", "
        "locked_until = CASE WHEN t.locked_until > now() THEN t.locked_until "
        "WHEN " RESET_COUNT " >= $3::int THEN now() + interval '1 hour' END, "
        "updated_at = now() RETURNING 1) "
        "SELECT (SELECT count(*) FROM one_time_tokens t "
        "WHERE t.user_id = u.id AND t.kind = 'reset' AND t.created_at > now() - interval '1 hour') "
        "FROM users u WHERE EXISTS (SELECT 1 FROM m) AND lower(u.email) = lower($2)";
    char mark[AUTH_THROTTLE_KEY_MAX], limit[8];
    *budget = false;
    auth_throttle_key(secret, "reset:", email, NULL, mark);
    snprintf(limit, sizeof limit, "%d", AUTH_RESETS_PER_HOUR);
    const char *p[3] = {mark, email, limit};
    PGresult *r = NULL;
    int rc = run(pool, "auth_reset_probe", probe, 3, p, &r);
    if (rc != 0)
        return rc;
    int64_t recent = AUTH_RESETS_PER_HOUR;
    *budget = PQntuples(r) == 1 && col_int(r, 0, 0, &recent) == 0 && recent < AUTH_RESETS_PER_HOUR;
    PQclear(r);
    return 0;
}

int auth_store_reset_issue(cm_db_pool_t *pool, const char *email, const char *hash,
                           const char *sealed, const char *request_id, bool *issued)
{
    reset_req_ctx_t c = {.email = email, .hash = hash, .sealed = sealed, .request_id = request_id};
    int rc = cm_db_tx(pool, reset_request_tx, &c);
    *issued = rc == 0 && c.issued;
    return rc;
}

int auth_store_reset_request(cm_db_pool_t *pool, const uint8_t *secret, const char *email,
                             const char *hash, const char *sealed, const char *request_id,
                             bool *issued)
{
    bool budget = false;
    *issued = false;
    int rc = auth_store_reset_probe(pool, secret, email, &budget);
    if (rc != 0 || !budget)
        return rc;
    return auth_store_reset_issue(pool, email, hash, sealed, request_id, issued);
}

int auth_store_token_owner(cm_db_pool_t *pool, const char *kind, const char *hash, auth_user_t *out)
{
    const char *p[2] = {hash, kind};
    return fetch_user(NULL, pool, "auth_token_owner",
                      USER_SELECT "JOIN one_time_tokens t ON t.user_id = u.id "
                                  "WHERE t.token_hash = $1 AND t.kind = $2 "
                                  "AND t.used_at IS NULL AND t.expires_at > now()",
                      2, p, out);
}

/* Marks an unused, unexpired token of kind used; *user_id gets its owner. */
static int use_token(cm_db_t *db, const char *hash, const char *kind, char user_id[37])
{
    static const char sql[] =
        "UPDATE one_time_tokens SET used_at = now() WHERE token_hash = $1 AND kind = $2 "
        "AND used_at IS NULL AND expires_at > now() RETURNING user_id";
    const char *p[2] = {hash, kind};
    PGresult *r = NULL;
    int rc = cm_db_prepared(db, "auth_use_token", sql, 2, p, &r);
    if (rc != 0)
        return rc;
    rc = PQntuples(r) == 1 ? copy_col(r, 0, 0, user_id, 37) : CM_ENOTFOUND;
    PQclear(r);
    return rc;
}

typedef struct reset_apply_ctx {
    const char *hash, *password_hash, *request_id;
    const uint8_t *secret;
} reset_apply_ctx_t;

static int revoke_user_sessions(cm_db_t *db, const char *uid, const uint8_t *secret)
{
    const char *p[1] = {uid};
    char account[48], acct[AUTH_THROTTLE_KEY_MAX];
    snprintf(account, sizeof account, "user:%s", uid);
    auth_throttle_key(secret, "acct:", account, NULL, acct);
    const char *pa[1] = {acct};
    int rc = cm_db_prepared(db, "auth_revoke_user",
                            "UPDATE refresh_tokens SET revoked_at = now() "
                            "WHERE user_id = $1::uuid AND revoked_at IS NULL",
                            1, p, NULL);
    if (rc == 0) /* other reset links die with the one used */
        rc = cm_db_prepared(db, "auth_use_resets",
                            "UPDATE one_time_tokens SET used_at = now() WHERE user_id = $1::uuid "
                            "AND kind = 'reset' AND used_at IS NULL",
                            1, p, NULL);
    if (rc == 0) /* the owner who just proved control logs in at once */
        rc = cm_db_prepared(db, "auth_clear_throttle",
                            "DELETE FROM login_throttle WHERE key = $1 OR account = $1", 1, pa,
                            NULL);
    return rc;
}

static int reset_apply_tx(cm_db_t *db, void *vctx)
{
    reset_apply_ctx_t *c = vctx;
    char uid[37];
    int rc = use_token(db, c->hash, "reset", uid);
    if (rc != 0)
        return rc;
    const char *p[2] = {uid, c->password_hash};
    PGresult *r = NULL;
    rc = cm_db_prepared(db, "auth_reset_password",
                        "UPDATE users SET password_hash = $2, session_epoch = session_epoch + 1 "
                        "WHERE id = $1::uuid RETURNING email, "
                        "(extract(epoch FROM now()) * 1000000)::bigint",
                        2, p, &r);
    if (rc != 0)
        return rc;
    int64_t now_us = 0;
    rc = PQntuples(r) == 1 ? col_int(r, 0, 1, &now_us) : CM_ENOTFOUND;
    if (rc == 0)
        rc = revoke_user_sessions(db, uid, c->secret);
    if (rc == 0) {
        char at[32];
        cm_format_time(now_us, at);
        rc = emit_correlated(db, CM_EV_PASSWORD_CHANGED, uid, c->request_id,
                             json_pack("{s:s, s:s, s:s}", "user_id", uid, "email",
                                       PQgetvalue(r, 0, 0), "changed_at", at));
    }
    PQclear(r);
    return rc;
}

int auth_store_reset_apply(cm_db_pool_t *pool, const uint8_t *secret, const char *hash,
                           const char *password_hash, const char *request_id)
{
    reset_apply_ctx_t c = {
        .hash = hash, .password_hash = password_hash, .request_id = request_id, .secret = secret};
    return cm_db_tx(pool, reset_apply_tx, &c);
}

typedef struct verify_ctx {
    const char *hash, *request_id;
    auth_user_t *out;
} verify_ctx_t;

static int verify_tx(cm_db_t *db, void *vctx)
{
    verify_ctx_t *c = vctx;
    char uid[37];
    int rc = use_token(db, c->hash, "verify", uid);
    if (rc != 0)
        return rc;
    const char *p[1] = {uid};
    PGresult *r = NULL;
    rc = cm_db_prepared(db, "auth_mark_verified",
                        "UPDATE users SET email_verified_at = now() WHERE id = $1::uuid "
                        "AND email_verified_at IS NULL "
                        "RETURNING (extract(epoch FROM email_verified_at) * 1000000)::bigint",
                        1, p, &r);
    if (rc != 0)
        return rc;
    int64_t at_us = 0;
    if (PQntuples(r) == 1 && (rc = col_int(r, 0, 0, &at_us)) == 0) {
        char at[32];
        cm_format_time(at_us, at);
        rc = emit_correlated(db, CM_EV_USER_VERIFIED, uid, c->request_id,
                             json_pack("{s:s, s:s}", "user_id", uid, "verified_at", at));
    }
    PQclear(r);
    if (rc == 0)
        rc = fetch_user(db, NULL, "auth_user_by_id", USER_SELECT "WHERE u.id = $1::uuid", 1, p,
                        c->out);
    return rc;
}

int auth_store_verify_email(cm_db_pool_t *pool, const char *hash, const char *request_id,
                            auth_user_t *out)
{
    verify_ctx_t c = {.hash = hash, .request_id = request_id, .out = out};
    return cm_db_tx(pool, verify_tx, &c);
}

typedef struct reissue_ctx {
    const char *user_id, *hash, *sealed, *request_id;
    bool issued;
} reissue_ctx_t;

static int emit_verify_requested(cm_db_t *db, const reissue_ctx_t *c, const PGresult *u)
{
    int64_t expires_us = 0;
    const char *p[1] = {c->user_id};
    int rc = cm_db_prepared(db, "auth_retire_verify",
                            "UPDATE one_time_tokens SET used_at = now() WHERE user_id = $1::uuid "
                            "AND kind = 'verify' AND used_at IS NULL",
                            1, p, NULL);
    if (rc == 0)
        rc = insert_token(db, c->hash, "verify", c->user_id, AUTH_VERIFY_TTL_S, &expires_us);
    if (rc != 0)
        return rc;
    char at[32];
    cm_format_time(expires_us, at);
    return emit_correlated(db, AUTH_EV_VERIFY_REQUESTED, c->user_id, c->request_id,
                           json_pack("{s:s, s:s, s:s, s:s, s:s}", "user_id", c->user_id, "email",
                                     PQgetvalue(u, 0, 1), "username", PQgetvalue(u, 0, 0),
                                     "verify_token_sealed", c->sealed, "expires_at", at));
}

static int reissue_tx(cm_db_t *db, void *vctx)
{
    static const char sql[] =
        "SELECT username, email, email_verified_at IS NOT NULL, (SELECT count(*) FROM "
        "one_time_tokens t WHERE t.user_id = u.id AND t.kind = 'verify' AND t.created_at > "
        "now() - interval '1 hour') FROM users u WHERE id = $1::uuid FOR UPDATE";
    reissue_ctx_t *c = vctx;
    const char *p[1] = {c->user_id};
    PGresult *r = NULL;
    c->issued = false;
    int rc = cm_db_prepared(db, "auth_reissue_user", sql, 1, p, &r);
    if (rc != 0)
        return rc;
    int64_t recent = 0;
    if (PQntuples(r) != 1)
        rc = CM_ENOTFOUND;
    else if (PQgetvalue(r, 0, 2)[0] == 't')
        rc = CM_ESTATE;
    else if ((rc = col_int(r, 0, 3, &recent)) == 0 && recent < AUTH_VERIFIES_PER_HOUR) {
        rc = emit_verify_requested(db, c, r);
        c->issued = rc == 0;
    }
    PQclear(r);
    return rc;
}

/* ---- why a one-time token was refused (issue 14) ---------------------------------------- */

int auth_store_token_state(cm_db_pool_t *pool, const char *kind, const char *hash,
                           auth_token_state_t *state)
{
    static const char sql[] = "SELECT CASE WHEN used_at IS NOT NULL THEN 'used' "
                              "WHEN expires_at <= now() THEN 'expired' ELSE 'usable' END "
                              "FROM one_time_tokens WHERE token_hash = $1 AND kind = $2";
    const char *p[2] = {hash, kind};
    PGresult *r = NULL;
    *state = AUTH_TOKEN_INVALID;
    int rc = run(pool, "auth_token_state", sql, 2, p, &r);
    if (rc != 0)
        return rc;
    if (PQntuples(r) == 1) {
        const char *v = PQgetvalue(r, 0, 0);
        if (strcmp(v, "used") == 0)
            *state = AUTH_TOKEN_USED;
        else if (strcmp(v, "expired") == 0)
            *state = AUTH_TOKEN_EXPIRED;
    }
    PQclear(r);
    return 0;
}

int auth_store_verify_reissue(cm_db_pool_t *pool, const char *user_id, const char *hash,
                              const char *sealed, const char *request_id, bool *issued)
{
    reissue_ctx_t c = {
        .user_id = user_id, .hash = hash, .sealed = sealed, .request_id = request_id};
    int rc = cm_db_tx(pool, reissue_tx, &c);
    *issued = rc == 0 && c.issued;
    return rc;
}

/* ---- email change (issue 15) ----------------------------------------------------------- */

typedef struct email_req_ctx {
    const auth_email_change_t *in;
    bool limited;
} email_req_ctx_t;

/* The two mails' events: the confirm link to the new address, the cancel link to the old. */
static int emit_email_change(cm_db_t *db, const auth_email_change_t *in, const char *username,
                             const char *old_email, const char *expires)
{
    int rc = emit_correlated(db, CM_EV_EMAIL_CHANGE_REQUESTED, in->user_id, in->request_id,
                             json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "user_id", in->user_id,
                                       "username", username, "email", in->new_email, "old_email",
                                       old_email, "confirm_token_sealed", in->confirm_sealed,
                                       "expires_at", expires));
    if (rc == 0)
        rc = emit_correlated(db, CM_EV_EMAIL_CHANGE_NOTICE, in->user_id, in->request_id,
                             json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "user_id", in->user_id,
                                       "username", username, "email", old_email, "new_email",
                                       in->new_email, "cancel_token_sealed", in->cancel_sealed,
                                       "expires_at", expires));
    return rc;
}

/* Supersedes the pending change, forgets long-finished ones, stores the new one. */
static int store_email_change(cm_db_t *db, const auth_email_change_t *in, const char *old_email,
                              int64_t *expires_us)
{
    const char *p[1] = {in->user_id};
    int rc = cm_db_prepared(db, "auth_email_supersede",
                            "UPDATE email_changes SET state = 'superseded', finished_at = now() "
                            "WHERE user_id = $1::uuid AND state = 'pending'",
                            1, p, NULL);
    if (rc == 0) /* retention, a bounded batch per request (migration 006) */
        rc = cm_db_prepared(db, "auth_email_prune",
                            "DELETE FROM email_changes WHERE id IN (SELECT id FROM email_changes "
                            "WHERE coalesce(finished_at, expires_at) < now() - interval '30 days' "
                            "LIMIT 100 FOR UPDATE SKIP LOCKED)",
                            0, NULL, NULL);
    if (rc != 0)
        return rc;
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", in->ttl_s);
    const char *pi[6] = {in->user_id,      in->new_email,   old_email,
                         in->confirm_hash, in->cancel_hash, ttl};
    PGresult *r = NULL;
    rc = cm_db_prepared(db, "auth_email_insert",
                        "INSERT INTO email_changes (user_id, new_email, old_email, confirm_hash, "
                        "cancel_hash, expires_at) VALUES ($1::uuid, $2, $3, $4, $5, "
                        "now() + make_interval(secs => $6::int)) "
                        "RETURNING (extract(epoch FROM expires_at) * 1000000)::bigint",
                        6, pi, &r);
    if (rc != 0)
        return rc;
    rc = PQntuples(r) == 1 ? col_int(r, 0, 0, expires_us) : CM_EDB;
    PQclear(r);
    return rc;
}

static int email_request_tx(cm_db_t *db, void *vctx)
{
    static const char lock[] =
        "SELECT username, email, (SELECT count(*) FROM email_changes c WHERE c.user_id = u.id "
        "AND c.created_at > now() - interval '1 hour'), EXISTS (SELECT 1 FROM users o "
        "WHERE lower(o.email) = lower($2)) FROM users u WHERE id = $1::uuid FOR NO KEY UPDATE";
    email_req_ctx_t *c = vctx;
    const auth_email_change_t *in = c->in;
    const char *p[2] = {in->user_id, in->new_email};
    PGresult *r = NULL;
    c->limited = false;
    int rc = cm_db_prepared(db, "auth_email_request_lock", lock, 2, p, &r);
    if (rc != 0)
        return rc;
    int64_t recent = 0, expires_us = 0;
    if (PQntuples(r) != 1)
        rc = CM_ENOTFOUND;
    else if ((rc = col_int(r, 0, 2, &recent)) != 0)
        ;
    else if (recent >= AUTH_EMAIL_CHANGES_PER_HOUR)
        c->limited = true;
    else if (PQgetvalue(r, 0, 3)[0] == 't')
        rc = CM_ECONFLICT;
    else if ((rc = store_email_change(db, in, PQgetvalue(r, 0, 1), &expires_us)) == 0) {
        char at[32];
        cm_format_time(expires_us, at);
        rc = emit_email_change(db, in, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), at);
    }
    PQclear(r);
    return rc;
}

int auth_store_email_change_request(cm_db_pool_t *pool, const auth_email_change_t *in,
                                    bool *limited)
{
    email_req_ctx_t c = {.in = in};
    int rc = cm_db_tx(pool, email_request_tx, &c);
    *limited = rc == 0 && c.limited;
    return rc;
}

/* A change found by one of its tokens, with its owner locked. */
typedef struct email_use_ctx {
    const char *hash, *request_id;
    bool confirm; /* the confirm token, else the cancel token */
    auth_email_outcome_t outcome;
    char id[37], user_id[37], username[AUTH_USERNAME_MAX + 1];
    char old_email[AUTH_EMAIL_MAX + 1], new_email[AUTH_EMAIL_MAX + 1];
    bool was_unverified;
} email_use_ctx_t;

static auth_email_outcome_t classify_change(const char *state, bool live)
{
    if (strcmp(state, "confirmed") == 0)
        return AUTH_EMAIL_CONFIRMED;
    if (strcmp(state, "cancelled") == 0)
        return AUTH_EMAIL_CANCELLED;
    if (strcmp(state, "superseded") == 0)
        return AUTH_EMAIL_SUPERSEDED;
    return live ? AUTH_EMAIL_DONE : AUTH_EMAIL_EXPIRED;
}

/* Locks the owner's row (first, like every user change), then the change; fills c. The
 * "old" address is the account's as it is now, which the change is about to replace. */
static int find_change(cm_db_t *db, email_use_ctx_t *c)
{
#define CHANGE_BY(col)                                                                             \
    "WITH ch AS (SELECT user_id FROM email_changes WHERE " col " = $1) "                           \
    "SELECT 1 FROM users WHERE id = (SELECT user_id FROM ch) FOR UPDATE"
#define CHANGE_ROW(col)                                                                            \
    "SELECT c.id, c.user_id, u.email, c.new_email, c.state, c.expires_at > now(), "                \
    "u.username, u.email_verified_at IS NULL FROM email_changes c JOIN users u ON "                \
    "u.id = c.user_id WHERE c." col " = $1 FOR UPDATE OF c"
    const char *p[1] = {c->hash};
    PGresult *r = NULL;
    int rc = c->confirm
                 ? cm_db_prepared(db, "auth_email_lock_c", CHANGE_BY("confirm_hash"), 1, p, NULL)
                 : cm_db_prepared(db, "auth_email_lock_x", CHANGE_BY("cancel_hash"), 1, p, NULL);
    if (rc == 0)
        rc = c->confirm
                 ? cm_db_prepared(db, "auth_email_row_c", CHANGE_ROW("confirm_hash"), 1, p, &r)
                 : cm_db_prepared(db, "auth_email_row_x", CHANGE_ROW("cancel_hash"), 1, p, &r);
#undef CHANGE_BY
#undef CHANGE_ROW
    if (rc != 0)
        return rc;
    c->outcome = AUTH_EMAIL_UNKNOWN;
    if (PQntuples(r) == 1) {
        if (copy_col(r, 0, 0, c->id, sizeof c->id) != 0 ||
            copy_col(r, 0, 1, c->user_id, sizeof c->user_id) != 0 ||
            copy_col(r, 0, 2, c->old_email, sizeof c->old_email) != 0 ||
            copy_col(r, 0, 3, c->new_email, sizeof c->new_email) != 0 ||
            copy_col(r, 0, 6, c->username, sizeof c->username) != 0)
            rc = CM_EDB;
        else
            c->outcome = classify_change(PQgetvalue(r, 0, 4), PQgetvalue(r, 0, 5)[0] == 't');
        c->was_unverified = PQgetvalue(r, 0, 7)[0] == 't';
    }
    PQclear(r);
    return rc;
}

static int finish_change(cm_db_t *db, const char *id, const char *state)
{
    const char *p[2] = {id, state};
    return cm_db_prepared(db, "auth_email_finish",
                          "UPDATE email_changes SET state = $2, finished_at = now() "
                          "WHERE id = $1::uuid",
                          2, p, NULL);
}

/* The new address becomes the user's, verified; what went to the old address stops working. */
static int apply_change(cm_db_t *db, email_use_ctx_t *c)
{
    const char *p[2] = {c->user_id, c->new_email};
    PGresult *r = NULL;
    int rc = cm_db_prepared(db, "auth_email_set",
                            "UPDATE users SET email = $2, email_verified_at = now() "
                            "WHERE id = $1::uuid "
                            "RETURNING (extract(epoch FROM now()) * 1000000)::bigint",
                            2, p, &r);
    if (rc != 0)
        return rc; /* CM_ECONFLICT: the unique index saw a registration the check missed */
    int64_t now_us = 0;
    rc = PQntuples(r) == 1 ? col_int(r, 0, 0, &now_us) : CM_ENOTFOUND;
    PQclear(r);
    if (rc == 0)
        rc = finish_change(db, c->id, "confirmed");
    if (rc == 0)
        rc = cm_db_prepared(db, "auth_email_retire_tokens",
                            "UPDATE one_time_tokens SET used_at = now() WHERE user_id = $1::uuid "
                            "AND used_at IS NULL",
                            1, p, NULL);
    char at[32];
    cm_format_time(now_us, at);
    if (rc == 0)
        rc = emit_correlated(db, CM_EV_USER_EMAIL_CHANGED, c->user_id, c->request_id,
                             json_pack("{s:s, s:s, s:s, s:s, s:s}", "user_id", c->user_id,
                                       "username", c->username, "old_email", c->old_email,
                                       "new_email", c->new_email, "changed_at", at));
    if (rc == 0 && c->was_unverified) /* proving the new address verifies the account */
        rc = emit_correlated(db, CM_EV_USER_VERIFIED, c->user_id, c->request_id,
                             json_pack("{s:s, s:s}", "user_id", c->user_id, "verified_at", at));
    return rc;
}

static int email_use_tx(cm_db_t *db, void *vctx)
{
    static const char taken[] = "SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = "
                                "lower($1) AND id <> $2::uuid)";
    email_use_ctx_t *c = vctx;
    int rc = find_change(db, c);
    if (rc != 0 || c->outcome != AUTH_EMAIL_DONE)
        return rc;
    if (!c->confirm)
        return finish_change(db, c->id, "cancelled");
    const char *p[2] = {c->new_email, c->user_id};
    PGresult *r = NULL;
    rc = cm_db_prepared(db, "auth_email_taken", taken, 2, p, &r);
    if (rc != 0)
        return rc;
    bool is_taken = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (is_taken) {
        c->outcome = AUTH_EMAIL_TAKEN; /* stays pending: nothing to write */
        return 0;
    }
    return apply_change(db, c);
}

int auth_store_email_confirm(cm_db_pool_t *pool, const char *hash, const char *request_id,
                             auth_email_outcome_t *outcome, char new_email[AUTH_EMAIL_MAX + 1])
{
    email_use_ctx_t c = {
        .hash = hash, .request_id = request_id, .confirm = true, .outcome = AUTH_EMAIL_UNKNOWN};
    int rc = cm_db_tx(pool, email_use_tx, &c);
    if (rc == CM_ECONFLICT) { /* a registration took the address between check and update */
        c.outcome = AUTH_EMAIL_TAKEN;
        rc = 0;
    }
    *outcome = c.outcome;
    snprintf(new_email, AUTH_EMAIL_MAX + 1, "%s", c.new_email);
    return rc;
}

int auth_store_email_cancel(cm_db_pool_t *pool, const char *hash, auth_email_outcome_t *outcome)
{
    email_use_ctx_t c = {.hash = hash, .confirm = false, .outcome = AUTH_EMAIL_UNKNOWN};
    int rc = cm_db_tx(pool, email_use_tx, &c);
    *outcome = c.outcome;
    return rc;
}
/* ---- sessions, password change, new sign-in notice (issue 15) -------------------- */

typedef struct session_open_ctx {
    const auth_session_new_t *in;
    char *family;
    bool noticed;
} session_open_ctx_t;

/* Columns of the session-open statement's row. */
enum { SO_FAMILY, SO_EMAIL, SO_FIRST, SO_MAY_NOTICE, SO_NOW_US, SO_FRESH };

/* Writes signin.new; r is the session-open statement's row (email, time of the sign-in). */
static int emit_new_signin(cm_db_t *db, const session_open_ctx_t *c, const PGresult *r)
{
    int64_t now_us = 0;
    int rc = col_int(r, 0, SO_NOW_US, &now_us);
    if (rc != 0)
        return rc;
    char at[32];
    cm_format_time(now_us, at);
    const auth_session_new_t *in = c->in;
    json_t *data =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "user_id", in->user_id, "email",
                  PQgetvalue(r, 0, SO_EMAIL), "session_id", c->family, "user_agent", in->user_agent,
                  "network", in->network, "ip", in->ip ? in->ip : "", "signed_in_at", at);
    if (data && !in->ip)
        json_object_set_new(data, "ip", json_null());
    return emit_correlated(db, AUTH_EV_NEW_SIGNIN, in->user_id, in->request_id, data);
}

static int session_open_tx(cm_db_t *db, void *vctx)
{
    /*
     * One statement, one round trip, for what every login writes: lock the
     * user's row while its session_epoch is still the one whose password was
     * verified (no row at all otherwise: a reset or password change came in
     * between), insert the first token of a new family and its sessions row,
     * and record the (class, network) pair, reading its previous sighting from
     * the statement's snapshot, before the upsert. It was four statements
     * (lock, token, session, pair), each a round trip; a round trip is cheap
     * here (~11 µs, pgbench), the writes are what a login costs PostgreSQL,
     * so this is fewer moving parts rather than less CPU (README, issue 16).
     * The CTE f is materialised once (volatile), so both rows carry the same
     * family id. A new sign-in notice (rare) adds the mark and the event in
     * the same transaction.
     */
    static const char open[] =
        "WITH u AS (SELECT id, email, first_signin_at IS NULL AS first, "
        "signin_notice_at IS NULL OR signin_notice_at <= now() - make_interval(secs => $8::int) "
        "AS may_notice FROM users WHERE id = $1::uuid AND session_epoch = $2::bigint "
        "FOR NO KEY UPDATE), "
        "f AS (SELECT u.id, gen_random_uuid() AS family FROM u), "
        "t AS (INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at) "
        "SELECT $3, f.id, f.family, now() + make_interval(days => $4::int) FROM f), "
        "s AS (INSERT INTO sessions (family_id, user_id, user_agent, ip) "
        "SELECT f.family, f.id, $5, $6::inet FROM f), "
        "prev AS (SELECT last_seen_at FROM signin_seen WHERE user_id = $1::uuid "
        "AND user_agent = $5 AND network = $7), "
        "up AS (INSERT INTO signin_seen AS g (user_id, user_agent, network) "
        "SELECT f.id, $5, $7 FROM f ON CONFLICT (user_id, user_agent, network) "
        "DO UPDATE SET last_seen_at = now()) "
        "SELECT f.family, u.email, u.first, u.may_notice, "
        "(extract(epoch FROM now()) * 1000000)::bigint, "
        "NOT coalesce((SELECT last_seen_at > now() - make_interval(days => $9::int) FROM prev), "
        "false) FROM u, f";
    static const char mark[] =
        "UPDATE users SET first_signin_at = coalesce(first_signin_at, now()), "
        "signin_notice_at = CASE WHEN $2::boolean THEN now() ELSE signin_notice_at END "
        "WHERE id = $1::uuid";
    session_open_ctx_t *c = vctx;
    const auth_session_new_t *in = c->in;
    char ep[24], days[16], gap[16], seen[16];
    snprintf(ep, sizeof ep, "%lld", (long long)in->epoch);
    snprintf(days, sizeof days, "%d", in->ttl_days);
    snprintf(gap, sizeof gap, "%d", AUTH_SIGNIN_NOTICE_GAP_S);
    snprintf(seen, sizeof seen, "%d", AUTH_SIGNIN_SEEN_DAYS);
    const char *p[9] = {in->user_id, ep,          in->hash, days, in->user_agent,
                        in->ip,      in->network, gap,      seen};
    PGresult *r = NULL;
    c->noticed = false;
    int rc = cm_db_prepared(db, "auth_session_open", open, 9, p, &r);
    if (rc != 0)
        return rc;
    if (PQntuples(r) != 1) { /* a password change or reset came in between */
        rc = CM_ESTATE;
        goto out;
    }
    rc = copy_col(r, 0, SO_FAMILY, c->family, 37);
    bool first = PQgetvalue(r, 0, SO_FIRST)[0] == 't';
    bool notice =
        PQgetvalue(r, 0, SO_FRESH)[0] == 't' && !first && PQgetvalue(r, 0, SO_MAY_NOTICE)[0] == 't';
    const char *pm[2] = {in->user_id, notice ? "true" : "false"};
    if (rc == 0 && (first || notice)) /* most logins leave the user row alone */
        rc = cm_db_prepared(db, "auth_signin_mark", mark, 2, pm, NULL);
    if (rc == 0 && notice)
        rc = emit_new_signin(db, c, r);
    c->noticed = rc == 0 && notice;
out:
    PQclear(r);
    return rc;
}

int auth_store_session_open(cm_db_pool_t *pool, const auth_session_new_t *in, char family[37],
                            bool *noticed)
{
    session_open_ctx_t c = {.in = in, .family = family};
    family[0] = '\0';
    int rc = cm_db_tx(pool, session_open_tx, &c);
    *noticed = rc == 0 && c.noticed;
    return rc;
}

int auth_store_sessions_list(cm_db_pool_t *pool, const char *user_id, auth_session_t **out,
                             size_t *n)
{
    static const char sql[] =
        "SELECT s.family_id, (extract(epoch FROM s.created_at) * 1000000)::bigint, "
        "(extract(epoch FROM s.last_used_at) * 1000000)::bigint, s.user_agent, "
        "coalesce(host(s.ip), '') FROM sessions s WHERE s.user_id = $1::uuid AND EXISTS "
        "(SELECT 1 FROM refresh_tokens r WHERE r.family_id = s.family_id "
        "AND r.revoked_at IS NULL AND r.expires_at > now()) "
        "ORDER BY s.last_used_at DESC, s.family_id LIMIT $2::int";
    char limit[16];
    snprintf(limit, sizeof limit, "%d", AUTH_SESSIONS_LIST_MAX);
    const char *p[2] = {user_id, limit};
    PGresult *r = NULL;
    *out = NULL;
    *n = 0;
    int rc = run(pool, "auth_sessions_list", sql, 2, p, &r);
    if (rc != 0)
        return rc;
    int rows = PQntuples(r);
    auth_session_t *s = rows > 0 ? cm_xcalloc((size_t)rows, sizeof *s) : NULL;
    for (int i = 0; rc == 0 && i < rows; i++)
        if (copy_col(r, i, 0, s[i].id, sizeof s[i].id) != 0 ||
            col_int(r, i, 1, &s[i].created_us) != 0 || col_int(r, i, 2, &s[i].last_used_us) != 0 ||
            copy_col(r, i, 3, s[i].user_agent, sizeof s[i].user_agent) != 0 ||
            copy_col(r, i, 4, s[i].ip, sizeof s[i].ip) != 0)
            rc = CM_EDB;
    PQclear(r);
    if (rc != 0) {
        free(s);
        return rc;
    }
    *out = s;
    *n = (size_t)rows;
    return 0;
}

typedef struct session_end_ctx {
    const char *user_id, *family; /* family: the one to end, or the one to keep */
    bool others;
    int64_t ended;
} session_end_ctx_t;

static int session_end_tx(cm_db_t *db, void *vctx)
{
    static const char lock[] = "SELECT 1 FROM users WHERE id = $1::uuid FOR NO KEY UPDATE";
    /* Counts the families that had a live token: an expired one was no session any more. */
    static const char one[] =
        "WITH e AS (UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1::uuid "
        "AND family_id = $2::uuid AND revoked_at IS NULL RETURNING family_id, expires_at) "
        "SELECT count(DISTINCT family_id) FILTER (WHERE expires_at > now()) FROM e";
    static const char others[] =
        "WITH e AS (UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1::uuid "
        "AND family_id IS DISTINCT FROM $2::uuid AND revoked_at IS NULL "
        "RETURNING family_id, expires_at) "
        "SELECT count(DISTINCT family_id) FILTER (WHERE expires_at > now()) FROM e";
    session_end_ctx_t *c = vctx;
    const char *p[2] = {c->user_id, c->family};
    PGresult *r = NULL;
    c->ended = 0;
    int rc = cm_db_prepared(db, "auth_session_end_lock", lock, 1, p, &r);
    if (rc != 0)
        return rc;
    bool exists = PQntuples(r) == 1;
    PQclear(r);
    if (!exists)
        return 0;
    rc = cm_db_prepared(db, c->others ? "auth_sessions_end_others" : "auth_session_end",
                        c->others ? others : one, 2, p, &r);
    if (rc != 0)
        return rc;
    rc = PQntuples(r) == 1 ? col_int(r, 0, 0, &c->ended) : CM_EDB;
    PQclear(r);
    return rc;
}

int auth_store_session_end(cm_db_pool_t *pool, const char *user_id, const char *family_id)
{
    session_end_ctx_t c = {.user_id = user_id, .family = family_id};
    int rc = cm_db_tx(pool, session_end_tx, &c);
    if (rc != 0)
        return rc;
    return c.ended > 0 ? 0 : CM_ENOTFOUND;
}

int auth_store_sessions_end_others(cm_db_pool_t *pool, const char *user_id, const char *keep_family,
                                   int64_t *ended)
{
    session_end_ctx_t c = {.user_id = user_id, .family = keep_family, .others = true};
    int rc = cm_db_tx(pool, session_end_tx, &c);
    if (ended)
        *ended = rc == 0 ? c.ended : 0;
    return rc;
}

static int password_change_tx(cm_db_t *db, void *vctx)
{
    const auth_password_change_t *in = vctx;
    const char *p[3] = {in->user_id, in->old_hash, in->new_hash};
    PGresult *r = NULL;
    int rc =
        cm_db_prepared(db, "auth_change_password",
                       "UPDATE users SET password_hash = $3, session_epoch = session_epoch + 1 "
                       "WHERE id = $1::uuid AND password_hash = $2 RETURNING email, "
                       "(extract(epoch FROM now()) * 1000000)::bigint",
                       3, p, &r);
    if (rc != 0)
        return rc;
    int64_t now_us = 0;
    rc = PQntuples(r) == 1 ? col_int(r, 0, 1, &now_us) : CM_ECONFLICT;
    if (rc == 0) /* a reset link mailed before the change must not undo it */
        rc = cm_db_prepared(db, "auth_use_resets",
                            "UPDATE one_time_tokens SET used_at = now() WHERE user_id = $1::uuid "
                            "AND kind = 'reset' AND used_at IS NULL",
                            1, p, NULL);
    const char *pk[2] = {in->user_id, in->keep_family};
    if (rc == 0 && in->end_others)
        rc = cm_db_prepared(db, "auth_change_end_others",
                            "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1::uuid "
                            "AND family_id IS DISTINCT FROM $2::uuid AND revoked_at IS NULL",
                            2, pk, NULL);
    if (rc == 0) {
        char at[32];
        cm_format_time(now_us, at);
        rc = emit_correlated(db, CM_EV_PASSWORD_CHANGED, in->user_id, in->request_id,
                             json_pack("{s:s, s:s, s:s}", "user_id", in->user_id, "email",
                                       PQgetvalue(r, 0, 0), "changed_at", at));
    }
    PQclear(r);
    return rc;
}

int auth_store_password_change(cm_db_pool_t *pool, const auth_password_change_t *in)
{
    return cm_db_tx(pool, password_change_tx, (void *)(uintptr_t)in);
}

/* ---- account deletion and export (issue 15) ------------------------------------------ */

typedef struct delete_ctx {
    const uint8_t *secret;
    const char *user_id, *request_id;
} delete_ctx_t;

/* Every statement that removes a part of the account, in the order the foreign keys allow. */
static int delete_account_rows(cm_db_t *db, const char *uid, const char *acct)
{
    static const struct {
        const char *name, *sql;
        bool by_acct;
    } steps[] = {
        {"auth_del_detach", "UPDATE users SET referred_by = NULL WHERE referred_by = $1::uuid",
         false},
        {"auth_del_refresh", "DELETE FROM refresh_tokens WHERE user_id = $1::uuid", false},
        {"auth_del_onetime", "DELETE FROM one_time_tokens WHERE user_id = $1::uuid", false},
        {"auth_del_throttle", "DELETE FROM login_throttle WHERE key = $1 OR account = $1", true},
        {"auth_del_user", "DELETE FROM users WHERE id = $1::uuid", false},
        /* Relayed events about the user still hold its address until the sweep; unsent
         * ones must still go out (consumers see the registration before the deletion). */
        {"auth_del_outbox", "DELETE FROM outbox WHERE key = $1 AND sent_at IS NOT NULL", false},
    };
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof steps / sizeof steps[0]; i++) {
        const char *p[1] = {steps[i].by_acct ? acct : uid};
        rc = cm_db_prepared(db, steps[i].name, steps[i].sql, 1, p, NULL);
    }
    return rc;
}

static int delete_tx(cm_db_t *db, void *vctx)
{
    const delete_ctx_t *c = vctx;
    const char *p[1] = {c->user_id};
    PGresult *r = NULL;
    /* FOR UPDATE: a login, refresh or reset of this user in flight commits first. */
    int rc = cm_db_prepared(db, "auth_del_lock",
                            "SELECT (extract(epoch FROM now()) * 1000000)::bigint FROM users "
                            "WHERE id = $1::uuid FOR UPDATE",
                            1, p, &r);
    if (rc != 0)
        return rc;
    int64_t now_us = 0;
    rc = PQntuples(r) == 1 ? col_int(r, 0, 0, &now_us) : CM_ENOTFOUND;
    PQclear(r);
    char account[48], acct[AUTH_THROTTLE_KEY_MAX];
    snprintf(account, sizeof account, "user:%s", c->user_id);
    auth_throttle_key(c->secret, "acct:", account, NULL, acct);
    if (rc == 0)
        rc = delete_account_rows(db, c->user_id, acct);
    if (rc != 0)
        return rc;
    char at[32];
    cm_format_time(now_us, at);
    return emit_correlated(db, CM_EV_USER_DELETED, c->user_id, c->request_id,
                           json_pack("{s:s, s:s}", "user_id", c->user_id, "deleted_at", at));
}

int auth_store_delete_user(cm_db_pool_t *pool, const uint8_t *secret, const char *user_id,
                           const char *request_id)
{
    delete_ctx_t c = {.secret = secret, .user_id = user_id, .request_id = request_id};
    return cm_db_tx(pool, delete_tx, &c);
}

/* Times as the API writes them: RFC 3339, UTC, milliseconds. */
#define TS(x) "to_char((" x ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

int auth_store_sessions_export(cm_db_pool_t *pool, const char *user_id, json_t **out)
{
    /* A family is a session: its first token opened it, its newest one is the last use
     * (every refresh writes a child); the sessions row (migration 005) adds the user agent
     * class and the address the login came from. The token hashes never leave. */
    /* clang-format off */
    static const char sql[] =
        "SELECT coalesce(jsonb_agg(jsonb_build_object('id', f.family_id, "
            "'created_at', " TS("f.first") ", "
            "'last_used_at', " TS("greatest(f.last, s.last_used_at)") ", "
            "'expires_at', " TS("f.exp") ", "
            "'active', f.active, 'user_agent', s.user_agent, 'ip', host(s.ip)) "
            "ORDER BY f.first, f.family_id), '[]'::jsonb)::text "
        "FROM (SELECT family_id, min(created_at) AS first, max(created_at) AS last, "
            "max(expires_at) AS exp, bool_or(revoked_at IS NULL AND expires_at > now()) AS active "
            "FROM refresh_tokens WHERE user_id = $1::uuid GROUP BY family_id) f "
        "LEFT JOIN sessions s ON s.family_id = f.family_id";
    /* clang-format on */
    const char *p[1] = {user_id};
    PGresult *r = NULL;
    *out = NULL;
    int rc = run(pool, "auth_sessions_export", sql, 1, p, &r);
    if (rc != 0)
        return rc;
    if (PQntuples(r) == 1)
        *out = json_loadb(PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0), 0, NULL);
    PQclear(r);
    if (!json_is_array(*out)) {
        json_decref(*out);
        *out = NULL;
        return CM_EDB;
    }
    return 0;
}
#undef TS

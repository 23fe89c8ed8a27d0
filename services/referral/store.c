/* store.c — the referral service's SQL, parameterized only (see store.h). */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/util.h"

/* A timestamptz column as RFC 3339 UTC text with milliseconds. */
#define RFC3339(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* Runs a statement and tells whether it returned a row: 0 yes, none_code no. */
static int exec_row(cm_db_t *db, const char *name, const char *sql, int n, const char *const *p,
                    int none_code, PGresult **keep)
{
    PGresult *res = NULL;
    int rc = cm_db_prepared(db, name, sql, n, p, &res);
    if (rc != 0)
        return rc;
    rc = PQntuples(res) > 0 ? 0 : none_code;
    if (keep && rc == 0)
        *keep = res;
    else
        PQclear(res);
    return rc;
}

/* A bigint column of any row; CM_EDB when it is not one. */
static int cell_ll(const PGresult *res, int row, int col, long long *v)
{
    *v = 0;
    return cm_strtonum(PQgetvalue(res, row, col), -(1LL << 62), 1LL << 62, v) == 0 ? 0 : CM_EDB;
}

static long long col_ll(PGresult *res, int col)
{
    long long v = 0;
    if (cell_ll(res, 0, col, &v) != 0)
        v = 0;
    return v;
}

static void copy_text(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

int ref_store_mark_processed(cm_db_t *db, const char *event_id)
{
    static const char sql[] = "INSERT INTO processed_events (event_id) VALUES ($1::uuid) "
                              "ON CONFLICT (event_id) DO NOTHING RETURNING 1";
    const char *p[1] = {event_id};
    return exec_row(db, "ref_mark_processed", sql, 1, p, CM_ECONFLICT, NULL);
}

int ref_store_lock_user(cm_db_t *db, const char *user_id)
{
    static const char sql[] = "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))";
    const char *p[1] = {user_id};
    return cm_db_prepared(db, "ref_lock_user", sql, 1, p, NULL);
}

int ref_store_add_member(cm_db_t *db, const ref_member_t *m)
{
    static const char sql[] =
        "WITH ins AS (INSERT INTO members (user_id, username, referral_code, referred_by, "
        "email, created_at) VALUES ($1::uuid, $2, $3, $4::uuid, $5, $6::timestamptz) "
        "ON CONFLICT (user_id) DO NOTHING RETURNING user_id), "
        "cnt AS (INSERT INTO referral_counter_stripes (user_id) SELECT user_id FROM ins "
        "ON CONFLICT (user_id, stripe) DO NOTHING) "
        "SELECT 1 FROM ins";
    const char *p[6] = {m->user_id,     m->username, m->referral_code,
                        m->referred_by, m->email,    m->registered_at};
    return exec_row(db, "ref_add_member", sql, 6, p, CM_ESTATE, NULL);
}

int ref_store_add_referral(cm_db_t *db, const char *referrer_id, const char *referred_id,
                           const char *at)
{
    static const char sql[] =
        "WITH ins AS (INSERT INTO referrals (id, referrer_id, referred_id, status, created_at, "
        "stripe) VALUES ($1::uuid, $2::uuid, $3::uuid, 'pending', $4::timestamptz, "
        "referral_stripe($3::uuid)) ON CONFLICT (referred_id) DO NOTHING "
        "RETURNING referrer_id, stripe), "
        "cnt AS (INSERT INTO referral_counter_stripes AS k (user_id, stripe, total, pending) "
        "SELECT referrer_id, stripe, 1, 1 FROM ins ON CONFLICT (user_id, stripe) DO UPDATE "
        "SET total = k.total + 1, pending = k.pending + 1) "
        "SELECT 1 FROM ins";
    char id[37];
    cm_uuid_v4(id);
    const char *p[4] = {id, referrer_id, referred_id, at};
    return exec_row(db, "ref_add_referral", sql, 4, p, CM_ESTATE, NULL);
}

int ref_store_member_exists(cm_db_t *db, const char *user_id)
{
    static const char sql[] = "SELECT 1 FROM members WHERE user_id = $1::uuid";
    const char *p[1] = {user_id};
    return exec_row(db, "ref_member_exists", sql, 1, p, CM_ENOTFOUND, NULL);
}

int ref_store_park_verification(cm_db_t *db, const char *user_id, const char *verified_at)
{
    static const char sql[] = "INSERT INTO parked_verifications (user_id, verified_at) "
                              "VALUES ($1::uuid, $2::timestamptz) ON CONFLICT (user_id) DO NOTHING";
    const char *p[2] = {user_id, verified_at};
    return cm_db_prepared(db, "ref_park", sql, 2, p, NULL);
}

int ref_store_take_parked(cm_db_t *db, const char *user_id, char verified_at[40])
{
    static const char sql[] = "DELETE FROM parked_verifications WHERE user_id = $1::uuid "
                              "RETURNING " RFC3339("verified_at");
    const char *p[1] = {user_id};
    PGresult *res = NULL;
    int rc = exec_row(db, "ref_take_parked", sql, 1, p, CM_ENOTFOUND, &res);
    if (rc == 0) {
        copy_text(verified_at, 40, PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    return rc;
}

int ref_store_convert(cm_db_t *db, const char *referred_id, const char *status, const char *reason,
                      const char *at, ref_conversion_t *out)
{
    /* Both updates run even though only the first is selected from: data-
     * modifying WITH clauses always execute, in the same snapshot. Only the
     * referral's own stripe row is locked, so conversions of one referrer
     * that fall on other stripes run in parallel. */
    static const char sql[] =
        "WITH c AS (UPDATE referrals SET status = $2, reason = $3, "
        "converted_at = $4::timestamptz "
        "WHERE referred_id = $1::uuid AND status = 'pending' "
        "RETURNING id, referrer_id, converted_at, stripe), "
        "k AS (UPDATE referral_counter_stripes k SET pending = k.pending - 1, "
        "successful = k.successful + (CASE WHEN $2 = 'successful' THEN 1 ELSE 0 END), "
        "rejected = k.rejected + (CASE WHEN $2 = 'rejected' THEN 1 ELSE 0 END), "
        "expired = k.expired + (CASE WHEN $2 = 'expired' THEN 1 ELSE 0 END) "
        "FROM c WHERE k.user_id = c.referrer_id AND k.stripe = c.stripe RETURNING 1) "
        "SELECT id, referrer_id, " RFC3339("converted_at") ", stripe, "
                                                           "(SELECT count(*) FROM k) FROM c";
    const char *p[4] = {referred_id, status, reason, at};
    PGresult *res = NULL;
    memset(out, 0, sizeof *out);
    int rc = exec_row(db, "ref_convert", sql, 4, p, CM_ENOTFOUND, &res);
    if (rc != 0)
        return rc;
    copy_text(out->referral_id, sizeof out->referral_id, PQgetvalue(res, 0, 0));
    copy_text(out->referrer_id, sizeof out->referrer_id, PQgetvalue(res, 0, 1));
    copy_text(out->at, sizeof out->at, PQgetvalue(res, 0, 2));
    copy_text(out->stripe, sizeof out->stripe, PQgetvalue(res, 0, 3));
    /* A referral whose stripe row is missing would go uncounted: a broken invariant. */
    rc = col_ll(res, 4) == 1 ? 0 : CM_EDB;
    PQclear(res);
    return rc;
}

int ref_store_successful(cm_db_t *db, const char *user_id, long long *n)
{
    static const char sql[] = "SELECT coalesce(sum(successful), 0) FROM referral_counter_stripes "
                              "WHERE user_id = $1::uuid";
    const char *p[1] = {user_id};
    PGresult *res = NULL;
    *n = 0;
    int rc = exec_row(db, "ref_successful", sql, 1, p, CM_EDB, &res);
    if (rc == 0) {
        rc = cell_ll(res, 0, 0, n);
        PQclear(res);
    }
    return rc;
}

int ref_store_lock_milestones(cm_db_t *db, const char *referrer_id)
{
    /* Seed 9: neither ref_store_lock_user's 7 nor ref_store_lock_referrer's 8. */
    static const char sql[] = "SELECT pg_advisory_xact_lock(hashtextextended($1, 9))";
    const char *p[1] = {referrer_id};
    return cm_db_prepared(db, "ref_lock_milestones", sql, 1, p, NULL);
}

/* The tombstone of $1 as a boolean column: folded into each read of an
 * authenticated route, so a deleted account's token costs no second statement. */
#define GONE "EXISTS (SELECT 1 FROM deleted_members WHERE user_id = $1::uuid)"

/* A boolean column as libpq's text format gives it. */
static bool cell_true(const PGresult *res, int row, int col)
{
    return !PQgetisnull(res, row, col) && PQgetvalue(res, row, col)[0] == 't';
}

int ref_store_stats(cm_db_t *db, const char *user_id, ref_stats_t *out)
{
    /* An aggregate without GROUP BY: always one row (zeros for an unknown
     * user), summing at most 16 stripe rows of one primary-key prefix. The
     * LIMIT changes no answer (user_id is the key) but ends a sequential
     * scan at the match, which the planner picks while members is small. */
    static const char sql[] =
        "SELECT " GONE ", coalesce((SELECT referral_code FROM members WHERE user_id = $1::uuid "
        "LIMIT 1), ''), coalesce(sum(total), 0), coalesce(sum(pending), 0), "
        "coalesce(sum(successful), 0), "
        "coalesce(sum(rejected), 0), coalesce(sum(expired), 0), coalesce(sum(credits), 0), "
        "coalesce(sum(rewards_count), 0), coalesce(sum(clicks), 0) "
        "FROM referral_counter_stripes WHERE user_id = $1::uuid";
    const char *p[1] = {user_id};
    memset(out, 0, sizeof *out);
    PGresult *res = NULL;
    int rc = exec_row(db, "ref_stats", sql, 1, p, CM_EDB, &res);
    if (rc != 0)
        return rc;
    if (cell_true(res, 0, 0)) {
        PQclear(res);
        return CM_EAUTH;
    }
    copy_text(out->referral_code, sizeof out->referral_code, PQgetvalue(res, 0, 1));
    long long *fields[] = {&out->total,   &out->pending, &out->successful,    &out->rejected,
                           &out->expired, &out->credits, &out->rewards_count, &out->clicks};
    for (int i = 0; i < 8 && rc == 0; i++)
        rc = cell_ll(res, 0, i + 2, fields[i]);
    PQclear(res);
    return rc;
}

/* Two digits (four for width 4) of v at out. */
static char *put_digits(char *out, int64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--, v /= 10)
        out[i] = (char)('0' + v % 10);
    return out + width;
}

void ref_time_text(int64_t us, char out[REF_TIME_MAX])
{
    /* 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z: to_char's 4-digit years. */
    static const int64_t lo = -62135596800000000LL, hi = 253402300799999999LL;
    us = us < lo ? lo : us > hi ? hi : us;
    int64_t secs = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    int64_t days = secs / 86400, sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    /* The proleptic Gregorian date of a day number (H. Hinnant's civil_from_days). */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t day = doy - (153 * mp + 2) / 5 + 1;
    int64_t month = mp < 10 ? mp + 3 : mp - 9;
    int64_t year = yoe + era * 400 + (month <= 2);
    char *o = put_digits(out, year, 4);
    *o++ = '-';
    o = put_digits(o, month, 2);
    *o++ = '-';
    o = put_digits(o, day, 2);
    *o++ = 'T';
    o = put_digits(o, sod / 3600, 2);
    *o++ = ':';
    o = put_digits(o, sod / 60 % 60, 2);
    *o++ = ':';
    o = put_digits(o, sod % 60, 2);
    *o++ = '.';
    o = put_digits(o, frac / 1000, 3); /* to_char's MS truncates */
    *o++ = 'Z';
    *o = '\0';
}

/* A fixed-size text cell (an id, a status) into dst; CM_EDB when it does not fit. */
static int cell_text(const PGresult *res, int row, int col, char *dst, size_t cap)
{
    size_t n = (size_t)PQgetlength(res, row, col);
    if (n >= cap)
        return CM_EDB;
    memcpy(dst, PQgetvalue(res, row, col), n + 1);
    return 0;
}

/* A nullable text cell, borrowed from res (valid until PQclear), or NULL. */
static const char *cell_or_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

/* A nullable microseconds column as RFC 3339 text into dst, "" for NULL. */
static int cell_time(const PGresult *res, int row, int col, char dst[REF_TIME_MAX], int64_t *us)
{
    long long v = 0;
    dst[0] = '\0';
    if (PQgetisnull(res, row, col))
        return 0;
    if (cell_ll(res, row, col, &v) != 0)
        return CM_EDB;
    if (us)
        *us = v;
    ref_time_text(v, dst);
    return 0;
}

/*
 * Reads a page statement's shape: every row carries the tombstone in its
 * last column, and a page with no rows is one row of NULLs (the LEFT JOIN
 * LATERAL below). Returns CM_EAUTH for a deleted user, else 0 and the
 * number of real rows.
 */
static int page_rows(const PGresult *res, int *rows)
{
    int n = PQntuples(res), last = PQnfields(res) - 1;
    *rows = 0;
    if (n < 1 || last < 1)
        return CM_EDB;
    if (cell_true(res, 0, last))
        return CM_EAUTH;
    *rows = n == 1 && PQgetisnull(res, 0, 0) ? 0 : n;
    return 0;
}

/*
 * A page statement: the tombstone probe is the one outer row, and the page
 * (a keyset range scan of an index) joins it laterally, so a deleted user
 * reads no page and an empty page still answers one row (of NULLs but the
 * tombstone). The outer ORDER BY restates the page's order (a sort of at
 * most limit + 1 rows) rather than trusting the join to keep it.
 */
#define PAGE_OPEN(cols)                                                                            \
    "SELECT " cols ", d.gone FROM (SELECT " GONE " AS gone) d LEFT JOIN LATERAL ("
#define PAGE_CLOSE ") p ON true ORDER BY p.created_at DESC, p.id DESC"
/*
 * Times leave as integers (microseconds): formatted once each in
 * ref_time_text. The outer query converts them, so only the rows shown pay
 * for it: a plan that reads all of a referrer's rows and keeps the newest
 * (the one PostgreSQL picks for a table it has not analyzed yet) would
 * otherwise convert every row it reads (measured on 200 rows: 0.41 ms a
 * page, 0.22 ms with the conversion outside).
 */
#define US(col) "(extract(epoch FROM " col ") * 1000000)::bigint"

/* The columns of a page, shared by the four list statements. The username
 * is the referral's own copy (migration 008): no join to members per row. */
#define LIST_OUTER                                                                                 \
    "p.id, p.referred_id, p.referred_username, p.status, p.reason, " US(                           \
        "p.created_at") " AS created_us, " US("p.converted_at") " AS converted_us"
#define LIST_SELECT                                                                                \
    "SELECT r.id, r.referred_id, r.referred_username, r.status, r.reason, r.created_at, "          \
    "r.converted_at "
#define LIST_FROM "FROM referrals r WHERE r.referrer_id = $1::uuid AND NOT d.gone "
#define LIST_COLUMNS PAGE_OPEN(LIST_OUTER) LIST_SELECT LIST_FROM
/* The keyset predicate with the cursor's microseconds and id in parameters us and id. */
#define LIST_AFTER(us, id)                                                                         \
    "AND (r.created_at, r.id) < ('epoch'::timestamptz + " us "::bigint * "                         \
    "interval '1 microsecond', " id "::uuid) "
#define LIST_ORDER "ORDER BY r.created_at DESC, r.id DESC LIMIT $2::int" PAGE_CLOSE
/*
 * The default page (REF_PAGE_DEFAULT + 1 rows) has statements of its own with
 * the LIMIT written out: PostgreSQL plans a LIMIT $n as a tenth of the rows,
 * so where one referrer owns most rows the generic plan looks dear and every
 * execution is planned anew (measured: about 200 µs a page); with a literal
 * LIMIT the generic plan is kept.
 */
#define LIST_ORDER_DEFAULT "ORDER BY r.created_at DESC, r.id DESC LIMIT 21" PAGE_CLOSE
_Static_assert(REF_PAGE_DEFAULT + 1 == 21, "LIST_ORDER_DEFAULT's LIMIT is the default page + 1");

/* One row of a list statement (LIST_COLUMNS) into r; strings borrowed from res. */
static int referral_row(const PGresult *res, int i, ref_referral_t *r)
{
    int rc = cell_text(res, i, 0, r->id, sizeof r->id);
    if (rc == 0)
        rc = cell_text(res, i, 1, r->referred_id, sizeof r->referred_id);
    r->referred_username = cell_or_null(res, i, 2);
    if (rc == 0)
        rc = cell_text(res, i, 3, r->status, sizeof r->status);
    r->reason = cell_or_null(res, i, 4);
    if (rc == 0 && PQgetisnull(res, i, 5))
        rc = CM_EDB;
    if (rc == 0)
        rc = cell_time(res, i, 5, r->created_at, &r->created_us);
    if (rc == 0)
        rc = cell_time(res, i, 6, r->converted_at, NULL); /* "" for NULL */
    return rc;
}

/* The first limit rows of res (kept by out) into out; the cursor follows the last one shown. */
static int referral_page(PGresult *res, int limit, ref_referral_page_t *out)
{
    int rows = 0;
    out->res = res;
    int rc = page_rows(res, &rows);
    out->more = rows > limit;
    size_t shown = (size_t)(out->more ? limit : rows);
    out->rows = cm_xcalloc(shown ? shown : 1, sizeof *out->rows);
    for (out->n = 0; rc == 0 && out->n < shown; out->n++)
        rc = referral_row(res, (int)out->n, &out->rows[out->n]);
    if (rc != 0) {
        ref_referral_page_dispose(out);
        return rc;
    }
    if (out->more) {
        out->next.created_us = out->rows[shown - 1].created_us;
        memcpy(out->next.id, out->rows[shown - 1].id, sizeof out->next.id);
    }
    return 0;
}

void ref_referral_page_dispose(ref_referral_page_t *p)
{
    if (!p)
        return;
    free(p->rows);
    PQclear(p->res);
    memset(p, 0, sizeof *p);
}

/* One list statement and the parameters it takes, in order. */
typedef struct list_stmt {
    const char *name, *sql;
    int n;
    int params[5]; /* indexes into list_args: 0 referrer, 1 limit, 2 µs, 3 id, 4 status */
} list_stmt_t;

/* The list statement for a page: [default limit][cursor][status]. */
static const list_stmt_t *list_statement(bool dflt, bool cursor, bool status)
{
    /* Static statements rather than optional predicates, so each plan is an
     * index range scan on (referrer_id[, status], created_at, id). */
    static const list_stmt_t stmts[2][2][2] = {
        {{{"ref_list_first", LIST_COLUMNS LIST_ORDER, 2, {0, 1}},
          {"ref_list_first_st", LIST_COLUMNS "AND r.status = $3 " LIST_ORDER, 3, {0, 1, 4}}},
         {{"ref_list_after", LIST_COLUMNS LIST_AFTER("$3", "$4") LIST_ORDER, 4, {0, 1, 2, 3}},
          {"ref_list_after_st",
           LIST_COLUMNS "AND r.status = $5 " LIST_AFTER("$3", "$4") LIST_ORDER,
           5,
           {0, 1, 2, 3, 4}}}},
        {{{"ref_list_first_d", LIST_COLUMNS LIST_ORDER_DEFAULT, 1, {0}},
          {"ref_list_first_st_d", LIST_COLUMNS "AND r.status = $2 " LIST_ORDER_DEFAULT, 2, {0, 4}}},
         {{"ref_list_after_d",
           LIST_COLUMNS LIST_AFTER("$2", "$3") LIST_ORDER_DEFAULT,
           3,
           {0, 2, 3}},
          {"ref_list_after_st_d",
           LIST_COLUMNS "AND r.status = $4 " LIST_AFTER("$2", "$3") LIST_ORDER_DEFAULT,
           4,
           {0, 2, 3, 4}}}},
    };
    return &stmts[dflt][cursor][status];
}

/* Runs a page statement with the arguments it takes (st->params index args). */
static int run_page_statement(cm_db_t *db, const list_stmt_t *st, const char *const *args,
                              PGresult **res)
{
    const char *p[5];
    for (int i = 0; i < st->n; i++)
        p[i] = args[st->params[i]];
    return cm_db_prepared(db, st->name, st->sql, st->n, p, res);
}

int ref_store_list(cm_db_t *db, const char *referrer_id, const char *status,
                   const ref_cursor_t *cursor, int limit, ref_referral_page_t *out)
{
    memset(out, 0, sizeof *out);
    if (limit < 1 || limit > 1000000)
        return CM_EINVAL;
    char lim[16], us[24];
    snprintf(lim, sizeof lim, "%d", limit + 1); /* the extra row tells whether more follow */
    snprintf(us, sizeof us, "%lld", cursor ? (long long)cursor->created_us : 0LL);
    const char *args[5] = {referrer_id, lim, us, cursor ? cursor->id : NULL, status};
    PGresult *res = NULL;
    int rc = run_page_statement(db, list_statement(limit == REF_PAGE_DEFAULT, cursor, status), args,
                                &res);
    return rc == 0 ? referral_page(res, limit, out) : rc;
}

int ref_store_member_email(cm_db_t *db, const char *user_id, char email[255])
{
    static const char sql[] = "SELECT email FROM members WHERE user_id = $1::uuid";
    const char *p[1] = {user_id};
    PGresult *res = NULL;
    int rc = exec_row(db, "ref_member_email", sql, 1, p, CM_ENOTFOUND, &res);
    if (rc == 0) {
        copy_text(email, 255, PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    return rc;
}

int ref_store_lock_referrer(cm_db_t *db, const char *referrer_id)
{
    /* Seed 8, not ref_store_lock_user's 7: one user's two locks are different keys. */
    static const char sql[] = "SELECT pg_advisory_xact_lock(hashtextextended($1, 8))";
    const char *p[1] = {referrer_id};
    return cm_db_prepared(db, "ref_lock_referrer", sql, 1, p, NULL);
}

int ref_store_recent_referrals(cm_db_t *db, const char *referrer_id, const char *at, int limit)
{
    /* No upper bound on created_at: events of one referrer arrive out of
     * order (their keys are the referred users, so they ride different
     * partitions), and a referral registered later but processed earlier
     * must count too. Referrals the cap itself rejected do not count, so
     * the rule admits `cap` referrals per 24 hours rather than feeding on
     * its own rejections; the partial index referrals_referrer_capped
     * (migration 003) and the LIMIT keep the count bounded by the cap. */
    static const char sql[] =
        "SELECT count(*) FROM (SELECT 1 FROM referrals WHERE referrer_id = $1::uuid "
        "AND reason IS DISTINCT FROM 'daily_cap' "
        "AND created_at > $2::timestamptz - interval '24 hours' LIMIT $3::int) r";
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[3] = {referrer_id, at, lim};
    PGresult *res = NULL;
    int rc = exec_row(db, "ref_recent", sql, 3, p, CM_EDB, &res);
    if (rc != 0)
        return rc;
    long long n = col_ll(res, 0);
    PQclear(res);
    return n > 1000000000LL ? 1000000000 : (int)n;
}

int ref_store_grant(cm_db_t *db, const ref_grant_t *g, char reward_id[37])
{
    /* ON CONFLICT without a target covers both uniqueness rules. */
    static const char sql[] =
        "WITH ins AS (INSERT INTO rewards (id, user_id, kind, amount, reason, rule, "
        "referral_id, created_at) VALUES ($1::uuid, $2::uuid, $3, $4::bigint, $5, $6, "
        "$7::uuid, $8::timestamptz) ON CONFLICT DO NOTHING RETURNING user_id, amount), "
        "cnt AS (INSERT INTO referral_counter_stripes AS k (user_id, stripe, credits, "
        "rewards_count) SELECT user_id, $9::smallint, amount, 1 "
        "FROM ins ON CONFLICT (user_id, stripe) DO UPDATE "
        "SET credits = k.credits + EXCLUDED.credits, rewards_count = k.rewards_count + 1) "
        "SELECT 1 FROM ins";
    char amount[24];
    snprintf(amount, sizeof amount, "%lld", g->amount);
    cm_uuid_v4(reward_id);
    const char *p[9] = {reward_id,      g->user_id, g->kind,
                        amount,         g->reason,  g->rule,
                        g->referral_id, g->at,      g->stripe ? g->stripe : "0"};
    return exec_row(db, "ref_grant", sql, 9, p, CM_ESTATE, NULL);
}

int ref_store_expirable(cm_db_t *db, int ttl_days, int limit, char ids[][37], int *n)
{
    static const char sql[] = "SELECT referred_id FROM referrals WHERE status = 'pending' "
                              "AND created_at < now() - $1::int * interval '1 day' "
                              "ORDER BY created_at LIMIT $2::int FOR UPDATE SKIP LOCKED";
    char ttl[16], lim[16];
    snprintf(ttl, sizeof ttl, "%d", ttl_days);
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[2] = {ttl, lim};
    PGresult *res = NULL;
    *n = 0;
    int rc = cm_db_prepared(db, "ref_expirable", sql, 2, p, &res);
    if (rc != 0)
        return rc;
    for (int i = 0; i < PQntuples(res) && i < limit; i++)
        copy_text(ids[(*n)++], 37, PQgetvalue(res, i, 0));
    PQclear(res);
    return 0;
}

#define REWARD_COLUMNS                                                                             \
    PAGE_OPEN(                                                                                     \
        "p.id, p.kind, p.amount, p.reason, p.referral_id, " US("p.created_at") " AS created_us")   \
    "SELECT r.id, r.kind, r.amount, r.reason, r.referral_id, r.created_at FROM rewards r "         \
    "WHERE r.user_id = $1::uuid AND NOT d.gone "

/* One row of a rewards statement (REWARD_COLUMNS) into r; strings borrowed from res. */
static int reward_row(const PGresult *res, int i, ref_reward_t *r)
{
    int rc = cell_text(res, i, 0, r->id, sizeof r->id);
    if (rc == 0)
        rc = cell_text(res, i, 1, r->kind, sizeof r->kind);
    if (rc == 0)
        rc = cell_ll(res, i, 2, &r->amount);
    r->reason = PQgetvalue(res, i, 3);
    if (rc == 0)
        rc = cell_text(res, i, 4, r->referral_id, sizeof r->referral_id); /* "" for NULL */
    if (rc == 0 && PQgetisnull(res, i, 5))
        rc = CM_EDB;
    if (rc == 0)
        rc = cell_time(res, i, 5, r->created_at, &r->created_us);
    return rc;
}

/* The first limit rows of res (kept by out) into out; the cursor follows the last one shown. */
static int reward_page(PGresult *res, int limit, ref_reward_page_t *out)
{
    int rows = 0;
    out->res = res;
    int rc = page_rows(res, &rows);
    out->more = rows > limit;
    size_t shown = (size_t)(out->more ? limit : rows);
    out->rows = cm_xcalloc(shown ? shown : 1, sizeof *out->rows);
    for (out->n = 0; rc == 0 && out->n < shown; out->n++)
        rc = reward_row(res, (int)out->n, &out->rows[out->n]);
    if (rc != 0) {
        ref_reward_page_dispose(out);
        return rc;
    }
    if (out->more) {
        out->next.created_us = out->rows[shown - 1].created_us;
        memcpy(out->next.id, out->rows[shown - 1].id, sizeof out->next.id);
    }
    return 0;
}

void ref_reward_page_dispose(ref_reward_page_t *p)
{
    if (!p)
        return;
    free(p->rows);
    PQclear(p->res);
    memset(p, 0, sizeof *p);
}

int ref_store_rewards(cm_db_t *db, const char *user_id, const ref_cursor_t *cursor, int limit,
                      ref_reward_page_t *out)
{
    /* As the lists: the default page has statements with a literal LIMIT (LIST_ORDER_DEFAULT),
     * so a user who owns most rows keeps one generic plan. */
    static const list_stmt_t stmts[2][2] = {
        {{"ref_rewards_first", REWARD_COLUMNS LIST_ORDER, 2, {0, 1}},
         {"ref_rewards_after", REWARD_COLUMNS LIST_AFTER("$3", "$4") LIST_ORDER, 4, {0, 1, 2, 3}}},
        {{"ref_rewards_first_d", REWARD_COLUMNS LIST_ORDER_DEFAULT, 1, {0}},
         {"ref_rewards_after_d",
          REWARD_COLUMNS LIST_AFTER("$2", "$3") LIST_ORDER_DEFAULT,
          3,
          {0, 2, 3}}},
    };
    memset(out, 0, sizeof *out);
    if (limit < 1 || limit > 1000000)
        return CM_EINVAL;
    char lim[16], us[24];
    snprintf(lim, sizeof lim, "%d", limit + 1); /* the extra row tells whether more follow */
    snprintf(us, sizeof us, "%lld", cursor ? (long long)cursor->created_us : 0LL);
    const char *args[4] = {user_id, lim, us, cursor ? cursor->id : NULL};
    PGresult *res = NULL;
    int rc = run_page_statement(db, &stmts[limit == REF_PAGE_DEFAULT][cursor != NULL], args, &res);
    return rc == 0 ? reward_page(res, limit, out) : rc;
}

int ref_store_click(cm_db_t *db, const ref_click_t *c, bool *counted)
{
    /* One statement: the member lookup, the one-hour dedup probe and the insert (whose
     * trigger bumps the counters). No row back: no member owns the code. */
    static const char sql[] =
        "WITH m AS (SELECT user_id FROM members WHERE referral_code = $1), "
        "ins AS (INSERT INTO clicks (referrer_id, code, client_hash, ua_class, referrer_host) "
        "SELECT m.user_id, $1, $2, $3, $4 FROM m WHERE $5::bool AND NOT EXISTS ("
        "SELECT 1 FROM clicks c WHERE c.code = $1 AND c.client_hash = $2 "
        "AND c.clicked_at > now() - interval '1 hour') RETURNING 1) "
        "SELECT (SELECT count(*) FROM ins) FROM m";
    const char *p[5] = {c->code, c->client_hash, c->ua_class, c->referrer_host,
                        c->count ? "true" : "false"};
    PGresult *res = NULL;
    *counted = false;
    int rc = exec_row(db, "ref_click", sql, 5, p, CM_ENOTFOUND, &res);
    if (rc == 0) {
        *counted = col_ll(res, 0) > 0;
        PQclear(res);
    }
    return rc;
}

int ref_store_daily(cm_db_t *db, const char *user_id, int days, ref_day_t *out)
{
    static const char sql[] =
        "SELECT to_char(d.day, 'YYYY-MM-DD'), coalesce(r.clicks, 0), coalesce(r.signups, 0), "
        "coalesce(r.successful, 0), " GONE
        " FROM generate_series((now() AT TIME ZONE 'UTC')::date - "
        "($2::int - 1), (now() AT TIME ZONE 'UTC')::date, interval '1 day') AS d(day) "
        "LEFT JOIN (SELECT day, sum(clicks) AS clicks, sum(signups) AS signups, "
        "sum(successful) AS successful FROM referral_daily WHERE user_id = $1::uuid "
        "AND day > (now() AT TIME ZONE 'UTC')::date - $2::int GROUP BY day) r "
        "ON r.day = d.day::date ORDER BY d.day";
    char n[16];
    snprintf(n, sizeof n, "%d", days);
    const char *p[2] = {user_id, n};
    PGresult *res = NULL;
    int rc = cm_db_prepared(db, "ref_daily", sql, 2, p, &res);
    if (rc != 0)
        return rc;
    int rows = PQntuples(res);
    if (rows > 0 && cell_true(res, 0, 4)) {
        PQclear(res);
        return CM_EAUTH;
    }
    for (int i = 0; i < rows && i < days; i++) {
        copy_text(out[i].date, sizeof out[i].date, PQgetvalue(res, i, 0));
        long long *f[] = {&out[i].clicks, &out[i].signups, &out[i].successful};
        for (int k = 0; k < 3; k++)
            if (cell_ll(res, i, k + 1, f[k]) != 0)
                *f[k] = 0;
    }
    PQclear(res);
    return rows == days ? 0 : CM_EIO;
}

/* ---- email change (issue 15) ---------------------------------------------------------- */

int ref_store_member_set_email(cm_db_t *db, const char *user_id, const char *email)
{
    static const char sql[] = "UPDATE members SET email = $2 WHERE user_id = $1::uuid RETURNING 1";
    const char *p[2] = {user_id, email};
    return exec_row(db, "ref_member_set_email", sql, 2, p, CM_ENOTFOUND, NULL);
}

int ref_store_park_email(cm_db_t *db, const char *user_id, const char *email)
{
    static const char sql[] = "INSERT INTO parked_email_changes (user_id, email) "
                              "VALUES ($1::uuid, $2) ON CONFLICT (user_id) DO UPDATE "
                              "SET email = EXCLUDED.email, parked_at = now()";
    const char *p[2] = {user_id, email};
    return cm_db_prepared(db, "ref_park_email", sql, 2, p, NULL);
}

int ref_store_apply_parked_email(cm_db_t *db, const char *user_id)
{
    static const char sql[] =
        "WITH t AS (DELETE FROM parked_email_changes WHERE user_id = $1::uuid RETURNING email) "
        "UPDATE members m SET email = t.email FROM t WHERE m.user_id = $1::uuid";
    const char *p[1] = {user_id};
    return cm_db_prepared(db, "ref_apply_parked_email", sql, 1, p, NULL);
}

/* ---- account deletion (issue 15) ---------------------------------------------- */

int ref_store_forget_member(cm_db_t *db, const char *user_id, const char *deleted_at, bool *first)
{
    static const char tomb[] = "INSERT INTO deleted_members (user_id, deleted_at) "
                               "VALUES ($1::uuid, $2::timestamptz) "
                               "ON CONFLICT (user_id) DO NOTHING RETURNING 1";
    /* Idempotent each: run again they find nothing, so a replay changes nothing. */
    static const struct {
        const char *name, *sql;
    } steps[] = {
        {"ref_forget_member", "DELETE FROM members WHERE user_id = $1::uuid"},
        {"ref_forget_clicks", "DELETE FROM clicks WHERE referrer_id = $1::uuid"},
        {"ref_forget_parked", "DELETE FROM parked_verifications WHERE user_id = $1::uuid"},
        {"ref_forget_parked_email", "DELETE FROM parked_email_changes WHERE user_id = $1::uuid"},
        {"ref_forget_optin", "DELETE FROM leaderboard_optin WHERE user_id = $1::uuid"},
    };
    const char *p[2] = {user_id, deleted_at};
    *first = false;
    int rc = exec_row(db, "ref_tombstone", tomb, 2, p, CM_ESTATE, NULL);
    if (rc != 0 && rc != CM_ESTATE)
        return rc;
    *first = rc == 0;
    rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof steps / sizeof steps[0]; i++)
        rc = cm_db_prepared(db, steps[i].name, steps[i].sql, 1, p, NULL);
    return rc;
}

int ref_store_deleted(cm_db_t *db, const char *user_id)
{
    static const char sql[] = "SELECT 1 FROM deleted_members WHERE user_id = $1::uuid";
    const char *p[1] = {user_id};
    return exec_row(db, "ref_deleted", sql, 1, p, CM_ENOTFOUND, NULL);
}

/* ---- the monthly leaderboard (migration 006) ----------------------------------------- */

int ref_store_leaderboard(cm_db_t *db, const char *month_start, int limit, ref_board_row_t *out,
                          int *n)
{
    static const char sql[] =
        "WITH month AS (SELECT d.user_id, sum(d.successful)::bigint AS n FROM referral_daily d "
        "WHERE d.successful > 0 AND d.day >= $1::date AND d.day < ($1::date + interval '1 month') "
        "GROUP BY d.user_id) "
        "SELECT t.user_id, m.username, coalesce(o.show, false), t.n FROM month t "
        "LEFT JOIN members m ON m.user_id = t.user_id "
        "LEFT JOIN leaderboard_optin o ON o.user_id = t.user_id "
        "ORDER BY t.n DESC, m.created_at ASC NULLS LAST, t.user_id ASC LIMIT $2::int";
    *n = 0;
    if (!month_start || limit < 1 || limit > REF_BOARD_MAX)
        return CM_EINVAL;
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[2] = {month_start, lim};
    PGresult *res = NULL;
    int rc = cm_db_prepared(db, "ref_leaderboard", sql, 2, p, &res);
    if (rc != 0)
        return rc;
    int rows = PQntuples(res);
    for (int i = 0; i < rows && i < limit && rc == 0; i++) {
        ref_board_row_t *r = &out[i];
        copy_text(r->user_id, sizeof r->user_id, PQgetvalue(res, i, 0));
        copy_text(r->username, sizeof r->username,
                  PQgetisnull(res, i, 1) ? NULL : PQgetvalue(res, i, 1));
        r->show = strcmp(PQgetvalue(res, i, 2), "t") == 0;
        rc = cell_ll(res, i, 3, &r->successful);
        *n = i + 1;
    }
    PQclear(res);
    if (rc != 0)
        *n = 0;
    return rc;
}

int ref_store_set_optin(cm_db_t *db, const char *user_id, bool show)
{
    /* No row back: the tombstone stopped the insert (and so the update). */
    static const char sql[] =
        "INSERT INTO leaderboard_optin (user_id, show) SELECT $1::uuid, $2::bool WHERE NOT " GONE
        " ON CONFLICT (user_id) DO UPDATE SET show = EXCLUDED.show, updated_at = now() "
        "RETURNING 1";
    const char *p[2] = {user_id, show ? "true" : "false"};
    return exec_row(db, "ref_set_optin", sql, 2, p, CM_EAUTH, NULL);
}

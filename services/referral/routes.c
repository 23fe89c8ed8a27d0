/* routes.c — referral stats and the keyset-paginated list (see routes.h). */
#include "routes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cm/jsonwrite.h"
#include "cm/log.h"
#include "cm/util.h"

#define DEFAULT_LIMIT REF_PAGE_DEFAULT
#define MAX_LIMIT 100

void ref_cursor_encode(const ref_cursor_t *c, char out[REF_CURSOR_MAX + 1])
{
    char raw[64];
    int n = snprintf(raw, sizeof raw, "%lld.%s", (long long)c->created_us, c->id);
    sodium_bin2base64(out, REF_CURSOR_MAX + 1, (const unsigned char *)raw, (size_t)n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int ref_cursor_decode(const char *s, ref_cursor_t *c)
{
    unsigned char raw[64];
    size_t n = 0;
    size_t len = strnlen(s, REF_CURSOR_MAX + 1);
    if (len == 0 || len > REF_CURSOR_MAX ||
        sodium_base642bin(raw, sizeof raw - 1, s, len, NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return CM_EPARSE;
    raw[n] = '\0';
    char *dot = memchr(raw, '.', n);
    if (!dot || strlen((char *)raw) != n)
        return CM_EPARSE;
    *dot = '\0';
    long long us = 0;
    const char *id = dot + 1;
    if (cm_strtonum((char *)raw, 0, 253402300799999999LL, &us) != 0 || strlen(id) != 36 ||
        !cm_is_uuid(id, 36))
        return CM_EPARSE;
    c->created_us = us;
    memcpy(c->id, id, 37);
    return 0;
}

/* Verifies the Bearer token; on failure it has replied 401 and returns < 0. */
static int authenticate_or_reply(cm_req_t *rq, ref_api_t *api, cm_jwt_claims_t *claims)
{
    const char *hdr = cm_req_header(rq, "Authorization");
    const char *tok = NULL;
    size_t len = 0;
    if (!hdr || cm_jwt_from_header(hdr, &tok, &len) != 0 ||
        cm_jwt_verify(api->jwt, tok, len, claims) != 0 ||
        !cm_is_uuid(claims->sub, strnlen(claims->sub, sizeof claims->sub))) {
        cm_reply_problem(rq, 401, "Unauthorized", "A valid access token is required.", NULL);
        return -1;
    }
    return 0;
}

/* Checks out a connection; on failure it has replied 503 and returns < 0. */
static int db_or_reply(cm_req_t *rq, ref_api_t *api, cm_db_t **db)
{
    int rc = cm_db_acquire(api->pool, db);
    if (rc != 0) {
        *db = NULL;
        CM_WARN(cm_req_id(rq), "referral: database: %s", cm_strerror(rc));
        cm_reply_problem(rq, 503, "Service unavailable", "Try again shortly.", NULL);
        return -1;
    }
    return 0;
}

/*
 * Replies to a store failure of an authenticated read: 401 for CM_EAUTH (a
 * deleted account: its access tokens verify until they expire, but the
 * subject is gone; each statement reads the tombstone itself), else 503.
 */
static void reply_store_failure(cm_req_t *rq, int rc, const char *what)
{
    if (rc == CM_EAUTH) {
        cm_reply_problem(rq, 401, "Unauthorized", "A valid access token is required.", NULL);
        return;
    }
    CM_WARN(cm_req_id(rq), "referral: %s: %s", what, cm_strerror(rc));
    cm_reply_problem(rq, 503, "Service unavailable", "Try again shortly.", NULL);
}

/* Sets a key the code names (no UTF-8 check, no copy of the key's check). */
static void set(json_t *o, const char *key, json_t *v)
{
    json_object_set_new_nocheck(o, key, v);
}

static json_t *stats_json(const ref_api_t *api, const ref_stats_t *s)
{
    long long decided = s->successful + s->rejected + s->expired;
    double rate =
        decided > 0 ? round(1000.0 * (double)s->successful / (double)decided) / 1000.0 : 0.0;
    json_t *code = json_null(), *link = json_null();
    if (s->referral_code[0]) {
        code = json_string(s->referral_code);
        char *l = cm_xasprintf("%s/r/%s", api->cfg->svc.public_base_url, s->referral_code);
        link = json_string(l);
        free(l);
    }
    json_t *o = json_object();
    set(o, "referral_code", code);
    set(o, "referral_link", link);
    set(o, "total", json_integer(s->total));
    set(o, "pending", json_integer(s->pending));
    set(o, "successful", json_integer(s->successful));
    set(o, "rejected", json_integer(s->rejected));
    set(o, "expired", json_integer(s->expired));
    set(o, "conversion_rate", json_real(rate));
    set(o, "credits", json_integer(s->credits));
    set(o, "rewards_count", json_integer(s->rewards_count));
    /* The funnel: counted clicks on the link → referred signups → successful referrals. */
    set(o, "clicks", json_integer(s->clicks));
    json_t *funnel = json_object();
    set(funnel, "clicks", json_integer(s->clicks));
    set(funnel, "signups", json_integer(s->total));
    set(funnel, "successful", json_integer(s->successful));
    set(o, "funnel", funnel);
    return o;
}

static void on_stats(cm_req_t *rq, void *ctx)
{
    ref_api_t *api = ctx;
    cm_jwt_claims_t claims;
    cm_db_t *db = NULL;
    if (authenticate_or_reply(rq, api, &claims) != 0 || db_or_reply(rq, api, &db) != 0)
        return;
    ref_stats_t s;
    int rc = ref_store_stats(db, claims.sub, &s);
    cm_db_release(db);
    if (rc != 0) {
        reply_store_failure(rq, rc, "stats");
        return;
    }
    /* Read-your-writes: before the registration event arrives, the token's own code. */
    if (!s.referral_code[0] && claims.ref[0])
        snprintf(s.referral_code, sizeof s.referral_code, "%s", claims.ref);
    cm_reply_json(rq, 200, stats_json(api, &s));
}

/* The validated query of a list request. */
typedef struct list_query {
    int limit;
    const char *status; /* NULL for all */
    ref_cursor_t cursor;
    bool has_cursor;
} list_query_t;

/* Parses limit, cursor and (when with_status) status; on a bad one it has
 * replied 400 and returns < 0. */
static int list_query_or_reply(cm_req_t *rq, list_query_t *q, bool with_status)
{
    static const char *const statuses[] = {REF_PENDING, REF_SUCCESSFUL, REF_REJECTED, REF_EXPIRED};
    json_t *errors = json_object();
    const char *v = NULL;
    long long limit = DEFAULT_LIMIT;
    if (cm_req_query_param(rq, "limit", 16, &v) != CM_ENOTFOUND &&
        (!v || cm_strtonum(v, 1, MAX_LIMIT, &limit) != 0))
        cm_errors_add(errors, "limit", "Enter a whole number from 1 to 100.");
    q->limit = (int)limit;
    v = NULL;
    int rc = cm_req_query_param(rq, "cursor", REF_CURSOR_MAX, &v);
    q->has_cursor = rc != CM_ENOTFOUND;
    if (q->has_cursor && (!v || ref_cursor_decode(v, &q->cursor) != 0))
        cm_errors_add(errors, "cursor", "Invalid cursor.");
    v = NULL;
    q->status = NULL;
    if (with_status && cm_req_query_param(rq, "status", 16, &v) != CM_ENOTFOUND) {
        for (size_t i = 0; v && i < 4 && !q->status; i++)
            if (strcmp(v, statuses[i]) == 0)
                q->status = statuses[i];
        if (!q->status)
            cm_errors_add(errors, "status", "Expected pending, successful, rejected or expired.");
    }
    if (json_object_size(errors) > 0) {
        cm_reply_invalid(rq, errors);
        return -1;
    }
    json_decref(errors);
    return 0;
}

/*
 * The two pages (referrals and rewards) are written as text straight into
 * the answer's buffer (cm/jsonwrite.h) rather than built as a jansson tree
 * and dumped: they are the hot answers with the most strings, and the tree
 * was about a third of what a page of 20 cost this service. The bytes are
 * the ones cm_reply_json would send for the same tree.
 */

/* Room for a page of 20 before it is written (one allocation for most). */
#define PAGE_TEXT_ROOM 8192

/* Appends "next": the cursor of the next page, or null on the last one. */
static void put_next(cm_buf_t *b, bool more, const ref_cursor_t *next)
{
    cm_json_put_key(b, "next");
    if (!more || next->created_us < 0 || next->created_us > 253402300799999999LL) {
        cm_buf_puts(b, "null");
        return;
    }
    char text[REF_CURSOR_MAX + 1];
    ref_cursor_encode(next, text);
    (void)cm_json_put_string_or_null(b, text); /* base64url: ASCII, cannot fail */
}

/* Appends ,"key": and the text or null; CM_EINVAL when the text is not UTF-8. */
static int put_field(cm_buf_t *b, const char *key, const char *text)
{
    cm_buf_puts(b, ",");
    cm_json_put_key(b, key);
    return cm_json_put_string_or_null(b, text);
}

/* A page's row writer: appends one row (a ref_referral_t or a ref_reward_t) as an object. */
typedef int (*put_row_fn)(cm_buf_t *b, const void *row);

static int put_referral(cm_buf_t *b, const void *row)
{
    const ref_referral_t *r = row;
    cm_buf_puts(b, "{\"id\":");
    int rc = cm_json_put_string_or_null(b, r->id);
    cm_buf_puts(b, ",\"referred_user\":{\"id\":");
    rc |= cm_json_put_string_or_null(b, r->referred_id);
    rc |= put_field(b, "username", r->referred_username);
    cm_buf_puts(b, "}");
    rc |= put_field(b, "status", r->status);
    rc |= put_field(b, "reason", r->reason);
    rc |= put_field(b, "created_at", r->created_at);
    rc |= put_field(b, "converted_at", r->converted_at[0] ? r->converted_at : NULL);
    cm_buf_puts(b, "}");
    return rc ? CM_EINVAL : 0;
}

static int put_reward(cm_buf_t *b, const void *row)
{
    const ref_reward_t *r = row;
    cm_buf_puts(b, "{\"id\":");
    int rc = cm_json_put_string_or_null(b, r->id);
    rc |= put_field(b, "kind", r->kind);
    cm_buf_puts(b, ",\"amount\":");
    if (r->amount < 0)
        cm_buf_puts(b, "-");
    cm_buf_put_uint(b, r->amount < 0 ? 0ULL - (unsigned long long)r->amount
                                     : (unsigned long long)r->amount);
    rc |= put_field(b, "reason", r->reason ? r->reason : "");
    rc |= put_field(b, "referral_id", r->referral_id[0] ? r->referral_id : NULL);
    rc |= put_field(b, "created_at", r->created_at);
    cm_buf_puts(b, "}");
    return rc ? CM_EINVAL : 0;
}

/*
 * Writes {"results": [...], "next": ...} for n rows of size bytes each and
 * sends it; a stored text that is not UTF-8 is a 500, as a tree jansson
 * refused to build would be.
 */
static void reply_page(cm_req_t *rq, const void *rows, size_t size, size_t n, put_row_fn put,
                       bool more, const ref_cursor_t *next)
{
    cm_buf_t text;
    cm_buf_init(&text);
    cm_buf_reserve(&text, PAGE_TEXT_ROOM);
    cm_buf_puts(&text, "{\"results\":[");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i)
            cm_buf_puts(&text, ",");
        rc = put(&text, (const char *)rows + i * size);
    }
    cm_buf_puts(&text, "],");
    put_next(&text, more, next);
    cm_buf_puts(&text, "}");
    if (rc == 0) {
        cm_reply_raw(rq, 200, "application/json", text.data, text.len);
    } else {
        CM_ERROR(cm_req_id(rq), "referral: a page holds text that is not UTF-8");
        cm_reply_problem(rq, 500, "Internal Server Error", "The server failed to answer.", NULL);
    }
    cm_buf_dispose(&text);
}

static void on_list(cm_req_t *rq, void *ctx)
{
    ref_api_t *api = ctx;
    cm_jwt_claims_t claims;
    list_query_t q;
    cm_db_t *db = NULL;
    if (authenticate_or_reply(rq, api, &claims) != 0 || list_query_or_reply(rq, &q, true) != 0 ||
        db_or_reply(rq, api, &db) != 0)
        return;
    ref_referral_page_t page;
    int rc =
        ref_store_list(db, claims.sub, q.status, q.has_cursor ? &q.cursor : NULL, q.limit, &page);
    cm_db_release(db);
    if (rc != 0) {
        reply_store_failure(rq, rc, "list");
        return;
    }
    reply_page(rq, page.rows, sizeof *page.rows, page.n, put_referral, page.more, &page.next);
    ref_referral_page_dispose(&page);
}

static void on_rewards(cm_req_t *rq, void *ctx)
{
    ref_api_t *api = ctx;
    cm_jwt_claims_t claims;
    list_query_t q;
    cm_db_t *db = NULL;
    if (authenticate_or_reply(rq, api, &claims) != 0 || list_query_or_reply(rq, &q, false) != 0 ||
        db_or_reply(rq, api, &db) != 0)
        return;
    ref_reward_page_t page;
    int rc = ref_store_rewards(db, claims.sub, q.has_cursor ? &q.cursor : NULL, q.limit, &page);
    cm_db_release(db);
    if (rc != 0) {
        reply_store_failure(rq, rc, "rewards");
        return;
    }
    reply_page(rq, page.rows, sizeof *page.rows, page.n, put_reward, page.more, &page.next);
    ref_reward_page_dispose(&page);
}

/* GET /api/referral-stats/daily?days=N (1–90, default 30): the funnel per UTC day. */
static void on_daily(cm_req_t *rq, void *ctx)
{
    ref_api_t *api = ctx;
    cm_jwt_claims_t claims;
    const char *v = NULL;
    long long days = 30;
    if (authenticate_or_reply(rq, api, &claims) != 0)
        return;
    int q = cm_req_query_param(rq, "days", 8, &v);
    if (q != CM_ENOTFOUND && (q != 0 || cm_strtonum(v, 1, REF_MAX_DAYS, &days) != 0)) {
        json_t *errors = json_object();
        cm_errors_add(errors, "days", "Must be a whole number from 1 to 90.");
        cm_reply_invalid(rq, errors);
        return;
    }
    cm_db_t *db = NULL;
    if (db_or_reply(rq, api, &db) != 0)
        return;
    ref_day_t out[REF_MAX_DAYS];
    int rc = ref_store_daily(db, claims.sub, (int)days, out);
    cm_db_release(db);
    if (rc != 0) {
        reply_store_failure(rq, rc, "daily");
        return;
    }
    json_t *list = json_array();
    for (int i = 0; i < (int)days; i++)
        json_array_append_new(list, json_pack("{s:s, s:I, s:I, s:I}", "date", out[i].date, "clicks",
                                              (json_int_t)out[i].clicks, "signups",
                                              (json_int_t)out[i].signups, "successful",
                                              (json_int_t)out[i].successful));
    cm_reply_json(rq, 200, json_pack("{s:o}", "days", list));
}

static bool hex64(const char *s)
{
    if (!s || strlen(s) != 64)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

/* A host name as a Referer carries it: 1–253 of [A-Za-z0-9.:-], or absent. */
static bool host_ok(const char *s)
{
    size_t n = s ? strnlen(s, 254) : 0;
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':'))
            return false;
    }
    return true;
}

/* Reads and validates a click report; on a bad one it has replied 400 and returns < 0. */
static int click_or_reply(cm_req_t *rq, json_t *body, ref_click_t *c)
{
    static const char *const classes[] = {"mobile", "desktop", "other", NULL};
    json_t *errors = json_object();
    json_t *count = json_object_get(body, "count"); /* borrowed */
    c->code = json_string_value(json_object_get(body, "code"));
    c->client_hash = json_string_value(json_object_get(body, "client_hash"));
    c->ua_class = json_string_value(json_object_get(body, "ua_class"));
    c->referrer_host = json_string_value(json_object_get(body, "referrer_host"));
    c->count = json_is_true(count);
    size_t cl = c->code ? strlen(c->code) : 0;
    if (cl == 0 || cl > 16 || strspn(c->code, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") != cl)
        cm_errors_add(errors, "code", "Must be 1-16 upper-case letters or digits.");
    if (!hex64(c->client_hash))
        cm_errors_add(errors, "client_hash", "Must be 64 lower-case hex digits.");
    bool known = false;
    for (size_t i = 0; c->ua_class && classes[i]; i++)
        known = known || strcmp(c->ua_class, classes[i]) == 0;
    if (!known)
        cm_errors_add(errors, "ua_class", "Must be mobile, desktop or other.");
    if (c->referrer_host && !host_ok(c->referrer_host))
        cm_errors_add(errors, "referrer_host", "Must be a host name.");
    if (count && !json_is_boolean(count))
        cm_errors_add(errors, "count", "Must be a boolean.");
    if (json_object_size(errors) > 0) {
        cm_reply_invalid(rq, errors);
        return -1;
    }
    json_decref(errors);
    return 0;
}

/*
 * POST /internal/clicks: the gateway reports a click on /r/<code> (after
 * leaving out HEAD and crawlers). 200 {"counted": bool} (false: the same
 * client within the hour, or count false), 404 for an unknown code.
 */
static void on_click(cm_req_t *rq, void *ctx)
{
    ref_api_t *api = ctx;
    json_t *body = NULL;
    ref_click_t c;
    cm_db_t *db = NULL;
    if (cm_req_json_or_reply(rq, &body) != 0)
        return;
    if (click_or_reply(rq, body, &c) != 0 || db_or_reply(rq, api, &db) != 0) {
        json_decref(body);
        return;
    }
    bool counted = false;
    int rc = ref_store_click(db, &c, &counted);
    cm_db_release(db);
    json_decref(body);
    if (rc == CM_ENOTFOUND) {
        cm_reply_problem(rq, 404, "Not Found", "No such referral code.", NULL);
    } else if (rc != 0) {
        CM_WARN(cm_req_id(rq), "referral: click: %s", cm_strerror(rc));
        cm_reply_problem(rq, 503, "Service unavailable", "Try again shortly.", NULL);
    } else {
        cm_reply_json(rq, 200, json_pack("{s:b}", "counted", counted));
    }
}

/* GET /api/leaderboard: this month's top referrers, from the cache only (leaderboard.h). */
static void on_leaderboard(cm_req_t *rq, void *ctx)
{
    ref_api_t *api = ctx;
    cm_jwt_claims_t claims;
    if (authenticate_or_reply(rq, api, &claims) != 0)
        return;
    json_t *body = ref_board_json(api->board);
    if (!body) {
        cm_reply_problem(rq, 503, "Service unavailable",
                         "The leaderboard is not ready yet; try again shortly.", NULL);
        return;
    }
    cm_reply_json(rq, 200, body);
}

/*
 * Validates a PATCH /api/me body strictly: "show_on_leaderboard" (a
 * boolean) is the one field and it is required; any other member is named
 * as unknown. On a bad body it has replied 400 and returns < 0.
 */
static int optin_or_reply(cm_req_t *rq, json_t *body, bool *show)
{
    json_t *errors = json_object();
    const char *key; /* set by json_object_foreach */
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (strcmp(key, "show_on_leaderboard") != 0)
            cm_errors_add(errors, key, "Unknown field.");
    }
    v = json_object_get(body, "show_on_leaderboard"); /* borrowed */
    if (!v)
        cm_errors_add(errors, "show_on_leaderboard", "This field is required.");
    else if (!json_is_boolean(v))
        cm_errors_add(errors, "show_on_leaderboard", "Must be true or false.");
    if (json_object_size(errors) > 0) {
        cm_reply_invalid(rq, errors);
        return -1;
    }
    json_decref(errors);
    *show = json_is_true(v);
    return 0;
}

/* PATCH /api/me {"show_on_leaderboard": bool}: 200 with the stored preference. */
static void on_patch_me(cm_req_t *rq, void *ctx)
{
    ref_api_t *api = ctx;
    cm_jwt_claims_t claims;
    json_t *body = NULL;
    cm_db_t *db = NULL;
    bool show = false;
    if (authenticate_or_reply(rq, api, &claims) != 0 || cm_req_json_or_reply(rq, &body) != 0)
        return;
    int bad = optin_or_reply(rq, body, &show);
    json_decref(body);
    if (bad != 0 || db_or_reply(rq, api, &db) != 0)
        return;
    int rc = ref_store_set_optin(db, claims.sub, show);
    cm_db_release(db);
    if (rc != 0) {
        reply_store_failure(rq, rc, "opt-in");
        return;
    }
    ref_board_set_show(api->board, claims.sub, show);
    cm_reply_json(rq, 200, json_pack("{s:b}", "show_on_leaderboard", show));
}

const cm_route_t ref_routes[] = {
    {"POST", "/internal/clicks", on_click, CM_ROUTE_NO_STORE},
    {"GET", "/api/referral-stats/daily", on_daily, CM_ROUTE_NO_STORE},
    {"GET", "/api/referral-stats", on_stats, CM_ROUTE_NO_STORE},
    {"GET", "/api/referrals", on_list, CM_ROUTE_NO_STORE},
    {"GET", "/api/rewards", on_rewards, CM_ROUTE_NO_STORE},
    {"GET", "/api/leaderboard", on_leaderboard, CM_ROUTE_NO_STORE},
    {"PATCH", "/api/me", on_patch_me, CM_ROUTE_NO_STORE},
};
const size_t ref_routes_count = sizeof ref_routes / sizeof ref_routes[0];

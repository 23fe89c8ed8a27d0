#include "routes.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "cm/jsonscan.h"
#include "cm/log.h"
#include "export.h"
#include "jwks.h"
#include "pages.h"

static void on_forward(cm_req_t *rq, void *ctx);
static void on_preflight(cm_req_t *rq, void *ctx);

/*
 * The public API. resend-verification sends mail, so it shares the tight
 * forgot-password bucket; a password change checks a password, so it shares
 * login's; token refresh and reset are guarded by 256-bit secrets and count
 * as "other". Account answers are never stored
 * (no-store); the JWKS is public and meant to be cached.
 */
#define NS GW_CACHE_NO_STORE
#define PUB GW_CACHE_PUBLIC
#define UP GW_CACHE_UPSTREAM
#define GW_ROUTE_LIST(X)                                                                           \
    X("POST", "/api/register", GW_UP_AUTH, false, GW_RL_REGISTER, NS)                              \
    X("POST", "/api/login", GW_UP_AUTH, false, GW_RL_LOGIN, NS)                                    \
    X("POST", "/api/token/refresh", GW_UP_AUTH, false, GW_RL_OTHER, NS)                            \
    X("POST", "/api/logout", GW_UP_AUTH, false, GW_RL_OTHER, NS)                                   \
    X("POST", "/api/forgot-password", GW_UP_AUTH, false, GW_RL_FORGOT, NS)                         \
    X("POST", "/api/reset-password", GW_UP_AUTH, false, GW_RL_OTHER, NS)                           \
    X("POST", "/api/verify-email", GW_UP_AUTH, false, GW_RL_OTHER, NS)                             \
    X("POST", "/api/resend-verification", GW_UP_AUTH, true, GW_RL_FORGOT, NS)                      \
    X("GET", "/api/me", GW_UP_AUTH, true, GW_RL_OTHER, NS)                                         \
    X("GET", "/.well-known/jwks.json", GW_UP_AUTH, false, GW_RL_OTHER, PUB)                        \
    X("GET", "/api/referrals", GW_UP_REFERRAL, true, GW_RL_OTHER, UP)                              \
    X("GET", "/api/referral-stats", GW_UP_REFERRAL, true, GW_RL_OTHER, UP)                         \
    X("GET", "/api/referral-stats/daily", GW_UP_REFERRAL, true, GW_RL_OTHER, UP)                   \
    X("GET", "/api/rewards", GW_UP_REFERRAL, true, GW_RL_OTHER, UP)                                \
    X("POST", "/api/email", GW_UP_AUTH, true, GW_RL_FORGOT, NS)                                    \
    X("POST", "/api/email/confirm", GW_UP_AUTH, false, GW_RL_OTHER, NS)                            \
    X("POST", "/api/email/cancel", GW_UP_AUTH, false, GW_RL_OTHER, NS)                             \
    X("GET", "/api/sessions", GW_UP_AUTH, true, GW_RL_OTHER, NS)                                   \
    X("POST", "/api/sessions/revoke-others", GW_UP_AUTH, true, GW_RL_OTHER, NS)                    \
    X("DELETE", "/api/sessions/*", GW_UP_AUTH, true, GW_RL_OTHER, NS)                              \
    X("POST", "/api/password", GW_UP_AUTH, true, GW_RL_LOGIN, NS)                                  \
    X("DELETE", "/api/me", GW_UP_AUTH, true, GW_RL_LOGIN, NS)                                      \
    X("GET", "/api/me/export", GW_UP_AUTH, true, GW_RL_OTHER, NS)                                  \
    X("GET", "/api/leaderboard", GW_UP_REFERRAL, true, GW_RL_OTHER, UP)                            \
    X("PATCH", "/api/me", GW_UP_REFERRAL, true, GW_RL_OTHER, UP)

/*
 * The pages for people (pages.h): HTML, served here rather than forwarded,
 * so they are not in the API table above (no CORS, no Bearer, forms only).
 */
static const cm_route_t PAGE_ROUTES[] = {
    {"GET", "/verify-email", gw_page_verify, CM_ROUTE_NO_STORE},
    {"POST", "/verify-email", gw_page_verify_post, CM_ROUTE_NO_STORE},
    {"GET", "/reset-password", gw_page_reset, CM_ROUTE_NO_STORE},
    {"POST", "/reset-password", gw_page_reset_post, CM_ROUTE_NO_STORE},
    {"GET", "/signup", gw_page_signup, CM_ROUTE_NO_STORE},
    {"POST", "/signup", gw_page_signup_post, CM_ROUTE_NO_STORE},
    {"GET", "/r/*", gw_page_referral, CM_ROUTE_NO_STORE},
    {"GET", "/confirm-email", gw_page_email_confirm, CM_ROUTE_NO_STORE},
    {"POST", "/confirm-email", gw_page_email_confirm_post, CM_ROUTE_NO_STORE},
    {"GET", "/cancel-email-change", gw_page_email_cancel, CM_ROUTE_NO_STORE},
    {"POST", "/cancel-email-change", gw_page_email_cancel_post, CM_ROUTE_NO_STORE},
};
#define NPAGES (sizeof PAGE_ROUTES / sizeof PAGE_ROUTES[0])

#define AS_POLICY(m, p, up, tok, rl, cache) {m, p, up, tok, rl, cache},
#define AS_CM_ROUTE(m, p, up, tok, rl, cache)                                                      \
    {m, p, on_forward, (cache) == GW_CACHE_NO_STORE ? CM_ROUTE_NO_STORE : 0u},

static const gw_route_t ROUTES[] = {GW_ROUTE_LIST(AS_POLICY)};
static const cm_route_t CM_ROUTES[] = {GW_ROUTE_LIST(AS_CM_ROUTE)};
#define NROUTES (sizeof ROUTES / sizeof ROUTES[0])
#undef NS
#undef PUB
#undef UP

const gw_route_t *gw_routes(size_t *n)
{
    *n = NROUTES;
    return ROUTES;
}

int gw_route_find(const char *method, const char *path, const gw_route_t **out, cm_buf_t *allow)
{
    const cm_route_t *r = NULL;
    int rc = cm_route_find(CM_ROUTES, NROUTES, method, path, &r, allow);
    if (rc != 0)
        return rc;
    *out = &ROUTES[r - CM_ROUTES];
    return 0;
}

/* ---- small checks ------------------------------------------------------------ */

bool gw_query_valid(const char *q)
{
    if (!q)
        return true;
    size_t len = strnlen(q, GW_MAX_QUERY + 1);
    if (len > GW_MAX_QUERY)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)q[i];
        if (c <= 0x20 || c >= 0x7f || c == '#')
            return false;
    }
    return true;
}

static bool origin_allowed(const gw_t *gw, const char *origin)
{
    for (size_t i = 0; origin && i < gw->cfg->cors_origins.n; i++)
        if (strcmp(origin, gw->cfg->cors_origins.items[i]) == 0)
            return true;
    return false;
}

/*
 * CORS headers for an allowed Origin; anyone else gets none. With CORS on,
 * every answer varies by Origin, so a cache (the JWKS is cacheable) never
 * hands one origin's answer to another.
 */
static void add_cors(const gw_t *gw, cm_req_t *rq)
{
    if (gw->cfg->cors_origins.n == 0)
        return;
    cm_reply_header(rq, "Vary", "Origin");
    const char *origin = cm_req_header(rq, "Origin");
    if (!origin_allowed(gw, origin))
        return;
    cm_reply_header(rq, "Access-Control-Allow-Origin", origin);
    cm_reply_header(rq, "Access-Control-Expose-Headers",
                    "X-Request-Id, Retry-After, WWW-Authenticate");
}

/* Writes a non-negative number of seconds as decimal text into buf[24]; returns buf. */
static const char *seconds_text(int64_t s, char buf[24])
{
    char tmp[24];
    size_t n = 0;
    uint64_t v = s > 0 ? (uint64_t)s : 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && n < sizeof tmp);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
    return buf;
}

/* ---- edge checks: each replies and returns < 0 when the request stops here ----- */

static int rate_limit_or_reply(gw_t *gw, cm_req_t *rq, const gw_route_t *r, const char *ip)
{
    int64_t retry = 0;
    if (!gw->limiter || gw_limiter_take(gw->limiter, r->rate_class, ip, cm_now_mono_ms(), &retry))
        return 0;
    const char *cls = gw_rate_class_name(r->rate_class);
    cm_metric_add(gw->rate_limited, &cls, 1);
    char buf[24];
    cm_reply_header(rq, "Retry-After", seconds_text(retry, buf));
    cm_reply_problem(rq, 429, "Too many requests", "Slow down and try again later.", NULL);
    return -1;
}

/* A JWKS document of a few keys is ~200 bytes a key; this leaves room for many. */
#define GW_JWKS_MAX_BYTES (64 * 1024)

/* Asks auth for its JWKS document and adds the keys we do not know yet. */
static int fetch_jwks(gw_t *gw, const char *rid)
{
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    cm_buf_t line;
    cm_buf_init(&line);
    cm_buf_puts(&line, "X-Request-Id: ");
    cm_buf_puts(&line, rid);
    h = curl_slist_append(h, line.data);
    cm_buf_dispose(&line);
    gw_fwd_request_t f = {.method = "GET", .path = "/.well-known/jwks.json", .headers = h};
    gw_fwd_response_t resp;
    int rc = gw_upstream_forward(gw->upstreams[GW_UP_AUTH], &f, &resp);
    int added = CM_EUNAVAIL;
    /* Auth's answer is parsed on a worker thread (100 KiB of stack): bound the recursion. */
    if (rc == 0 && resp.status == 200 &&
        cm_json_scan(resp.body.data, resp.body.len, GW_JWKS_MAX_BYTES, CM_JSON_MAX_DEPTH_UPSTREAM,
                     NULL) == 0) {
        json_t *doc = json_loadb(resp.body.data, resp.body.len, 0, NULL);
        added = gw_jwks_add(gw->verifier, doc);
        json_decref(doc);
    }
    gw_fwd_response_dispose(&resp);
    curl_slist_free_all(h);
    return added;
}

/*
 * A token failed: perhaps auth rotated to a key we have not seen. Fetch its
 * JWKS, but at most once per interval whatever the number of failing
 * tokens (the compare-and-swap lets exactly one thread do it). True when
 * new keys arrived, so the token deserves a second look.
 */
static bool refresh_keys(gw_t *gw, const char *rid)
{
    long long now = (long long)cm_now_mono_ms();
    long long next = atomic_load(&gw->jwks_next_ms);
    if (!gw->cfg->jwks_refresh || now < next ||
        !atomic_compare_exchange_strong(&gw->jwks_next_ms, &next, now + GW_JWKS_MIN_INTERVAL_MS))
        return false;
    int added = fetch_jwks(gw, rid);
    const char *result = added > 0 ? "new_keys" : added == 0 ? "no_new_keys" : "failed";
    cm_metric_add(gw->jwks_fetches, &result, 1);
    if (added > 0)
        CM_INFO(rid, "added %d key(s) from auth's JWKS", added);
    else if (added == 0)
        CM_INFO(rid, "auth's JWKS brought no new key");
    else if (added < 0)
        CM_WARN(rid, "could not fetch auth's JWKS: %s", cm_strerror(added));
    return added > 0;
}

static int token_or_reply(gw_t *gw, cm_req_t *rq)
{
    const char *hdr = cm_req_header(rq, "Authorization");
    const char *tok = NULL;
    size_t len = 0;
    cm_jwt_claims_t claims;
    if (!hdr || cm_jwt_from_header(hdr, &tok, &len) != 0) {
        cm_metric_add(gw->edge_auth_failures, NULL, 1);
        cm_reply_problem(rq, 401, "Authentication required",
                         "Send an access token: Authorization: Bearer <token>.", NULL);
        return -1;
    }
    int rc = cm_jwt_verify(gw->verifier, tok, len, &claims);
    if (rc != 0 && refresh_keys(gw, cm_req_id(rq)))
        rc = cm_jwt_verify(gw->verifier, tok, len, &claims);
    if (rc != 0) {
        cm_metric_add(gw->edge_auth_failures, NULL, 1);
        cm_reply_problem(rq, 401, "Invalid token", "The access token is invalid or expired.", NULL);
        return -1;
    }
    return 0;
}

/* True when the client announced body bytes: a non-zero Content-Length or a Transfer-Encoding. */
static bool announces_body(cm_req_t *rq)
{
    const char *cl = cm_req_header(rq, "Content-Length");
    long long n = 0;
    if (cm_req_header(rq, "Transfer-Encoding"))
        return true;
    return cl && (cm_strtonum(cl, 0, LLONG_MAX, &n) != 0 || n > 0);
}

/*
 * JSON-only bodies: 415 for another type, 413 over the cap, 400 when not a
 * JSON object, with the same answers the services give (cm_http's reader).
 * The raw bytes are forwarded after the same parse (duplicate keys refused)
 * that the services use, so both sides read the same document. A request
 * that announces no body and no type is forwarded without one.
 */
static int body_or_reply(cm_req_t *rq, cm_slice_t *body)
{
    body->ptr = NULL;
    body->len = 0;
    if (!cm_req_header(rq, "Content-Type") && !announces_body(rq))
        return 0;
    json_t *doc = NULL;
    int rc = cm_req_json_raw_or_reply(rq, body, &doc);
    json_decref(doc);
    return rc;
}

/* ---- forwarding ------------------------------------------------------------------ */

static const char *req_header(const void *src, const char *name)
{
    return cm_req_header(src, name);
}

/* A path segment the gateway forwards as the client sent it (a route's "*": an id). */
#define GW_MAX_SEGMENT 64

/* True when the route's last segment is "*" (it matched one segment of the client's path). */
static bool has_wildcard(const gw_route_t *r)
{
    size_t n = strlen(r->path);
    return n >= 2 && r->path[n - 1] == '*' && r->path[n - 2] == '/';
}

/*
 * The path sent upstream: the route's own path, with the client's trailing
 * slash if any. A "*" route sends the client's path, whose last segment is
 * then checked to be a plain token (ids are UUIDs): NULL when it is not.
 */
static const char *upstream_path(cm_req_t *rq, const gw_route_t *r)
{
    const char *p = cm_req_path(rq);
    size_t len = strlen(p);
    if (has_wildcard(r)) {
        size_t base = strlen(r->path) - 1, seg = len - base;
        if (len > 0 && p[len - 1] == '/')
            seg--;
        bool ok = seg > 0 && seg <= GW_MAX_SEGMENT;
        for (size_t i = 0; ok && i < seg; i++)
            ok = strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.",
                        p[base + i]) != NULL;
        return ok ? p : NULL;
    }
    if (len == 0 || p[len - 1] != '/')
        return r->path;
    size_t rlen = strlen(r->path);
    char *out = cm_arena_alloc(cm_req_arena(rq), rlen + 2);
    memcpy(out, r->path, rlen);
    out[rlen] = '/';
    return out;
}

static void count_error(gw_t *gw, const gw_upstream_t *u, const char *kind)
{
    const char *labels[2] = {gw_upstream_name(u), kind};
    cm_metric_add(gw->upstream_errors, labels, 1);
}

static bool has_body(long status)
{
    return !(status == 204 || status == 304 || (status >= 100 && status < 200));
}

/* A transport failure as problem+json: 503 unreachable or saturated, 504 too slow, 502 broken. */
static void reply_failure(gw_t *gw, cm_req_t *rq, const gw_upstream_t *u, int rc)
{
    static const struct {
        int rc, status;
        const char *kind, *title, *detail;
    } map[] = {
        {CM_EUNAVAIL, 503, "unavailable", "Service unavailable",
         "A service behind the gateway is not reachable; try again shortly."},
        {CM_EBUSY, 503, "saturated", "Service unavailable",
         "A service behind the gateway is overloaded; try again shortly."},
        {CM_ETIMEDOUT, 504, "timeout", "Gateway timeout",
         "A service behind the gateway did not answer in time."},
        {CM_ETOOBIG, 502, "too_big", "Bad gateway",
         "A service behind the gateway gave no usable answer."},
    };
    size_t i = 0, n = sizeof map / sizeof map[0];
    while (i < n - 1 && map[i].rc != rc)
        i++; /* anything unlisted is a broken answer, like too_big */
    const char *kind = map[i].rc == rc ? map[i].kind : "bad_answer";
    count_error(gw, u, kind);
    CM_WARN(cm_req_id(rq), "upstream %s: %s (%s)", gw_upstream_name(u), kind, cm_strerror(rc));
    cm_reply_problem(rq, map[i].status, map[i].title, map[i].detail, NULL);
}

/*
 * The upstream's own headers that pass: Retry-After and WWW-Authenticate
 * (API.md promises them on 429/503 and 401, so they are filled in when the
 * upstream left them out) and, on routes that may be cached, Cache-Control.
 */
static void relay_headers(cm_req_t *rq, const gw_route_t *r, const gw_fwd_response_t *resp)
{
    long st = resp->status;
    if (resp->retry_after[0])
        cm_reply_header(rq, "Retry-After", resp->retry_after);
    else if (st == 429 || st == 503)
        cm_reply_header(rq, "Retry-After", "1");
    if (resp->www_authenticate[0])
        cm_reply_header(rq, "WWW-Authenticate", resp->www_authenticate);
    else if (st == 401)
        cm_reply_header(rq, "WWW-Authenticate", "Bearer");
    gw_cache_t cache = r->cache;
    if (cache == GW_CACHE_NO_STORE)
        return; /* cm_http adds no-store */
    if (st >= 400)
        cm_reply_header(rq, "Cache-Control", "no-store"); /* an error is never cached */
    else if (resp->cache_control[0])
        cm_reply_header(rq, "Cache-Control", resp->cache_control);
    else if (cache == GW_CACHE_PUBLIC && st == 200)
        cm_reply_header(rq, "Cache-Control", GW_PUBLIC_CACHE);
}

/* Relays the upstream answer, or turns a transport failure into problem+json. */
static void relay(gw_t *gw, cm_req_t *rq, const gw_route_t *r, const gw_upstream_t *u, int rc,
                  const gw_fwd_response_t *resp)
{
    if (rc == 0 && (resp->status < 200 || resp->status > 599))
        rc = CM_EIO; /* 1xx as a final answer, or nonsense */
    if (rc != 0) {
        reply_failure(gw, rq, u, rc);
        return;
    }
    relay_headers(rq, r, resp);
    if (!has_body(resp->status) || (resp->body.len == 0 && !resp->content_type[0]))
        cm_reply_empty(rq, (int)resp->status);
    else
        cm_reply_raw(rq, (int)resp->status,
                     resp->content_type[0] ? resp->content_type : "application/octet-stream",
                     resp->body.data, resp->body.len);
}

static void forward(gw_t *gw, cm_req_t *rq, const gw_route_t *r, cm_slice_t body, const char *ip,
                    const char *xff)
{
    const char *path = upstream_path(rq, r);
    if (!path) {
        cm_reply_problem(rq, 404, "Not Found", "No such resource.", NULL);
        return;
    }
    gw_fwd_request_t f = {
        .method = r->method,
        .path = path,
        .query = cm_req_query(rq),
        .body = body,
        .headers = gw_upstream_headers(req_header, rq, cm_req_id(rq), xff, ip),
    };
    gw_upstream_t *u = gw->upstreams[r->upstream];
    gw_fwd_response_t resp;
    int rc = gw_upstream_forward(u, &f, &resp);
    relay(gw, rq, r, u, rc, &resp);
    gw_fwd_response_dispose(&resp);
    curl_slist_free_all(f.headers);
}

static void edge(gw_t *gw, cm_req_t *rq)
{
    const gw_route_t *r = NULL;
    if (gw_route_find(cm_req_method(rq), cm_req_path(rq), &r, NULL) != 0) {
        cm_reply_problem(rq, 404, "Not Found", "No such resource.", NULL);
        return;
    }
    add_cors(gw, rq);
    const char *ip = NULL, *xff = NULL;
    gw_client_addr(cm_req_arena(rq), cm_req_peer(rq), cm_req_header(rq, "X-Forwarded-For"),
                   &gw->cfg->trusted_proxies, &ip, &xff);
    if (rate_limit_or_reply(gw, rq, r, ip) != 0)
        return;
    if (r->needs_token && token_or_reply(gw, rq) != 0)
        return;
    cm_slice_t body = {NULL, 0};
    bool may_have_body = strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0;
    if (may_have_body && body_or_reply(rq, &body) != 0)
        return;
    if (!gw_query_valid(cm_req_query(rq))) {
        cm_reply_problem(rq, 400, "Malformed request", "The query string is not valid.", NULL);
        return;
    }
    if (gw_export_route(r)) /* gathered here from auth and referral (export.h) */
        gw_export(gw, rq, ip, xff);
    else
        forward(gw, rq, r, body, ip, xff);
}

static void on_forward(cm_req_t *rq, void *ctx)
{
    edge(ctx, rq);
}

/* ---- CORS preflight -------------------------------------------------------------- */

static void on_preflight(cm_req_t *rq, void *ctx)
{
    gw_t *gw = ctx;
    const char *origin = cm_req_header(rq, "Origin");
    const char *want = cm_req_header(rq, "Access-Control-Request-Method");
    const gw_route_t *r = NULL;
    bool known = want && gw_route_find(want, cm_req_path(rq), &r, NULL) == 0;
    if (!origin_allowed(gw, origin) || !known) {
        cm_reply_problem(rq, 403, "Forbidden", "This cross-origin request is not allowed.", NULL);
        return;
    }
    cm_reply_header(rq, "Access-Control-Allow-Origin", origin);
    cm_reply_header(rq, "Vary", "Origin");
    cm_reply_header(rq, "Access-Control-Allow-Methods", r->method);
    cm_reply_header(rq, "Access-Control-Allow-Headers",
                    "Authorization, Content-Type, X-Request-Id");
    cm_reply_header(rq, "Access-Control-Max-Age", "600");
    cm_reply_empty(rq, 204);
}

/* ---- the table for cm_http ------------------------------------------------------- */

cm_route_t *gw_http_routes_new(bool cors, size_t *n)
{
    cm_route_t *t = cm_xcalloc(NROUTES * 2 + NPAGES, sizeof *t);
    memcpy(t, CM_ROUTES, sizeof CM_ROUTES);
    memcpy(t + NROUTES, PAGE_ROUTES, sizeof PAGE_ROUTES);
    *n = NROUTES + NPAGES;
    for (size_t i = 0; cors && i < NROUTES; i++) {
        bool seen = false;
        for (size_t j = NROUTES; j < *n; j++)
            seen = seen || strcmp(t[j].path, ROUTES[i].path) == 0;
        if (!seen)
            t[(*n)++] = (cm_route_t){"OPTIONS", ROUTES[i].path, on_preflight, 0};
    }
    return t;
}

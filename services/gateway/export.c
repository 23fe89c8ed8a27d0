/* export.c — GET /api/me/export gathered from auth and referral (see export.h). */
#include "export.h"

#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "cm/jsonscan.h"
#include "cm/log.h"
#include "cm/util.h"

#define EXPORT_PATH "/api/me/export"
#define PAGE_LIMIT "limit=100"
/* A referral cursor is base64url of "<microseconds>.<uuid>": well under this. */
#define CURSOR_MAX 128

bool gw_export_route(const gw_route_t *r)
{
    return strcmp(r->method, "GET") == 0 && strcmp(r->path, EXPORT_PATH) == 0;
}

/* What one export needs across its upstream calls; everything borrowed. */
typedef struct export_ctx {
    gw_t *gw;
    cm_req_t *rq;
    struct curl_slist *headers;
    bool replied; /* an error answer went out already */
} export_ctx_t;

static const char *req_header(const void *src, const char *name)
{
    return cm_req_header(src, name);
}

/* A transport failure: 503 unreachable or saturated, 504 too slow, 502 anything else. */
static void reply_transport(export_ctx_t *x, const char *upstream, int rc)
{
    x->replied = true;
    CM_WARN(cm_req_id(x->rq), "export: upstream %s: %s", upstream, cm_strerror(rc));
    if (rc == CM_EUNAVAIL || rc == CM_EBUSY) {
        cm_reply_header(x->rq, "Retry-After", "1");
        cm_reply_problem(x->rq, 503, "Service unavailable",
                         "A service behind the gateway is not reachable; try again shortly.", NULL);
    } else if (rc == CM_ETIMEDOUT) {
        cm_reply_problem(x->rq, 504, "Gateway timeout",
                         "A service behind the gateway did not answer in time.", NULL);
    } else {
        cm_reply_problem(x->rq, 502, "Bad gateway",
                         "A service behind the gateway gave no usable answer.", NULL);
    }
}

/* An upstream's own refusal (401 for a deleted subject, 503 ...) passes as it came. */
static void relay_refusal(export_ctx_t *x, const gw_fwd_response_t *resp)
{
    x->replied = true;
    if (resp->status == 401)
        cm_reply_header(x->rq, "WWW-Authenticate", "Bearer");
    if (resp->retry_after[0])
        cm_reply_header(x->rq, "Retry-After", resp->retry_after);
    cm_reply_raw(x->rq, (int)resp->status,
                 resp->content_type[0] ? resp->content_type : "application/problem+json",
                 resp->body.data, resp->body.len);
}

/* GET path?query upstream; a JSON object on 200 (new reference), else NULL after replying. */
static json_t *get_json(export_ctx_t *x, gw_upstream_id_t up, const char *path, const char *query)
{
    gw_upstream_t *u = x->gw->upstreams[up];
    gw_fwd_request_t f = {.method = "GET", .path = path, .query = query, .headers = x->headers};
    gw_fwd_response_t resp;
    json_t *doc = NULL;
    int rc = gw_upstream_forward(u, &f, &resp);
    if (rc == 0 && resp.status >= 400 && resp.status <= 599 && resp.status != 500) {
        relay_refusal(x, &resp);
    } else if (rc == 0 && resp.status == 200 &&
               cm_json_scan(resp.body.data, resp.body.len, GW_MAX_RESPONSE,
                            CM_JSON_MAX_DEPTH_UPSTREAM, NULL) == 0) {
        doc = json_loadb(resp.body.data, resp.body.len, 0, NULL);
        if (!json_is_object(doc)) {
            json_decref(doc);
            doc = NULL;
        }
    }
    if (!doc && !x->replied)
        reply_transport(x, gw_upstream_name(u), rc != 0 ? rc : CM_EIO);
    gw_fwd_response_dispose(&resp);
    return doc;
}

/* A cursor fit to go back into a query string: base64url, bounded. */
static bool cursor_ok(const char *s)
{
    size_t n = s ? strnlen(s, CURSOR_MAX + 1) : 0;
    return n > 0 && n <= CURSOR_MAX &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == n;
}

/* Referrals name the referred account: its id and name are that account's data. */
static void strip_other_accounts(json_t *row)
{
    json_object_del(row, "referred_user");
}

/* Every page of a referral list into a new array; NULL after replying on failure. */
static json_t *all_pages(export_ctx_t *x, const char *path)
{
    json_t *all = json_array();
    char *query = cm_xstrdup(PAGE_LIMIT);
    for (int page = 0; page < GW_EXPORT_MAX_PAGES; page++) {
        json_t *doc = get_json(x, GW_UP_REFERRAL, path, query);
        json_t *rows = json_object_get(doc, "results"); /* borrowed */
        json_t *next = json_object_get(doc, "next");    /* borrowed */
        bool ok = doc && json_is_array(rows) &&
                  (json_is_null(next) || cursor_ok(json_string_value(next)));
        size_t i;
        json_t *row;
        json_array_foreach(ok ? rows : NULL, i, row)
        {
            strip_other_accounts(row);
            json_array_append(all, row);
        }
        free(query);
        query = ok && !json_is_null(next)
                    ? cm_xasprintf(PAGE_LIMIT "&cursor=%s", json_string_value(next))
                    : NULL;
        json_decref(doc);
        if (!ok) {
            if (!x->replied)
                reply_transport(x, "referral", CM_EIO);
            json_decref(all);
            return NULL;
        }
        if (!query)
            return all;
    }
    free(query);
    json_decref(all);
    CM_WARN(cm_req_id(x->rq), "export: %s has more than %d pages", path, GW_EXPORT_MAX_PAGES);
    reply_transport(x, "referral", CM_ETOOBIG);
    return NULL;
}

/* The subject of the (already verified) Bearer token into sub. */
static bool token_subject(gw_t *gw, cm_req_t *rq, char sub[64])
{
    const char *hdr = cm_req_header(rq, "Authorization");
    const char *tok = NULL;
    size_t len = 0;
    cm_jwt_claims_t claims;
    if (!hdr || cm_jwt_from_header(hdr, &tok, &len) != 0 ||
        cm_jwt_verify(gw->verifier, tok, len, &claims) != 0)
        return false;
    snprintf(sub, 64, "%s", claims.sub);
    return true;
}

/* Auth's part, checked to be about the token's own subject. */
static json_t *auth_part(export_ctx_t *x)
{
    char sub[64];
    json_t *doc = get_json(x, GW_UP_AUTH, EXPORT_PATH, NULL);
    const char *id = json_string_value(json_object_get(json_object_get(doc, "user"), "id"));
    if (doc && (!json_is_array(json_object_get(doc, "sessions")) || !id ||
                !token_subject(x->gw, x->rq, sub) || strcmp(id, sub) != 0)) {
        CM_ERROR(cm_req_id(x->rq), "export: auth's answer is not about the token's subject");
        json_decref(doc);
        doc = NULL;
        reply_transport(x, "auth", CM_EIO);
    }
    return doc;
}

void gw_export(gw_t *gw, cm_req_t *rq, const char *ip, const char *xff)
{
    export_ctx_t x = {.gw = gw, .rq = rq};
    x.headers = gw_upstream_headers(req_header, rq, cm_req_id(rq), xff, ip);
    json_t *out = auth_part(&x);
    json_t *referrals = out ? all_pages(&x, "/api/referrals") : NULL;
    json_t *rewards = referrals ? all_pages(&x, "/api/rewards") : NULL;
    if (rewards) {
        char at[32];
        cm_format_time(cm_now_us(), at);
        json_object_set_new(out, "referrals", referrals);
        json_object_set_new(out, "rewards", rewards);
        json_object_set_new(out, "exported_at", json_string(at));
        cm_reply_header(rq, "Content-Disposition", "attachment; filename=\"linktr-export.json\"");
        cm_reply_json(rq, 200, out);
        out = NULL; /* cm_reply_json took it */
    } else {
        json_decref(referrals);
    }
    json_decref(out);
    curl_slist_free_all(x.headers);
}

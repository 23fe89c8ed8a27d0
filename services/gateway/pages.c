/* pages.c — the HTML pages for people (see pages.h). */
#include "pages.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <civetweb.h>
#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#include "cm/jsonscan.h"
#include "cm/log.h"
#include "gateway.h"

struct gw_pages {
    const gw_config_t *cfg; /* borrowed */
    uint8_t csrf_key[crypto_auth_hmacsha256_KEYBYTES];
    uint8_t click_key[crypto_auth_hmacsha256_KEYBYTES];
    char origin[256]; /* PUBLIC_BASE_URL's scheme://host[:port] */
    char *csp;        /* the pages' Content-Security-Policy */
    char *signup_url; /* where /r/<code> sends people, without the code */
    bool secure;      /* PUBLIC_BASE_URL is https: cookies get Secure */
};

/* Small on purpose: readable on a phone, no external asset, one hashed inline block. */
static const char CSS[] =
    "body{font:17px/1.5 system-ui,sans-serif;margin:0;background:#f6f6f4;color:#1d1d1b}"
    "main{max-width:26rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:12px;"
    "box-shadow:0 1px 4px rgba(0,0,0,.08)}"
    "h1{font-size:1.4rem;margin:0 0 1rem}"
    "label{display:block;margin:1rem 0 .3rem;font-weight:600}"
    "input{box-sizing:border-box;width:100%;padding:.7rem;font-size:1rem;border:1px solid #999;"
    "border-radius:8px}"
    "button{margin-top:1.4rem;width:100%;padding:.8rem;font-size:1.05rem;border:0;"
    "border-radius:8px;background:#1f5f3f;color:#fff;cursor:pointer}"
    ".err{color:#a4161a;margin:.3rem 0 0}.note{color:#555;font-size:.95rem}"
    ".box{padding:.8rem;border-radius:8px;background:#fdecea;color:#a4161a}"
    ".ok{padding:.8rem;border-radius:8px;background:#e7f4ec;color:#1f5f3f}";

/* ---- set-up ----------------------------------------------------------------------- */

static void derive_key(const char *secret, const char *label, uint8_t out[32])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)label, strlen(label));
    crypto_auth_hmacsha256_final(&st, out);
}

/* scheme://host[:port] of a base URL: everything before the first '/' after "://". */
static void origin_of(const char *base, char out[256])
{
    const char *p = strstr(base, "://");
    const char *end = p ? strchr(p + 3, '/') : NULL;
    size_t n = end ? (size_t)(end - base) : strlen(base);
    if (n >= 256)
        n = 255;
    memcpy(out, base, n);
    out[n] = '\0';
}

static char *make_csp(void)
{
    uint8_t h[crypto_hash_sha256_BYTES];
    char b64[sodium_base64_ENCODED_LEN(sizeof h, sodium_base64_VARIANT_ORIGINAL)];
    crypto_hash_sha256(h, (const unsigned char *)CSS, sizeof CSS - 1);
    sodium_bin2base64(b64, sizeof b64, h, sizeof h, sodium_base64_VARIANT_ORIGINAL);
    return cm_xasprintf("default-src 'none'; style-src 'sha256-%s'; form-action 'self'; "
                        "frame-ancestors 'none'; base-uri 'none'",
                        b64);
}

gw_pages_t *gw_pages_new(const gw_config_t *cfg)
{
    gw_pages_t *p = cm_xcalloc(1, sizeof *p);
    p->cfg = cfg;
    if (cfg->pages_secret) {
        derive_key(cfg->pages_secret, "linktr pages csrf", p->csrf_key);
        derive_key(cfg->pages_secret, "linktr pages click", p->click_key);
    } else {
        /* One process only: a second replica needs PAGES_SECRET (README). */
        randombytes_buf(p->csrf_key, sizeof p->csrf_key);
        randombytes_buf(p->click_key, sizeof p->click_key);
    }
    const char *base = cfg->svc.public_base_url ? cfg->svc.public_base_url : "";
    origin_of(base, p->origin);
    p->secure = strncmp(base, "https://", 8) == 0;
    p->csp = make_csp();
    p->signup_url = cfg->signup_url ? cm_xstrdup(cfg->signup_url) : cm_xasprintf("%s/signup", base);
    return p;
}

void gw_pages_free(gw_pages_t *p)
{
    if (!p)
        return;
    sodium_memzero(p->csrf_key, sizeof p->csrf_key);
    sodium_memzero(p->click_key, sizeof p->click_key);
    free(p->csp);
    free(p->signup_url);
    free(p);
}

/* ---- pure helpers ----------------------------------------------------------------- */

static void csrf_mac(const gw_pages_t *p, const char *form, const char *bound, long long exp,
                     uint8_t mac[crypto_auth_hmacsha256_BYTES])
{
    char head[96];
    snprintf(head, sizeof head, "%s\n%lld\n", form, exp);
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, p->csrf_key, sizeof p->csrf_key);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)head, strlen(head));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)bound, strlen(bound));
    crypto_auth_hmacsha256_final(&st, mac);
}

void gw_csrf_make(const gw_pages_t *p, const char *form, const char *bound, int64_t now_s,
                  char out[GW_CSRF_CHARS])
{
    long long exp = (long long)now_s + GW_CSRF_TTL_S;
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    char b64[sodium_base64_ENCODED_LEN(sizeof mac, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    csrf_mac(p, form, bound ? bound : "", exp, mac);
    sodium_bin2base64(b64, sizeof b64, mac, sizeof mac, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(out, GW_CSRF_CHARS, "%lld.%s", exp, b64);
}

bool gw_csrf_check(const gw_pages_t *p, const char *form, const char *bound, const char *tok,
                   int64_t now_s)
{
    if (!tok || strnlen(tok, GW_CSRF_CHARS) >= GW_CSRF_CHARS)
        return false;
    const char *dot = strchr(tok, '.');
    if (!dot || dot == tok || dot - tok > 19)
        return false;
    char num[20];
    memcpy(num, tok, (size_t)(dot - tok));
    num[dot - tok] = '\0';
    long long exp = 0;
    if (cm_strtonum(num, 0, (long long)now_s + GW_CSRF_TTL_S, &exp) != 0 || exp < now_s)
        return false;
    char want[GW_CSRF_CHARS];
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    csrf_mac(p, form, bound ? bound : "", exp, mac);
    sodium_bin2base64(want, sizeof want, mac, sizeof mac, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    size_t n = strlen(want);
    return strlen(dot + 1) == n && sodium_memcmp(want, dot + 1, n) == 0;
}

bool gw_pages_origin_ok(const gw_pages_t *p, const char *origin, const char *referer)
{
    size_t n = strlen(p->origin);
    if (n == 0)
        return false;
    if (origin)
        return strcmp(origin, p->origin) == 0;
    return referer && strncmp(referer, p->origin, n) == 0 && referer[n] == '/';
}

void gw_html_escape(cm_buf_t *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&':
            cm_buf_puts(b, "&amp;");
            break;
        case '<':
            cm_buf_puts(b, "&lt;");
            break;
        case '>':
            cm_buf_puts(b, "&gt;");
            break;
        case '"':
            cm_buf_puts(b, "&quot;");
            break;
        case '\'':
            cm_buf_puts(b, "&#39;");
            break;
        default:
            cm_buf_append(b, s, 1);
        }
    }
}

bool gw_ref_code_valid(const char *s)
{
    size_t n = s ? strnlen(s, GW_REF_CODE_MAX + 1) : 0;
    if (n == 0 || n > GW_REF_CODE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

int gw_cookie_get(cm_arena_t *a, const char *header, const char *name, const char **out)
{
    size_t nlen = strlen(name);
    const char *p = header;
    while (p && *p) {
        while (*p == ' ' || *p == ';')
            p++;
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
            *out = cm_arena_strndup(a, p + nlen + 1, len - nlen - 1);
            return 0;
        }
        p = end;
    }
    return CM_ENOTFOUND;
}

/* strcasestr without GNU extensions: true when needle (lower case) is in s, any case. */
static bool contains_ci(const char *s, const char *needle)
{
    size_t n = strlen(needle);
    for (; *s; s++)
        if (strncasecmp(s, needle, n) == 0)
            return true;
    return false;
}

const char *gw_ua_class(const char *ua)
{
    static const char *const bots[] = {
        "bot",     "crawl", "spider", "slurp",    "preview", "facebookexternalhit",
        "curl",    "wget",  "python", "headless", "scanner", "monitor",
        "go-http", NULL};
    if (!ua || !*ua)
        return "bot"; /* every browser sends one */
    for (size_t i = 0; bots[i]; i++)
        if (contains_ci(ua, bots[i]))
            return "bot";
    if (contains_ci(ua, "mobile") || contains_ci(ua, "android") || contains_ci(ua, "iphone"))
        return "mobile";
    if (contains_ci(ua, "mozilla"))
        return "desktop";
    return "other";
}

/* ---- rendering ------------------------------------------------------------------- */

static void page_open(cm_buf_t *b, const char *title)
{
    cm_buf_puts(b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                   "<title>");
    gw_html_escape(b, title);
    cm_buf_puts(b, " · linktr</title><style>");
    cm_buf_puts(b, CSS);
    cm_buf_puts(b, "</style></head><body><main><h1>");
    gw_html_escape(b, title);
    cm_buf_puts(b, "</h1>\n");
}

static void para(cm_buf_t *b, const char *cls, const char *text)
{
    cm_buf_puts(b, "<p");
    if (cls) {
        cm_buf_puts(b, " class=\"");
        cm_buf_puts(b, cls);
        cm_buf_puts(b, "\"");
    }
    cm_buf_puts(b, ">");
    gw_html_escape(b, text);
    cm_buf_puts(b, "</p>\n");
}

static void hidden(cm_buf_t *b, const char *name, const char *value)
{
    cm_buf_puts(b, "<input type=\"hidden\" name=\"");
    cm_buf_puts(b, name);
    cm_buf_puts(b, "\" value=\"");
    gw_html_escape(b, value);
    cm_buf_puts(b, "\">\n");
}

/* A labelled field, its value (escaped; never for passwords) and its error, if any. */
static void field(cm_buf_t *b, const char *name, const char *label, const char *type,
                  const char *autocomplete, const char *value, const char *error)
{
    cm_buf_printf(b, "<label for=\"%s\">", name);
    gw_html_escape(b, label);
    cm_buf_printf(b, "</label><input id=\"%s\" name=\"%s\" type=\"%s\" autocomplete=\"%s\"", name,
                  name, type, autocomplete);
    if (value && *value) {
        cm_buf_puts(b, " value=\"");
        gw_html_escape(b, value);
        cm_buf_puts(b, "\"");
    }
    if (strcmp(type, "hidden") != 0 && strcmp(name, "referral_code") != 0)
        cm_buf_puts(b, " required");
    if (error)
        cm_buf_printf(b, " aria-describedby=\"%s-error\"", name);
    cm_buf_puts(b, ">\n");
    if (error) {
        cm_buf_printf(b, "<p class=\"err\" id=\"%s-error\">", name);
        gw_html_escape(b, error);
        cm_buf_puts(b, "</p>\n");
    }
}

static void form_open(cm_buf_t *b, const gw_pages_t *p, const char *action, const char *form,
                      const char *bound)
{
    char csrf[GW_CSRF_CHARS];
    gw_csrf_make(p, form, bound, cm_now_us() / 1000000, csrf);
    cm_buf_printf(b, "<form method=\"post\" action=\"%s\">\n", action);
    hidden(b, "csrf", csrf);
}

static void reply_page(cm_req_t *rq, const gw_pages_t *p, int status, cm_buf_t *b)
{
    cm_buf_puts(b, "</main></body></html>\n");
    cm_reply_header(rq, "Content-Security-Policy", p->csp);
    /* same-origin: a same-origin form POST carries Origin (no-referrer would send "null"). */
    cm_reply_header(rq, "Referrer-Policy", "same-origin");
    cm_reply_header(rq, "X-Frame-Options", "DENY");
    cm_reply_raw(rq, status, "text/html; charset=utf-8", b->data, b->len);
    cm_buf_dispose(b);
}

/* A page with a title and one message. */
static void reply_message(cm_req_t *rq, const gw_pages_t *p, int status, const char *title,
                          const char *cls, const char *text)
{
    cm_buf_t b;
    cm_buf_init(&b);
    page_open(&b, title);
    para(&b, cls, text);
    reply_page(rq, p, status, &b);
}

static void reply_unavailable(cm_req_t *rq, const gw_pages_t *p)
{
    cm_reply_header(rq, "Retry-After", "5");
    reply_message(rq, p, 503, "Please try again", "box",
                  "Something on our side did not answer. Nothing was changed; please try again "
                  "in a moment.");
}

/* ---- talking to auth and referral ------------------------------------------------ */

static const char *page_header(const void *src, const char *name)
{
    if (strcasecmp(name, "Content-Type") == 0 || strcasecmp(name, "Accept") == 0)
        return "application/json";
    if (strcasecmp(name, "Authorization") == 0)
        return NULL; /* the pages never act with a client's token */
    return cm_req_header(src, name);
}

/*
 * Calls an upstream with a JSON body (may be NULL; stolen) on behalf of the page's
 * client; on success *doc is the answer's JSON (a new reference, or NULL
 * when it had none). Returns 0 and the status, or < 0 (transport failure).
 */
static int call_upstream(gw_t *gw, cm_req_t *rq, gw_upstream_id_t up, const char *method,
                         const char *path, json_t *body, long *status, json_t **doc)
{
    const char *ip = NULL, *xff = NULL;
    gw_client_addr(cm_req_arena(rq), cm_req_peer(rq), cm_req_header(rq, "X-Forwarded-For"),
                   &gw->cfg->trusted_proxies, &ip, &xff);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    gw_fwd_request_t f = {
        .method = method,
        .path = path,
        .body = {text, text ? strlen(text) : 0},
        .headers = gw_upstream_headers(page_header, rq, cm_req_id(rq), xff, ip),
    };
    gw_fwd_response_t resp;
    int rc = gw_upstream_forward(gw->upstreams[up], &f, &resp);
    *doc = NULL;
    *status = resp.status;
    if (rc == 0 && resp.body.len > 0 &&
        cm_json_scan(resp.body.data, resp.body.len, GW_MAX_RESPONSE, CM_JSON_MAX_DEPTH_UPSTREAM,
                     NULL) == 0)
        *doc = json_loadb(resp.body.data, resp.body.len, 0, NULL);
    if (rc != 0)
        CM_WARN(cm_req_id(rq), "page: %s %s upstream failed: %s", method, path, cm_strerror(rc));
    gw_fwd_response_dispose(&resp);
    curl_slist_free_all(f.headers);
    if (text) {
        sodium_memzero(text, strlen(text)); /* it held a password or a token */
        free(text);
    }
    return rc;
}

/* The first message of problem+json errors[field], or NULL (borrowed from doc). */
static const char *field_error(json_t *doc, const char *field)
{
    json_t *list = json_object_get(json_object_get(doc, "errors"), field); /* borrowed */
    return json_string_value(json_array_get(list, 0));
}

/* Why auth refused a one-time token: its problem's "code" (API.md), "token_invalid" when absent. */
static const char *token_refusal(json_t *doc)
{
    const char *code = json_string_value(json_object_get(doc, "code")); /* borrowed */
    if (code && (strcmp(code, "token_used") == 0 || strcmp(code, "token_expired") == 0))
        return code;
    return "token_invalid";
}

/* The per-address bucket of class cls; a 429 page when it is empty. */
static int rate_or_reply(gw_t *gw, cm_req_t *rq, gw_rate_class_t cls)
{
    const char *ip = NULL, *xff = NULL;
    int64_t retry = 0;
    if (!gw->limiter)
        return 0;
    gw_client_addr(cm_req_arena(rq), cm_req_peer(rq), cm_req_header(rq, "X-Forwarded-For"),
                   &gw->cfg->trusted_proxies, &ip, &xff);
    if (gw_limiter_take(gw->limiter, cls, ip, cm_now_mono_ms(), &retry))
        return 0;
    reply_message(rq, gw->pages, 429, "Too many attempts", "box",
                  "Please wait a minute and try again.");
    return -1;
}

/* ---- form input ------------------------------------------------------------------- */

typedef struct form {
    const char *data;
    size_t len;
} form_t;

/* A form field, URL-decoded into the arena; NULL when absent or longer than max. */
static const char *form_get(cm_req_t *rq, const form_t *f, const char *name, size_t max)
{
    char *dst = cm_arena_alloc(cm_req_arena(rq), max + 1);
    int n = mg_get_var(f->data, f->len, name, dst, max + 1);
    return n >= 0 ? dst : NULL;
}

/*
 * The checks every page POST passes, each answering with a page when it
 * fails: rate limit (429), form type (415), size (413), origin (403).
 * Returns 0 with *f set, or < 0 when it already replied.
 */
static int form_or_reply(gw_t *gw, cm_req_t *rq, gw_rate_class_t cls, form_t *f)
{
    const gw_pages_t *p = gw->pages;
    if (rate_or_reply(gw, rq, cls) != 0)
        return -1;
    const char *ct = cm_req_header(rq, "Content-Type");
    static const char want[] = "application/x-www-form-urlencoded";
    if (!ct || strncasecmp(ct, want, sizeof want - 1) != 0 ||
        (ct[sizeof want - 1] != '\0' && ct[sizeof want - 1] != ';')) {
        reply_message(rq, p, 415, "Unsupported form", "box",
                      "This page only accepts its own form.");
        return -1;
    }
    cm_slice_t body;
    if (cm_req_body_or_reply(rq, &body) != 0)
        return -1;
    if (body.len > GW_PAGE_MAX_FORM) {
        reply_message(rq, p, 413, "Form too large", "box", "The form sent was too large.");
        return -1;
    }
    if (!gw_pages_origin_ok(p, cm_req_header(rq, "Origin"), cm_req_header(rq, "Referer"))) {
        reply_message(rq, p, 403, "Request refused", "box",
                      "This form was not sent from our own page. Open the link again and "
                      "use the form there.");
        return -1;
    }
    f->data = body.ptr;
    f->len = body.len;
    return 0;
}

/* 403 page unless the form's csrf field was made for form + bound and is still good. */
static int csrf_or_reply(gw_t *gw, cm_req_t *rq, const form_t *f, const char *form,
                         const char *bound)
{
    const char *tok = form_get(rq, f, "csrf", GW_CSRF_CHARS);
    if (gw_csrf_check(gw->pages, form, bound, tok, cm_now_us() / 1000000))
        return 0;
    reply_message(rq, gw->pages, 403, "Request refused", "box",
                  "This form has expired or was not sent from our own page. Open the link "
                  "again and use the form there.");
    return -1;
}

/* The one-time token of a link: letters, digits, '-' and '_' (base64url), bounded. */
static bool link_token_ok(const char *t)
{
    size_t n = t ? strnlen(t, 129) : 0;
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

static const char *query_token(cm_req_t *rq)
{
    const char *t = NULL;
    if (cm_req_query_param(rq, "token", 128, &t) != 0 || !link_token_ok(t))
        return NULL;
    return t;
}

static void reply_bad_link(cm_req_t *rq, const gw_pages_t *p)
{
    reply_message(rq, p, 400, "This link is incomplete", "box",
                  "The link is missing its token or was cut short. Copy the whole link from "
                  "the email and try again.");
}

/* ---- /verify-email ---------------------------------------------------------------- */

static void verify_form(cm_req_t *rq, const gw_pages_t *p, const char *token)
{
    cm_buf_t b;
    cm_buf_init(&b);
    page_open(&b, "Confirm your email");
    para(&b, NULL, "Press the button to confirm that this email address is yours.");
    form_open(&b, p, "/verify-email", "verify", token);
    hidden(&b, "token", token);
    cm_buf_puts(&b, "<button type=\"submit\">Confirm my email</button></form>\n");
    reply_page(rq, p, 200, &b);
}

void gw_page_verify(cm_req_t *rq, void *ctx)
{
    gw_t *gw = ctx;
    const char *token = query_token(rq);
    if (!token)
        reply_bad_link(rq, gw->pages);
    else
        verify_form(rq, gw->pages, token);
}

/* The outcome page of a refused verify link, by auth's reason. */
static void verify_refused(cm_req_t *rq, const gw_pages_t *p, const char *code)
{
    if (strcmp(code, "token_used") == 0)
        reply_message(rq, p, 400, "This link was already used", "ok",
                      "This link has already confirmed your email address; there is nothing "
                      "more to do. You can log in.");
    else if (strcmp(code, "token_expired") == 0)
        reply_message(rq, p, 400, "This link has expired", "box",
                      "Confirmation links work for a limited time. Log in and ask for a new "
                      "verification email.");
    else
        reply_message(rq, p, 400, "This link is not valid", "box",
                      "Check that you opened the whole link from the email, or log in and ask "
                      "for a new verification email.");
}

void gw_page_verify_post(cm_req_t *rq, void *ctx)
{
    gw_t *gw = ctx;
    const gw_pages_t *p = gw->pages;
    form_t f;
    if (form_or_reply(gw, rq, GW_RL_OTHER, &f) != 0)
        return;
    const char *token = form_get(rq, &f, "token", 128);
    if (!link_token_ok(token)) {
        reply_bad_link(rq, p);
        return;
    }
    if (csrf_or_reply(gw, rq, &f, "verify", token) != 0)
        return;
    json_t *doc = NULL;
    long st = 0;
    int rc = call_upstream(gw, rq, GW_UP_AUTH, "POST", "/api/verify-email",
                           json_pack("{s:s}", "token", token), &st, &doc);
    if (rc != 0 || st >= 500 || st == 429)
        reply_unavailable(rq, p);
    else if (st == 200)
        reply_message(rq, p, 200, "Email verified", "ok",
                      "Thank you: your email address is confirmed. You can close this page.");
    else
        verify_refused(rq, p, token_refusal(doc));
    json_decref(doc);
}

/* ---- /reset-password -------------------------------------------------------------- */

static void reset_form(cm_req_t *rq, const gw_pages_t *p, int status, const char *token,
                       const char *error)
{
    cm_buf_t b;
    cm_buf_init(&b);
    page_open(&b, "Choose a new password");
    if (error)
        para(&b, "box", error);
    form_open(&b, p, "/reset-password", "reset", token);
    hidden(&b, "token", token);
    field(&b, "password", "New password", "password", "new-password", NULL, NULL);
    field(&b, "password2", "New password, again", "password", "new-password", NULL, NULL);
    para(&b, "note",
         "At least 8 characters, not only digits, not a common password and not like your "
         "username or email.");
    cm_buf_puts(&b, "<button type=\"submit\">Set my new password</button></form>\n");
    reply_page(rq, p, status, &b);
}

void gw_page_reset(cm_req_t *rq, void *ctx)
{
    gw_t *gw = ctx;
    const char *token = query_token(rq);
    if (!token)
        reply_bad_link(rq, gw->pages);
    else
        reset_form(rq, gw->pages, 200, token, NULL);
}

/* The outcome page of a refused reset link, by auth's reason. */
static void reset_refused(cm_req_t *rq, const gw_pages_t *p, const char *code)
{
    if (strcmp(code, "token_used") == 0)
        reply_message(rq, p, 400, "This link was already used", "box",
                      "A reset link works once, and a newer reset retires older links. If you "
                      "did not change your password, ask for a new link from the login screen "
                      "(\"Forgot password\").");
    else if (strcmp(code, "token_expired") == 0)
        reply_message(rq, p, 400, "This link has expired", "box",
                      "Reset links work for a limited time. Ask for a new one from the login "
                      "screen (\"Forgot password\").");
    else
        reply_message(rq, p, 400, "This link is not valid", "box",
                      "Check that you opened the whole link from the email, or ask for a new "
                      "one from the login screen (\"Forgot password\").");
}

void gw_page_reset_post(cm_req_t *rq, void *ctx)
{
    gw_t *gw = ctx;
    const gw_pages_t *p = gw->pages;
    form_t f;
    if (form_or_reply(gw, rq, GW_RL_OTHER, &f) != 0)
        return;
    const char *token = form_get(rq, &f, "token", 128);
    if (!link_token_ok(token)) {
        reply_bad_link(rq, p);
        return;
    }
    if (csrf_or_reply(gw, rq, &f, "reset", token) != 0)
        return;
    const char *pw = form_get(rq, &f, "password", 1024);
    const char *pw2 = form_get(rq, &f, "password2", 1024);
    if (!pw || !*pw) {
        reset_form(rq, p, 400, token, "Enter a new password.");
        return;
    }
    if (!pw2 || strcmp(pw, pw2) != 0) {
        reset_form(rq, p, 400, token, "The two passwords do not match.");
        return;
    }
    json_t *body = json_pack("{s:s, s:s}", "token", token, "password", pw);
    if (!body) { /* not UTF-8 */
        reset_form(rq, p, 400, token, "The password holds characters that cannot be read.");
        return;
    }
    json_t *doc = NULL;
    long st = 0;
    int rc = call_upstream(gw, rq, GW_UP_AUTH, "POST", "/api/reset-password", body, &st, &doc);
    const char *why = field_error(doc, "password");
    if (rc != 0 || st >= 500 || st == 429)
        reply_unavailable(rq, p);
    else if (st == 204 || st == 200)
        reply_message(rq, p, 200, "Password changed", "ok",
                      "Your password has been changed and every other session was signed out. "
                      "Log in with your new password.");
    else if (why)
        reset_form(rq, p, 400, token, why);
    else
        reset_refused(rq, p, token_refusal(doc));
    json_decref(doc);
}

/* ---- /signup ---------------------------------------------------------------------- */

typedef struct signup {
    const char *username, *email, *code;
    const char *err_username, *err_email, *err_password, *err_code, *err_top;
} signup_t;

static void signup_form(cm_req_t *rq, const gw_pages_t *p, int status, const signup_t *s)
{
    cm_buf_t b;
    cm_buf_init(&b);
    page_open(&b, "Create your account");
    if (s->err_top)
        para(&b, "box", s->err_top);
    form_open(&b, p, "/signup", "signup", "");
    field(&b, "username", "Username", "text", "username", s->username, s->err_username);
    field(&b, "email", "Email", "email", "email", s->email, s->err_email);
    field(&b, "password", "Password", "password", "new-password", NULL, s->err_password);
    field(&b, "referral_code", "Referral code (optional)", "text", "off", s->code, s->err_code);
    cm_buf_puts(&b, "<button type=\"submit\">Sign up</button></form>\n");
    reply_page(rq, p, status, &b);
}

/* The attribution cookie's code, when it holds a valid one. */
static const char *cookie_code(cm_req_t *rq)
{
    const char *v = NULL;
    if (gw_cookie_get(cm_req_arena(rq), cm_req_header(rq, "Cookie"), GW_REF_COOKIE, &v) != 0 ||
        !gw_ref_code_valid(v))
        return NULL;
    return v;
}

void gw_page_signup(cm_req_t *rq, void *ctx)
{
    gw_t *gw = ctx;
    signup_t s = {0};
    const char *ref = NULL;
    /* An explicit ?ref= wins over the cookie; a malformed one is dropped, not shown. */
    if (cm_req_query_param(rq, "ref", GW_REF_CODE_MAX, &ref) == 0 && gw_ref_code_valid(ref))
        s.code = ref;
    else
        s.code = cookie_code(rq);
    signup_form(rq, gw->pages, 200, &s);
}

static void signup_done(cm_req_t *rq, const gw_pages_t *p, const char *email)
{
    cm_buf_t b;
    cm_buf_init(&b);
    page_open(&b, "Check your mail");
    cm_buf_puts(&b, "<p class=\"ok\">We sent a confirmation link to <strong>");
    gw_html_escape(&b, email);
    cm_buf_puts(&b, "</strong>. Open it and press the button to confirm your address.</p>\n");
    reply_page(rq, p, 201, &b);
}

static json_t *register_body(const signup_t *s, const char *pw)
{
    json_t *o =
        json_pack("{s:s, s:s, s:s}", "username", s->username, "email", s->email, "password", pw);
    if (o && s->code && *s->code)
        json_object_set_new(o, "referral_code", json_string(s->code));
    return o;
}

void gw_page_signup_post(cm_req_t *rq, void *ctx)
{
    gw_t *gw = ctx;
    const gw_pages_t *p = gw->pages;
    form_t f;
    if (form_or_reply(gw, rq, GW_RL_REGISTER, &f) != 0 ||
        csrf_or_reply(gw, rq, &f, "signup", "") != 0)
        return;
    signup_t s = {0};
    s.username = form_get(rq, &f, "username", 256);
    s.email = form_get(rq, &f, "email", 320);
    const char *pw = form_get(rq, &f, "password", 1024);
    s.code = form_get(rq, &f, "referral_code", 64);
    if (!s.code || !*s.code)
        s.code = cookie_code(rq); /* the field, when filled in, wins over the cookie */
    if (!s.username || !s.email || !pw) {
        s.err_top = "Fill in username, email and password.";
        signup_form(rq, p, 400, &s);
        return;
    }
    json_t *doc = NULL;
    long st = 0;
    json_t *body = register_body(&s, pw);
    int rc = body ? call_upstream(gw, rq, GW_UP_AUTH, "POST", "/api/register", body, &st, &doc)
                  : CM_EINVAL; /* not UTF-8 */
    if (rc == 0 && st == 201) {
        signup_done(rq, p, s.email);
    } else if (rc == CM_EINVAL || (rc == 0 && (st == 400 || st == 409))) {
        s.err_username = field_error(doc, "username");
        s.err_email = field_error(doc, "email");
        s.err_password = field_error(doc, "password");
        s.err_code = field_error(doc, "referral_code");
        if (!s.err_username && !s.err_email && !s.err_password && !s.err_code)
            s.err_top = "Please check the fields and try again.";
        signup_form(rq, p, st == 409 ? 409 : 400, &s);
    } else {
        reply_unavailable(rq, p);
    }
    json_decref(doc);
}

/* ---- /r/<code> -------------------------------------------------------------------- */

static void reply_unknown_code(cm_req_t *rq, const gw_pages_t *p)
{
    reply_message(rq, p, 404, "This invitation link does not work", "box",
                  "We could not find this referral code. Check the link you were given, or "
                  "sign up without it.");
}

/* The code in /r/<code> (the route guarantees one segment), or NULL when malformed. */
static const char *path_code(cm_req_t *rq)
{
    const char *path = cm_req_path(rq);
    const char *c = path + 3; /* after "/r/" */
    size_t n = strlen(c);
    if (n > 0 && c[n - 1] == '/')
        n--;
    if (n > GW_REF_CODE_MAX)
        return NULL;
    char *code = cm_arena_strndup(cm_req_arena(rq), c, n);
    for (char *q = code; *q; q++)
        if (*q >= 'a' && *q <= 'z')
            *q = (char)(*q - 'a' + 'A'); /* codes are upper case; read aloud, typed lower */
    return gw_ref_code_valid(code) ? code : NULL;
}

static void redirect_to_signup(cm_req_t *rq, const gw_pages_t *p, const char *code)
{
    cm_buf_t b;
    cm_buf_init(&b);
    cm_buf_printf(&b, "%s%cref=%s", p->signup_url, strchr(p->signup_url, '?') ? '&' : '?', code);
    cm_reply_header(rq, "Location", b.data);
    cm_buf_dispose(&b);
    cm_buf_printf(&b, "%s=%s; Max-Age=%lld; Path=/; SameSite=Lax; HttpOnly%s", GW_REF_COOKIE, code,
                  (long long)p->cfg->attribution_days * 86400, p->secure ? "; Secure" : "");
    cm_reply_header(rq, "Set-Cookie", b.data);
    cm_buf_dispose(&b);
    reply_message(rq, p, 302, "Redirecting", NULL, "Taking you to the signup page.");
}

/* The host of a Referer ("https://host:port/path" → "host:port"), or NULL when odd. */
static const char *referrer_host(cm_req_t *rq)
{
    const char *r = cm_req_header(rq, "Referer");
    const char *p = r ? strstr(r, "://") : NULL;
    if (!p)
        return NULL;
    p += 3;
    size_t n = strcspn(p, "/?#");
    if (n == 0 || n > 253)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':'))
            return NULL;
    }
    return cm_arena_strndup(cm_req_arena(rq), p, n);
}

/*
 * Reports the click to referral, which also says whether the code exists.
 * HEAD requests and crawlers only ask (count false): link previews and
 * scanners are not people. The client address travels only as a keyed
 * hash. Returns 0 (the code exists), CM_ENOTFOUND, or < 0.
 */
static int report_click(gw_t *gw, cm_req_t *rq, const char *code)
{
    const char *ip = NULL, *xff = NULL;
    gw_client_addr(cm_req_arena(rq), cm_req_peer(rq), cm_req_header(rq, "X-Forwarded-For"),
                   &gw->cfg->trusted_proxies, &ip, &xff);
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    char hash[2 * sizeof mac + 1];
    crypto_auth_hmacsha256(mac, (const unsigned char *)ip, strlen(ip), gw->pages->click_key);
    cm_hex_encode(mac, sizeof mac, hash);
    const char *ua = gw_ua_class(cm_req_header(rq, "User-Agent"));
    bool count = strcmp(cm_req_method(rq), "GET") == 0 && strcmp(ua, "bot") != 0;
    const char *host = referrer_host(rq);
    json_t *body = json_pack("{s:s, s:s, s:s, s:b}", "code", code, "client_hash", hash, "ua_class",
                             count ? ua : "other", "count", count);
    if (host)
        json_object_set_new(body, "referrer_host", json_string(host));
    json_t *doc = NULL;
    long st = 0;
    int rc = call_upstream(gw, rq, GW_UP_REFERRAL, "POST", "/internal/clicks", body, &st, &doc);
    json_decref(doc);
    if (rc != 0 || st >= 500)
        return rc != 0 ? rc : CM_EUNAVAIL;
    return st == 200 ? 0 : CM_ENOTFOUND;
}

void gw_page_referral(cm_req_t *rq, void *ctx)
{
    gw_t *gw = ctx;
    const gw_pages_t *p = gw->pages;
    const char *code = path_code(rq);
    if (rate_or_reply(gw, rq, GW_RL_OTHER) != 0) /* each click costs referral a write */
        return;
    if (!code) {
        reply_unknown_code(rq, p);
        return;
    }
    int rc = report_click(gw, rq, code);
    if (rc == CM_ENOTFOUND)
        reply_unknown_code(rq, p);
    else if (rc != 0)
        reply_unavailable(rq, p);
    else
        redirect_to_signup(rq, p, code);
}

/* ---- /confirm-email and /cancel-email-change (issue 15) --------------------------------- */

/* What a page says for one answer of /api/email/confirm or /api/email/cancel. */
typedef struct email_outcome {
    const char *reason; /* the problem's "reason" member; NULL: any other refusal */
    int status;
    const char *title, *cls, *text;
} email_outcome_t;

static const email_outcome_t CONFIRM_OUTCOMES[] = {
    {"taken", 409, "This address was taken meanwhile", "box",
     "Another account started using this email address after you asked for the change, so "
     "your address was not changed. You can log in and ask to change to another address."},
    {"confirmed", 410, "This link was already used", "box",
     "Your email address was already changed with this link. Log in with the new address."},
    {"expired", 410, "This link has expired", "box",
     "Email change links work for a limited time. Log in and ask for the change again."},
    {"cancelled", 410, "This change was cancelled", "box",
     "The change was cancelled from the notice sent to your old address, so your email "
     "address was not changed."},
    {"superseded", 410, "This link was replaced", "box",
     "A newer email change was asked for after this one. Use the link in the newest mail."},
    {NULL, 400, "This link is not valid", "box",
     "The link is not one we sent, or it was cut short. Copy the whole link from the email."},
};

static const email_outcome_t CANCEL_OUTCOMES[] = {
    {"confirmed", 410, "The change was already confirmed", "box",
     "The new address is in use already, and this link can no longer undo it. If you did not "
     "ask for the change, contact us at once: someone else knows your password."},
    {"cancelled", 410, "This change was already cancelled", "ok",
     "Nothing more to do: your email address stays as it is."},
    {"expired", 410, "This link has expired", "ok",
     "The change it was for expired too and can no longer be confirmed: your email address "
     "stays as it is."},
    {"superseded", 410, "This link was replaced", "box",
     "A newer email change was asked for after this one; the notice about it has its own "
     "cancel link."},
    {NULL, 400, "This link is not valid", "box",
     "The link is not one we sent, or it was cut short. Copy the whole link from the email."},
};

/* The entry for the answer's reason, or the last (catch-all) entry. */
static const email_outcome_t *email_outcome(const email_outcome_t *list, size_t n, json_t *doc)
{
    const char *reason = json_string_value(json_object_get(doc, "reason")); /* borrowed */
    for (size_t i = 0; i + 1 < n; i++)
        if (reason && strcmp(reason, list[i].reason) == 0)
            return &list[i];
    return &list[n - 1];
}

/* The page of a link: one button, nothing spent. */
static void email_link_form(cm_req_t *rq, const gw_pages_t *p, bool confirm, const char *token)
{
    cm_buf_t b;
    cm_buf_init(&b);
    page_open(&b, confirm ? "Confirm your new email" : "Cancel the email change");
    para(&b, NULL,
         confirm ? "Press the button to make this address the email of your linktr account."
                 : "Press the button to cancel the change of your linktr account's email "
                   "address. Your address stays as it is.");
    form_open(&b, p, confirm ? "/confirm-email" : "/cancel-email-change",
              confirm ? "email-confirm" : "email-cancel", token);
    hidden(&b, "token", token);
    cm_buf_puts(&b, confirm ? "<button type=\"submit\">Confirm my new email</button></form>\n"
                            : "<button type=\"submit\">Cancel the change</button></form>\n");
    reply_page(rq, p, 200, &b);
}

static void email_link_get(cm_req_t *rq, gw_t *gw, bool confirm)
{
    const char *token = query_token(rq);
    if (!token)
        reply_bad_link(rq, gw->pages);
    else
        email_link_form(rq, gw->pages, confirm, token);
}

/* The success page of a confirmation: the address now in use, escaped. */
static void email_changed_page(cm_req_t *rq, const gw_pages_t *p, json_t *doc)
{
    const char *email = json_string_value(json_object_get(doc, "email")); /* borrowed */
    cm_buf_t b;
    cm_buf_init(&b);
    page_open(&b, "Email address changed");
    cm_buf_puts(&b, "<p class=\"ok\">Your linktr account now uses <strong>");
    gw_html_escape(&b, email ? email : "the new address");
    cm_buf_puts(&b, "</strong>. Use it the next time you log in. You can close this page.</p>\n");
    reply_page(rq, p, 200, &b);
}

/* POST: the form's checks, then the token spent through auth, then the outcome page. */
static void email_link_post(cm_req_t *rq, gw_t *gw, bool confirm)
{
    const gw_pages_t *p = gw->pages;
    form_t f;
    if (form_or_reply(gw, rq, GW_RL_OTHER, &f) != 0)
        return;
    const char *token = form_get(rq, &f, "token", 128);
    if (!link_token_ok(token)) {
        reply_bad_link(rq, p);
        return;
    }
    if (csrf_or_reply(gw, rq, &f, confirm ? "email-confirm" : "email-cancel", token) != 0)
        return;
    json_t *doc = NULL;
    long st = 0;
    int rc = call_upstream(gw, rq, GW_UP_AUTH, "POST",
                           confirm ? "/api/email/confirm" : "/api/email/cancel",
                           json_pack("{s:s}", "token", token), &st, &doc);
    if (rc != 0 || st >= 500 || st == 429) {
        reply_unavailable(rq, p);
    } else if (st == 200 && confirm) {
        email_changed_page(rq, p, doc);
    } else if (st == 200) {
        reply_message(rq, p, 200, "Email change cancelled", "ok",
                      "Your email address stays as it is. If you did not ask for the change, "
                      "change your password now: someone else knows it.");
    } else {
        const email_outcome_t *o =
            confirm ? email_outcome(CONFIRM_OUTCOMES,
                                    sizeof CONFIRM_OUTCOMES / sizeof CONFIRM_OUTCOMES[0], doc)
                    : email_outcome(CANCEL_OUTCOMES,
                                    sizeof CANCEL_OUTCOMES / sizeof CANCEL_OUTCOMES[0], doc);
        reply_message(rq, p, o->status, o->title, o->cls, o->text);
    }
    json_decref(doc);
}

void gw_page_email_confirm(cm_req_t *rq, void *ctx)
{
    email_link_get(rq, ctx, true);
}

void gw_page_email_confirm_post(cm_req_t *rq, void *ctx)
{
    email_link_post(rq, ctx, true);
}

void gw_page_email_cancel(cm_req_t *rq, void *ctx)
{
    email_link_get(rq, ctx, false);
}

void gw_page_email_cancel_post(cm_req_t *rq, void *ctx)
{
    email_link_post(rq, ctx, false);
}

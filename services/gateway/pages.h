/*
 * pages.h — the HTML pages for people, served by the gateway on the public
 * origin (API.md "Pages"): /verify-email, /reset-password, /signup, the
 * referral link /r/<code>, and the email-change links /confirm-email and
 * /cancel-email-change.
 *
 * A GET only shows a page and never spends a one-time token (mail scanners
 * and link previews fetch links before people do); the form POST spends it
 * by calling auth's JSON API through the gateway's upstream, as any client
 * would. Forms are the one place cookies and CSRF matter: every POST must
 * carry a signed token (HMAC over the form's name, an expiry and the
 * one-time token it spends) and come from PUBLIC_BASE_URL's origin (Origin,
 * else Referer). Pages are server-rendered, every value HTML-escaped, under
 * a strict Content-Security-Policy (no script, one hashed inline style,
 * form-action 'self', no framing) and never cached.
 *
 * Handlers take the gw_t as ctx, like the edge handler.
 */
#ifndef GW_PAGES_H
#define GW_PAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/http.h"
#include "cm/util.h"
#include "config.h"

/** How long a form's CSRF token stays good (seconds). */
#define GW_CSRF_TTL_S 3600
/** Largest form body a page accepts (bytes); more is 413. */
#define GW_PAGE_MAX_FORM 4096
/** Longest referral code taken from a path, query or cookie. */
#define GW_REF_CODE_MAX 16
/** The attribution cookie's name. */
#define GW_REF_COOKIE "linktr_ref"

typedef struct gw_pages gw_pages_t;

/**
 * Makes the pages' state from cfg (borrowed; must outlive it): the CSRF
 * and click-hash keys (derived from PAGES_SECRET, else random per
 * process), the allowed origin and the CSP with the stylesheet's hash.
 * Returns a new object; gw_pages_free() it.
 */
gw_pages_t *gw_pages_new(const gw_config_t *cfg);

/** Frees (and wipes the keys of) p. NULL-safe. */
void gw_pages_free(gw_pages_t *p);

/** GET /verify-email?token=T: the confirm button; spends nothing. */
void gw_page_verify(cm_req_t *rq, void *ctx);
/** POST /verify-email: spends the token through auth and shows the outcome. */
void gw_page_verify_post(cm_req_t *rq, void *ctx);
/** GET /reset-password?token=T: the new-password form; spends nothing. */
void gw_page_reset(cm_req_t *rq, void *ctx);
/** POST /reset-password: applies the new password or re-renders with the reason. */
void gw_page_reset_post(cm_req_t *rq, void *ctx);
/** GET /signup?ref=CODE: the signup form. */
void gw_page_signup(cm_req_t *rq, void *ctx);
/** POST /signup: registers through auth; "check your mail" or the form with field errors. */
void gw_page_signup_post(cm_req_t *rq, void *ctx);
/** GET /r/<code>: counts a click, sets the attribution cookie, 302 to SIGNUP_URL; 404 page. */
void gw_page_referral(cm_req_t *rq, void *ctx);
/** GET /confirm-email?token=T: the button that confirms an email change; spends nothing. */
void gw_page_email_confirm(cm_req_t *rq, void *ctx);
/**
 * POST /confirm-email: spends T through auth and shows the outcome: changed, already used,
 * expired, address taken meanwhile, cancelled, replaced by a newer request, or not valid.
 */
void gw_page_email_confirm_post(cm_req_t *rq, void *ctx);
/** GET /cancel-email-change?token=T: the button that cancels an email change; spends nothing. */
void gw_page_email_cancel(cm_req_t *rq, void *ctx);
/** POST /cancel-email-change: spends T through auth and shows the outcome. */
void gw_page_email_cancel_post(cm_req_t *rq, void *ctx);

/* ---- pure parts, exposed for the unit tests ---------------------------------- */

/** Length of a CSRF token's text, plus NUL. */
#define GW_CSRF_CHARS 72

/**
 * Writes the CSRF token for form (a name such as "verify") bound to bound
 * (the one-time token the form spends, or "" for none), good until now_s
 * + GW_CSRF_TTL_S.
 */
void gw_csrf_make(const gw_pages_t *p, const char *form, const char *bound, int64_t now_s,
                  char out[GW_CSRF_CHARS]);

/** True when tok is a token gw_csrf_make made for form and bound that has not expired at now_s. */
bool gw_csrf_check(const gw_pages_t *p, const char *form, const char *bound, const char *tok,
                   int64_t now_s);

/**
 * True when a form POST comes from the public origin: Origin equals
 * PUBLIC_BASE_URL's scheme://host[:port], or, without Origin, Referer
 * starts with it followed by '/'. Origin "null", a missing pair, or any
 * other origin is false.
 */
bool gw_pages_origin_ok(const gw_pages_t *p, const char *origin, const char *referer);

/** Appends s to b with &, <, >, " and ' escaped for HTML text and attribute values. */
void gw_html_escape(cm_buf_t *b, const char *s);

/** True when s is a plausible referral code: 1–GW_REF_CODE_MAX of [A-Za-z0-9]. */
bool gw_ref_code_valid(const char *s);

/**
 * Finds the cookie name in a Cookie header and copies its value into the
 * arena (*out). Returns 0, or CM_ENOTFOUND.
 */
int gw_cookie_get(cm_arena_t *a, const char *header, const char *name, const char **out);

/**
 * The coarse user-agent class of a click: "bot" (known crawlers, previews,
 * HTTP libraries, headless browsers, or no User-Agent at all: not counted),
 * "mobile", "desktop" or "other".
 */
const char *gw_ua_class(const char *ua);

#endif

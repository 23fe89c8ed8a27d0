/*
 * routes.h — the gateway's public route table and the edge handler.
 *
 * Every public path of API.md maps to an upstream (auth or referral), says
 * whether a token is required at the edge and which rate-limit class it
 * counts against. A path not in the table is never forwarded (cm_http
 * answers 404, or 405 with Allow). The handler, in order: CORS headers,
 * rate limit (429), token (401), body checks for POST (415, 413, 400),
 * query check (400), then forwarding; upstream failures become 503 (not
 * reachable), 504 (too slow) or 502 (broken answer), all problem+json.
 */
#ifndef GW_ROUTES_H
#define GW_ROUTES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "cm/http.h"
#include "cm/jwt.h"
#include "cm/metrics.h"
#include "config.h"
#include "gateway.h"

/** Cache-Control of a route's answers (errors are always no-store, from cm_http). */
typedef enum gw_cache {
    GW_CACHE_NO_STORE = 0, /* no-store on every answer, whatever the upstream says */
    GW_CACHE_PUBLIC,       /* the upstream's Cache-Control, else GW_PUBLIC_CACHE on 200 */
    GW_CACHE_UPSTREAM,     /* the upstream's Cache-Control, if any */
} gw_cache_t;

/** Cache-Control of a public route's 200 when the upstream sends none (the JWKS). */
#define GW_PUBLIC_CACHE "public, max-age=300"

/** One public route and its edge policy. */
typedef struct gw_route {
    const char *method;
    const char *path; /* without a trailing slash */
    gw_upstream_id_t upstream;
    bool needs_token; /* refused with 401 at the edge without a valid token */
    gw_rate_class_t rate_class;
    gw_cache_t cache; /* Cache-Control of its answers; 0 (GW_CACHE_NO_STORE) unless set */
} gw_route_t;

/** The public route table (static storage); *n receives its length. */
const gw_route_t *gw_routes(size_t *n);

/**
 * Finds the policy for method + path (trailing slash optional). Returns 0
 * and sets *out, CM_ENOTFOUND for an unknown path, CM_ESTATE when the
 * path exists for other methods (allow, if not NULL, receives them).
 */
CM_MUST_CHECK int gw_route_find(const char *method, const char *path, const gw_route_t **out,
                                cm_buf_t *allow);

/**
 * The table for cm_http: every public route to the edge handler, the HTML
 * pages (pages.h) to their handlers, plus an
 * OPTIONS route per path when cors is set. Returns a new array (*n entries)
 * the caller free()s.
 */
cm_route_t *gw_http_routes_new(bool cors, size_t *n);

/** True if q (a raw query string) may be forwarded: printable ASCII without '#', bounded. */
bool gw_query_valid(const char *q);

#endif

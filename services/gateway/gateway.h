/*
 * gateway.h — the gateway's one object and its life cycle: the verifier,
 * the upstream pools, the limiter, the counters and the route table that
 * every worker thread shares (read-only; its parts are thread-safe).
 */
#ifndef GW_GATEWAY_H
#define GW_GATEWAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "cm/http.h"
#include "cm/jwt.h"
#include "cm/metrics.h"
#include "clientaddr.h"
#include "config.h"
#include "proxy.h"
#include "ratelimit.h"

typedef enum gw_upstream_id { GW_UP_AUTH = 0, GW_UP_REFERRAL, GW_UP_COUNT } gw_upstream_id_t;

/** The whole gateway: shared read-only by every worker thread (its parts are thread-safe). */
typedef struct gw {
    const gw_config_t *cfg; /* borrowed */
    cm_jwt_verifier_t *verifier;
    gw_upstream_t *upstreams[GW_UP_COUNT];
    gw_limiter_t *limiter;        /* NULL when RATE_LIMITS=off */
    cm_metrics_t *metrics;        /* borrowed: the registry /metrics serves */
    cm_family_t *upstream_errors; /* upstream, kind */
    cm_family_t *rate_limited;    /* class */
    cm_family_t *edge_auth_failures;
    cm_route_t *routes; /* the table handed to cm_http */
    size_t nroutes;
    atomic_llong jwks_next_ms; /* earliest next JWKS fetch (monotonic ms) */
    cm_family_t *jwks_fetches; /* by result */
    struct gw_pages *pages;    /* the HTML pages' keys and policy (pages.h) */
} gw_t;

/**
 * Creates the gateway from cfg (borrowed; must outlive it): loads the JWT
 * keys, makes the upstream pools, the limiter, its counters in metrics
 * (borrowed: the registry /metrics serves) and the route table. Returns
 * NULL with *err set (and a line on stderr) on failure.
 */
gw_t *gw_new(const gw_config_t *cfg, cm_metrics_t *metrics, int *err);

/** Frees the gateway. NULL-safe; the HTTP server must be stopped first. */
void gw_free(gw_t *gw);

/** The readiness probe for cm_http: the gateway itself, never its upstreams (see gateway.c). */
bool gw_ready(void *ctx, cm_buf_t *why);

#endif

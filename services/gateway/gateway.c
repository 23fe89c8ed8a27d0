/* gateway.c — the gateway's life cycle (see gateway.h). */
#include "gateway.h"

#include <stdlib.h>

#include "cm/service.h"
#include "pages.h"
#include "routes.h"

/* Clients are tracked per class; this bounds the limiter's memory (~100 bytes each). */
#define GW_RATE_MAX_CLIENTS 65536
/* Verified tokens cached by the verifier (an ES256 check costs about 0.4 ms). */
#define GW_JWT_CACHE 10000

static void make_metrics(gw_t *gw, cm_metrics_t *metrics)
{
    gw->metrics = metrics;
    gw->upstream_errors =
        cm_metrics_counter(gw->metrics, "linktr_gateway_upstream_errors_total",
                           "Requests the gateway could not complete upstream.", "upstream,kind");
    gw->rate_limited = cm_metrics_counter(gw->metrics, "linktr_gateway_rate_limited_total",
                                          "Requests refused with 429, by route class.", "class");
    gw->jwks_fetches =
        cm_metrics_counter(gw->metrics, "linktr_gateway_jwks_fetches_total",
                           "Fetches of auth's JWKS after an unknown key id.", "result");
    gw->edge_auth_failures =
        cm_metrics_counter(gw->metrics, "linktr_gateway_edge_auth_failures_total",
                           "Requests refused with 401 at the gateway.", NULL);
    cm_family_t *waiting = cm_metrics_gauge(
        gw->metrics, "linktr_gateway_upstream_waiting_requests",
        "Requests waiting for a connection slot to an upstream (all UPSTREAM_MAX_CONNECTIONS "
        "in use).",
        "upstream");
    for (int i = 0; i < GW_UP_COUNT; i++)
        if (gw->upstreams[i])
            gw_upstream_export_waiting(gw->upstreams[i], waiting);
}

gw_t *gw_new(const gw_config_t *cfg, cm_metrics_t *metrics, int *err)
{
    gw_t *gw = cm_xcalloc(1, sizeof *gw);
    gw->cfg = cfg;
    atomic_init(&gw->jwks_next_ms, 0);
    gw->verifier = cm_jwt_verifier_from_config("gateway", &cfg->jwt, GW_JWT_CACHE, err);
    if (!gw->verifier) {
        gw_free(gw);
        return NULL;
    }
    size_t pool = (size_t)cfg->upstream_max_conns;
    gw->upstreams[GW_UP_AUTH] = gw_upstream_new("auth", &cfg->auth_urls, cfg->connect_timeout_ms,
                                                cfg->upstream_timeout_ms, pool);
    gw->upstreams[GW_UP_REFERRAL] = gw_upstream_new(
        "referral", &cfg->referral_urls, cfg->connect_timeout_ms, cfg->upstream_timeout_ms, pool);
    if (cfg->rate_limits)
        gw->limiter = gw_limiter_new(cfg->rates, GW_RATE_MAX_CLIENTS, cfg->ipv6_prefix);
    make_metrics(gw, metrics);
    gw->pages = gw_pages_new(cfg);
    gw->routes = gw_http_routes_new(cfg->cors_origins.n > 0, &gw->nroutes);
    *err = 0;
    return gw;
}

void gw_free(gw_t *gw)
{
    if (!gw)
        return;
    cm_jwt_verifier_free(gw->verifier);
    for (int i = 0; i < GW_UP_COUNT; i++)
        gw_upstream_free(gw->upstreams[i]);
    gw_limiter_free(gw->limiter);
    gw_pages_free(gw->pages);
    free(gw->routes);
    free(gw);
}

bool gw_ready(void *ctx, cm_buf_t *why)
{
    /* The gateway's own readiness: once it listens, with its keys and routes
     * loaded (gw_new fails otherwise), it can answer; draining is handled by
     * cm_http. Upstream health is deliberately left out: behind a Service,
     * one unready upstream would make every gateway pod unready, and the
     * entry would answer 503 to the routes that still work. A failing
     * upstream shows per request (502/503/504, linktr_gateway_upstream_errors_total). */
    (void)ctx;
    (void)why;
    return true;
}

/*
 * linktr-gateway — the public HTTP edge: routes every public path to auth
 * or referral, checks tokens, limits and headers on the way. Stateless.
 *
 * Start-up, signals and stop order are cm_service_main's; this file is the
 * gateway's own wiring.
 */
#include <stdbool.h>

#include <curl/curl.h>

#include "cm/service.h"
#include "config.h"
#include "gateway.h"

typedef struct app {
    bool curl; /* curl_global_init succeeded: dispose cleans it up */
    gw_config_t cfg;
    gw_t *gw;
} app_t;

static int load(void *arg, const cm_service_config_t **svc)
{
    app_t *app = arg;
    if (gw_config_load(&app->cfg) != 0)
        return CM_EINVAL;
    *svc = &app->cfg.svc;
    return 0;
}

/* The keys named in JWT_PUBLIC_KEYS are read here: a bad one is a start-up failure. */
static int start(void *arg, const cm_service_env_t *env, cm_http_config_t *http)
{
    app_t *app = arg;
    /* libcurl's global set-up, once, before any thread of ours uses it (not thread-safe). */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return CM_EIO;
    app->curl = true;
    int err = 0;
    if (!(app->gw = gw_new(&app->cfg, env->metrics, &err)))
        return err;
    http->max_body = CM_MAX_BODY;
    http->routes = app->gw->routes;
    http->nroutes = app->gw->nroutes;
    http->ctx = app->gw;
    http->ready = gw_ready;
    http->ready_ctx = app->gw;
    /* The longest a forwarded request can take, plus a margin for the answer. */
    http->drain_ms = app->cfg.upstream_timeout_ms + 2000;
    return 0;
}

static void stop(void *arg)
{
    app_t *app = arg;
    gw_free(app->gw);
    app->gw = NULL;
}

static void dispose(void *arg)
{
    app_t *app = arg;
    if (app->curl)
        curl_global_cleanup();
    gw_config_dispose(&app->cfg);
}

CM_SERVICE_MAIN(app_t, .name = "gateway")

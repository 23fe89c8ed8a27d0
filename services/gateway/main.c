/*
 * linktr-gateway — the public HTTP edge: routes every public path to auth
 * or referral, checks tokens, limits and headers on the way. Stateless.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <curl/curl.h>

#include "cm/http.h"
#include "cm/log.h"
#include "config.h"
#include "routes.h"

/* Blocks SIGINT/SIGTERM in this thread, so every thread started later inherits the mask. */
static void block_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static cm_http_t *start_http(const gw_config_t *cfg, gw_t *gw)
{
    cm_http_config_t hc = {
        .service = "gateway",
        .bind = cfg->bind,
        .port = cfg->port,
        .threads = cfg->threads,
        .max_body = CM_MAX_BODY,
        .request_timeout_ms = cfg->request_timeout_ms,
        .keepalive_timeout_ms = cfg->keepalive_timeout_ms,
        .routes = gw->routes,
        .nroutes = gw->nroutes,
        .ctx = gw,
        .ready = gw_ready,
        .ready_ctx = gw,
        .metrics = gw->metrics,
    };
    int err = 0;
    cm_http_t *srv = cm_http_start(&hc, &err);
    if (!srv)
        CM_ERROR(NULL, "cannot listen on %s:%d: %s", cfg->bind, cfg->port, cm_strerror(err));
    return srv;
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fputs("linktr-gateway: curl_global_init failed\n", stderr);
        return 1;
    }
    sigset_t set;
    block_signals(&set);
    gw_config_t cfg;
    int status = 1, err = 0;
    gw_t *gw = NULL;
    cm_http_t *srv = NULL;
    if (gw_config_load(&cfg) != 0) {
        status = 2;
        goto out;
    }
    cm_log_init("gateway", cfg.log_level);
    if (!(gw = gw_new(&cfg, &err))) {
        status = 2; /* the keys named in JWT_PUBLIC_KEYS: a configuration error too */
        goto out;
    }
    if (!(srv = start_http(&cfg, gw)))
        goto out;
    CM_INFO(NULL, "listening on %s:%d", cfg.bind, cfg.port);
    int sig = 0;
    sigwait(&set, &sig);
    CM_INFO(NULL, "signal %d: finishing in-flight requests", sig);
    /* The longest a forwarded request can take, plus a margin for the answer. */
    if (!cm_http_drain(srv, cfg.upstream_timeout_ms + 2000))
        CM_WARN(NULL, "stopping with requests still in flight");
    cm_http_stop(srv);
    status = 0;
out:
    gw_free(gw);
    gw_config_dispose(&cfg);
    curl_global_cleanup();
    return status;
}

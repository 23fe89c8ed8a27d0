/*
 * linktr-mailer — turns events about people into mails.
 *
 *     linktr-mailer            serve (consumer; /healthz /readyz /metrics /version on ADMIN_PORT)
 *
 * With SMTP_URL set, mails go out over SMTP; without it, into the Maildir
 * MAIL_DIR. Undeliverable mails go to the mail.dead topic.
 *     linktr-mailer migrate    apply the migrations and exit
 *
 * Start-up, signals and stop order are cm_service_main's; this file is the
 * mailer's own wiring.
 */
#include <stdbool.h>

#include <curl/curl.h>

#include "cm/consumer.h"
#include "cm/events.h"
#include "cm/log.h"
#include "cm/producer.h"
#include "cm/service.h"
#include "config.h"
#include "consumer.h"
#include "maildir.h"

extern const cm_migration_t mailer_migrations[];

typedef struct app {
    bool curl; /* curl_global_init succeeded: dispose cleans it up */
    mail_config_t cfg;
    cm_db_pool_t *pool;      /* borrowed from the skeleton */
    cm_producer_t *producer; /* for mail.dead */
    cm_consumer_t *consumer;
    mail_ctx_t mail;
} app_t;

static bool ready(void *arg, cm_buf_t *why)
{
    app_t *app = arg;
    return cm_consumer_ready(app->pool, app->consumer, why);
}

/* mail_dead_fn over the producer: waits for the broker's acknowledgement. */
static int send_dead(void *ctx, const char *key, const char *value, size_t len)
{
    return cm_producer_send(ctx, CM_EV_MAIL_DEAD, key, value, len, 10000);
}

static int load(void *arg, const cm_service_config_t **svc)
{
    app_t *app = arg;
    if (mail_config_load(&app->cfg) != 0)
        return CM_EINVAL;
    *svc = &app->cfg.svc;
    return 0;
}

/* SMTP round trips: from a local relay (ms) to a slow provider near the 30 s timeout. */
static const double SEND_BUCKETS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

/* The handler's context: the pool, the metrics and the dead-letter producer. */
static int prepare_handler(app_t *app, cm_metrics_t *metrics)
{
    int err = 0;
    app->producer = cm_producer_new(app->cfg.svc.kafka_bootstrap, "mailer", &err);
    if (!app->producer)
        return err;
    app->mail = (mail_ctx_t){
        .cfg = &app->cfg,
        .pool = app->pool,
        .sent = cm_metrics_counter(metrics, "linktr_mails_sent_total",
                                   "Mails delivered, by template.", "template"),
        .failed =
            cm_metrics_counter(metrics, "linktr_mails_failed_total",
                               "Mail deliveries that failed (retried), by template.", "template"),
        .dead_total =
            cm_metrics_counter(metrics, "linktr_mails_dead_total",
                               "Mails given up on and sent to mail.dead, by template.", "template"),
        .send_duration = cm_metrics_histogram(
            metrics, "linktr_mail_send_duration_seconds",
            "Time to hand one mail to the SMTP server or the Maildir.", "transport,result",
            SEND_BUCKETS, sizeof SEND_BUCKETS / sizeof SEND_BUCKETS[0]),
        .dead = send_dead,
        .dead_ctx = app->producer};
    return 0;
}

static int start(void *arg, const cm_service_env_t *env, cm_http_config_t *http)
{
    static const cm_route_t no_routes[1] = {{NULL, NULL, NULL, 0}};
    app_t *app = arg;
    /* libcurl's global set-up, once, before any thread of ours uses it (not thread-safe). */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return CM_EIO;
    app->curl = true;
    app->pool = env->pool;
    int err = 0;
    if (!app->cfg.smtp_url && (err = mail_maildir_init(app->cfg.mail_dir)) != 0) {
        CM_ERROR(NULL, "MAIL_DIR %s: cannot create the Maildir", app->cfg.mail_dir);
        return err;
    }
    if ((err = prepare_handler(app, env->metrics)) != 0)
        return err;
    cm_consumer_config_t cc = {.bootstrap = app->cfg.svc.kafka_bootstrap,
                               .group_id = "mailer",
                               .topics = mail_topics,
                               .fn = mail_consume,
                               .ctx = &app->mail,
                               .metrics = env->metrics,
                               .fetch_wait_ms = app->cfg.svc.kafka_fetch_wait_ms};
    if (!(app->consumer = cm_consumer_start(&cc, &err)))
        return err;
    http->routes = no_routes;
    http->nroutes = 0;
    http->ready = ready;
    http->ready_ctx = app;
    return 0;
}

static void stop(void *arg)
{
    app_t *app = arg;
    cm_consumer_stop(app->consumer);
    cm_producer_free(app->producer);
}

static void dispose(void *arg)
{
    app_t *app = arg;
    if (app->curl)
        curl_global_cleanup();
    mail_config_dispose(&app->cfg);
}

CM_SERVICE_MAIN(app_t, .name = "mailer", .db = &cm_service_postgres,
                .migrations = mailer_migrations)

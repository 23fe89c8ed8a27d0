/*
 * linktr-mailer — turns events about people into mails.
 *
 *     linktr-mailer            serve (consumer + /healthz /readyz /metrics)
 *
 * With SMTP_URL set, mails go out over SMTP; without it, into the Maildir
 * MAIL_DIR. Undeliverable mails go to the mail.dead topic.
 *     linktr-mailer migrate    apply the migrations and exit
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "cm/crypto.h"
#include "cm/events.h"
#include "cm/db.h"
#include "cm/http.h"
#include "cm/kafka.h"
#include "cm/log.h"
#include "cm/metrics.h"
#include "config.h"
#include "consumer.h"
#include "maildir.h"

extern const cm_migration_t mailer_migrations[];
extern const size_t mailer_migrations_count;

typedef struct app {
    mail_config_t cfg;
    cm_db_pool_t *pool;
    cm_metrics_t *metrics;
    cm_producer_t *producer; /* for mail.dead */
    cm_consumer_t *consumer;
    cm_http_t *http;
    mail_ctx_t mail;
} app_t;

static bool ready(void *arg, cm_buf_t *why)
{
    app_t *app = arg;
    bool ok = true;
    if (!cm_db_ping(app->pool)) {
        cm_buf_puts(why, "database");
        ok = false;
    }
    /* Not connected to a broker, or not heard from one lately: events are not being handled. */
    if (!cm_consumer_healthy(app->consumer)) {
        cm_buf_puts(why, ok ? "kafka consumer" : ", kafka consumer");
        ok = false;
    }
    return ok;
}

/* mail_dead_fn over the producer: waits for the broker's acknowledgement. */
static int send_dead(void *ctx, const char *key, const char *value, size_t len)
{
    return cm_producer_send(ctx, CM_EV_MAIL_DEAD, key, value, len, 10000);
}

static int open_db(app_t *app)
{
    cm_db_config_t dbc = {.conninfo = app->cfg.db_url,
                          .size = app->cfg.db_pool_size,
                          .acquire_timeout_ms = 5000,
                          .connect_timeout_s = 5,
                          .statement_timeout_ms = 10000};
    int err = 0;
    app->pool = cm_db_pool_new(&dbc, &err);
    if (!app->pool)
        return err;
    return cm_db_migrate(app->pool, mailer_migrations, mailer_migrations_count);
}

/* The handler's context: the pool, the metrics and the dead-letter producer. */
static int prepare_handler(app_t *app)
{
    int err = 0;
    app->metrics = cm_metrics_new();
    app->producer = cm_producer_new(app->cfg.kafka, "mailer", &err);
    if (!app->producer)
        return err;
    app->mail =
        (mail_ctx_t){.cfg = &app->cfg,
                     .pool = app->pool,
                     .sent = cm_metrics_counter(app->metrics, "linktr_mails_sent_total",
                                                "Mails delivered, by template.", "template"),
                     .failed = cm_metrics_counter(
                         app->metrics, "linktr_mails_failed_total",
                         "Mail deliveries that failed (retried), by template.", "template"),
                     .dead = send_dead,
                     .dead_ctx = app->producer};
    return 0;
}

static int start(app_t *app)
{
    static const cm_route_t no_routes[1] = {{NULL, NULL, NULL, 0}};
    int err = 0;
    if (!app->cfg.smtp_url && (err = mail_maildir_init(app->cfg.mail_dir)) != 0) {
        CM_ERROR(NULL, "MAIL_DIR %s: cannot create the Maildir", app->cfg.mail_dir);
        return err;
    }
    if ((err = prepare_handler(app)) != 0)
        return err;
    cm_consumer_config_t cc = {.bootstrap = app->cfg.kafka,
                               .group_id = "mailer",
                               .topics = mail_topics,
                               .fn = mail_consume,
                               .ctx = &app->mail,
                               .metrics = app->metrics};
    app->consumer = cm_consumer_start(&cc, &err);
    if (!app->consumer)
        return err;
    cm_http_config_t hc = {.service = "mailer",
                           .bind = app->cfg.bind,
                           .port = app->cfg.port,
                           .threads = app->cfg.http_threads,
                           .request_timeout_ms = app->cfg.request_timeout_ms,
                           .keepalive_timeout_ms = app->cfg.keepalive_timeout_ms,
                           .routes = no_routes,
                           .nroutes = 0,
                           .ready = ready,
                           .ready_ctx = app,
                           .metrics = app->metrics};
    app->http = cm_http_start(&hc, &err);
    return app->http ? 0 : err;
}

static void stop(app_t *app)
{
    cm_http_stop(app->http);
    cm_consumer_stop(app->consumer);
    cm_producer_free(app->producer);
    cm_db_pool_free(app->pool);
    cm_metrics_free(app->metrics);
    mail_config_dispose(&app->cfg);
}

int main(int argc, char **argv)
{
    bool migrate_only = argc > 1 && strcmp(argv[1], "migrate") == 0;
    if (argc > 2 || (argc == 2 && !migrate_only)) {
        fprintf(stderr, "usage: linktr-mailer [migrate]\n");
        return 2;
    }
    app_t app = {0};
    if (mail_config_load(&app.cfg) != 0)
        return 2;
    cm_log_init("mailer", app.cfg.log_level);
    /* Block the signals before any thread starts, so only sigwait sees them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    int rc = cm_crypto_init();
    if (rc == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        rc = CM_EIO;
    if (rc == 0)
        rc = open_db(&app);
    if (rc == 0 && !migrate_only)
        rc = start(&app);
    if (rc == 0 && !migrate_only) {
        CM_INFO(NULL, "mailer listening on %s:%d", app.cfg.bind, app.cfg.port);
        int sig = 0;
        sigwait(&sigs, &sig);
        CM_INFO(NULL, "mailer stopping (signal %d)", sig);
    } else if (rc != 0) {
        CM_ERROR(NULL, "mailer failed to start: %s", cm_strerror(rc));
    }
    stop(&app);
    curl_global_cleanup();
    return rc == 0 ? 0 : 1;
}

/*
 * The transactional outbox: cm_outbox_add() and the relay thread that
 * publishes committed rows through the producer (see cm/outbox.h).
 */
#include "cm/outbox.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm/events.h"
#include "cm/log.h"
#include "cm/util.h"
#include "kafka_int.h"

/* How long the relay waits for one batch's acknowledgements before it gives up on the rest. */
#define OUTBOX_ROUND_MS 10000
/* The safety-net wake-up of the relay when no NOTIFY arrives. */
#define OUTBOX_IDLE_MS 2000
#define OUTBOX_BACKOFF_MIN_MS 250
#define OUTBOX_BACKOFF_MAX_MS 10000

/* NOTIFY channels are SQL identifiers and cannot be parameters: only [a-z_][a-z0-9_]{0,62}. */
static bool valid_channel(const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len > 63 || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
        return false;
    for (size_t i = 1; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

int cm_outbox_add(cm_db_t *db, const char *channel, const char *key, json_t *envelope)
{
    const char *id = json_string_value(json_object_get(envelope, "id"));     /* borrowed */
    const char *type = json_string_value(json_object_get(envelope, "type")); /* borrowed */
    if (!db || !valid_channel(channel) || !key || !key[0] || !id || !cm_is_uuid(id, strlen(id)) ||
        !cm__kafka_valid_topic(type))
        return CM_EINVAL;
    char *payload = json_dumps(envelope, JSON_COMPACT);
    if (!payload)
        return CM_EINVAL;
    int rc = CM_ETOOBIG;
    if (strlen(payload) > CM_EVENT_MAX_BYTES)
        goto out;
    const char *params[] = {id, type, key, payload};
    rc = cm_db_prepared(db, "cm_outbox_insert",
                        "INSERT INTO outbox (event_id, topic, key, payload) "
                        "VALUES ($1::uuid, $2, $3, $4)",
                        4, params, NULL);
    if (rc != 0)
        goto out;
    const char *notify[] = {channel};
    rc = cm_db_prepared(db, "cm_outbox_notify", "SELECT pg_notify($1, '')", 1, notify, NULL);
out:
    free(payload);
    return rc;
}

struct cm_outbox_relay {
    char *conninfo;
    char *channel;
    cm_db_pool_t *pool;
    cm_producer_t *producer;
    int batch;
    cm_family_t *backlog;   /* borrowed from the registry, or NULL */
    cm_family_t *oldest;    /* age of the oldest unsent row, seconds; NULL with backlog */
    cm_family_t *published; /* borrowed from the registry, or NULL */
    PGconn *listen;         /* the LISTEN connection; NULL while down */
    int wake[2];            /* self-pipe: kick and stop write, the thread polls */
    atomic_bool stop;
    pthread_t thread;
};

/* Waits up to timeout_ms for fd (may be -1) to get events, or for a kick/stop. Returns >0 when fd
 * is ready. */
static int relay_wait(cm_outbox_relay_t *r, int fd, short events, int timeout_ms)
{
    struct pollfd fds[2] = {{r->wake[0], POLLIN, 0}, {fd, events, 0}};
    int n = poll(fds, fd >= 0 ? 2 : 1, timeout_ms < 0 ? 0 : timeout_ms);
    if (n <= 0)
        return 0;
    if (fds[0].revents & POLLIN) {
        char buf[64];
        while (read(r->wake[0], buf, sizeof buf) > 0) {
        }
    }
    return fd >= 0 && fds[1].revents ? 1 : 0;
}

/* Connects without blocking the stop path (libpq's async connect, polled with the self-pipe). */
static PGconn *listen_connect_async(cm_outbox_relay_t *r)
{
    const char *keys[] = {"dbname", "connect_timeout", NULL};
    const char *vals[] = {r->conninfo, "5", NULL};
    PGconn *c = PQconnectStartParams(keys, vals, 1);
    if (!c || PQstatus(c) == CONNECTION_BAD)
        goto fail;
    int64_t deadline = cm_now_mono_ms() + 5000;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK) {
        if (st == PGRES_POLLING_FAILED || atomic_load(&r->stop))
            goto fail;
        int64_t left = deadline - cm_now_mono_ms();
        short ev = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
        if (left <= 0)
            goto fail;
        if (relay_wait(r, PQsocket(c), ev, (int)left) > 0)
            st = PQconnectPoll(c);
    }
    return c;
fail:
    if (c)
        CM_DEBUG(NULL, "outbox relay: LISTEN connection failed: %s", PQerrorMessage(c));
    PQfinish(c);
    return NULL;
}

/* Opens the LISTEN connection; the channel was validated at start and is quoted here. */
static PGconn *listen_open(cm_outbox_relay_t *r)
{
    PGconn *c = listen_connect_async(r);
    if (!c)
        return NULL;
    char *ident = PQescapeIdentifier(c, r->channel, strlen(r->channel));
    if (!ident) {
        PQfinish(c);
        return NULL;
    }
    /* An identifier cannot be a parameter; it is strictly validated and escaped. */
    cm_buf_t sql;
    cm_buf_init(&sql);
    cm_buf_puts(&sql, "LISTEN ");
    cm_buf_puts(&sql, ident);
    PQfreemem(ident);
    PGresult *res = PQexec(c, sql.data);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    cm_buf_dispose(&sql);
    if (!ok || PQsetnonblocking(c, 1) != 0) {
        CM_WARN(NULL, "outbox relay: LISTEN failed: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Waits for a NOTIFY, a kick or the timeout; drops the LISTEN connection when it broke. */
static void relay_idle(cm_outbox_relay_t *r, int timeout_ms)
{
    int fd = r->listen ? PQsocket(r->listen) : -1;
    if (relay_wait(r, fd, POLLIN, timeout_ms) <= 0 || !r->listen)
        return;
    if (!PQconsumeInput(r->listen)) {
        CM_WARN(NULL, "outbox relay: LISTEN connection lost: %s", PQerrorMessage(r->listen));
        PQfinish(r->listen);
        r->listen = NULL;
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(r->listen)) != NULL)
        PQfreemem(n);
}

/* Publishes every row of res (id, topic, key, payload); appends the ids acknowledged to ids. */
static int publish_rows(cm_outbox_relay_t *r, PGresult *res, cm_buf_t *ids, int *sent)
{
    int n = PQntuples(res);
    cm__delivery_t **d = cm_xcalloc((size_t)n + 1, sizeof(cm__delivery_t *));
    int rc = 0;
    for (int i = 0; i < n; i++) {
        int e = cm__produce_async(r->producer, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                                  (size_t)PQgetlength(res, i, 2), PQgetvalue(res, i, 3),
                                  (size_t)PQgetlength(res, i, 3), &d[i]);
        rc = rc ? rc : e;
    }
    int64_t deadline = cm_now_mono_ms() + OUTBOX_ROUND_MS;
    for (int i = 0; i < n; i++) {
        int e = d[i] ? cm__delivery_wait(d[i], deadline, &r->stop) : CM_EKAFKA;
        cm__delivery_put(d[i]);
        if (e != 0) {
            rc = rc ? rc : e;
            continue;
        }
        cm_buf_puts(ids, ids->len > 1 ? "," : "");
        cm_buf_puts(ids, PQgetvalue(res, i, 0)); /* a bigint from the database: digits only */
        (*sent)++;
    }
    free(d);
    return rc;
}

static const char take_sql[] = "SELECT id, topic, key, payload FROM outbox WHERE sent_at IS NULL "
                               "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED";
static const char mark_sql[] = "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])";

/* One round in one transaction: take, publish, mark the acknowledged rows sent. */
static int relay_batch(cm_outbox_relay_t *r, cm_db_t *db, int *taken, int *sent)
{
    char limit[16];
    snprintf(limit, sizeof limit, "%d", r->batch);
    const char *params[] = {limit};
    PGresult *res = NULL;
    int rc = cm_db_prepared(db, "cm_outbox_take", take_sql, 1, params, &res);
    if (rc != 0)
        return rc;
    *taken = PQntuples(res);
    cm_buf_t ids;
    cm_buf_init(&ids);
    cm_buf_puts(&ids, "{");
    int prc = publish_rows(r, res, &ids, sent);
    PQclear(res);
    cm_buf_puts(&ids, "}");
    if (*sent > 0) {
        const char *mark[] = {ids.data};
        rc = cm_db_prepared(db, "cm_outbox_mark", mark_sql, 1, mark, NULL);
    }
    cm_buf_dispose(&ids);
    return rc != 0 ? rc : prc;
}

static void refresh_backlog(cm_outbox_relay_t *r, cm_db_t *db)
{
    if (!r->backlog)
        return;
    PGresult *res = NULL;
    /* The age, not only the count: 10 rows stuck for an hour matter more than 1000 of a burst. */
    if (cm_db_prepared(db, "cm_outbox_backlog",
                       "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)"
                       " FROM outbox WHERE sent_at IS NULL",
                       0, NULL, &res) != 0)
        return;
    cm_metric_set(r->backlog, NULL, strtod(PQgetvalue(res, 0, 0), NULL));
    cm_metric_set(r->oldest, NULL, strtod(PQgetvalue(res, 0, 1), NULL));
    PQclear(res);
}

/* Returns 0 when every row taken was published; *more when a full batch was taken. */
static int relay_round(cm_outbox_relay_t *r, bool *more)
{
    cm_db_t *db = NULL;
    int taken = 0, sent = 0;
    *more = false;
    int rc = cm_db_acquire(r->pool, &db);
    if (rc != 0)
        return rc;
    /* Before the round too: waiting for a broker that went away takes up to OUTBOX_ROUND_MS,
     * and the gauge must show the rows piling up meanwhile. */
    refresh_backlog(r, db);
    rc = cm_db_begin(db);
    if (rc != 0)
        goto out;
    int brc = relay_batch(r, db, &taken, &sent);
    /* Commit even after a Kafka failure: the acknowledged rows must be marked sent. */
    rc = cm_db_commit(db);
    if (rc == 0 && sent > 0 && r->published)
        cm_metric_add(r->published, NULL, sent);
    rc = rc != 0 ? rc : brc;
    refresh_backlog(r, db);
    *more = rc == 0 && taken == r->batch;
out:
    if (rc != 0)
        cm_db_rollback(db);
    cm_db_release(db);
    return rc;
}

/* A round not taken because Kafka is down: the backlog gauge still tells how far behind we are. */
static int relay_skip(cm_outbox_relay_t *r)
{
    cm_db_t *db = NULL;
    if (r->backlog && cm_db_acquire(r->pool, &db) == 0) {
        refresh_backlog(r, db);
        cm_db_release(db);
    }
    return CM_EUNAVAIL;
}

static void *relay_loop(void *arg)
{
    cm_outbox_relay_t *r = arg;
    int backoff = 0;
    int64_t next_listen = 0;
    while (!atomic_load(&r->stop)) {
        if (!r->listen && cm_now_mono_ms() >= next_listen) {
            r->listen = listen_open(r);
            next_listen = cm_now_mono_ms() + OUTBOX_IDLE_MS;
        }
        bool more = false;
        /* After a failure, look before producing again: while the cluster is down a
         * round would only pile copies of the same rows into the producer's queue. */
        int rc =
            backoff && !cm_producer_ping(r->producer, 500) ? relay_skip(r) : relay_round(r, &more);
        if (rc != 0) {
            backoff = backoff ? backoff * 2 : OUTBOX_BACKOFF_MIN_MS;
            backoff = backoff > OUTBOX_BACKOFF_MAX_MS ? OUTBOX_BACKOFF_MAX_MS : backoff;
            CM_WARN(NULL, "outbox relay: %s; retrying in %d ms", cm_strerror(rc), backoff);
        } else {
            backoff = 0;
        }
        if (!more && !atomic_load(&r->stop))
            relay_idle(r, backoff ? backoff : OUTBOX_IDLE_MS);
    }
    PQfinish(r->listen);
    r->listen = NULL;
    return NULL;
}

static void relay_free(cm_outbox_relay_t *r)
{
    if (r->wake[0] >= 0)
        close(r->wake[0]);
    if (r->wake[1] >= 0)
        close(r->wake[1]);
    free(r->conninfo);
    free(r->channel);
    free(r);
}

static int open_self_pipe(int fds[2])
{
    if (pipe(fds) != 0)
        return CM_EIO;
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        if (fl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) != 0 ||
            fcntl(fds[i], F_SETFD, FD_CLOEXEC) != 0)
            return CM_EIO;
    }
    return 0;
}

cm_outbox_relay_t *cm_outbox_relay_start(const cm_outbox_config_t *cfg, int *err)
{
    int dummy = 0;
    err = err ? err : &dummy;
    *err = CM_EINVAL;
    if (!cfg || !cfg->conninfo || !cfg->pool || !cfg->producer || !valid_channel(cfg->channel) ||
        cfg->batch < 0 || cfg->batch > 10000)
        return NULL;
    cm_outbox_relay_t *r = cm_xcalloc(1, sizeof *r);
    r->conninfo = cm_xstrdup(cfg->conninfo);
    r->channel = cm_xstrdup(cfg->channel);
    r->pool = cfg->pool;
    r->producer = cfg->producer;
    r->batch = cfg->batch ? cfg->batch : 100;
    r->wake[0] = r->wake[1] = -1;
    atomic_init(&r->stop, false);
    if (cfg->metrics) {
        r->backlog = cm_metrics_gauge(cfg->metrics, "linktr_outbox_backlog",
                                      "Outbox rows not yet published to Kafka.", NULL);
        r->oldest =
            cm_metrics_gauge(cfg->metrics, "linktr_outbox_oldest_unsent_age_seconds",
                             "Age of the oldest outbox row not yet published (0: none).", NULL);
        r->published = cm_metrics_counter(cfg->metrics, "linktr_outbox_published_total",
                                          "Outbox rows published to Kafka.", NULL);
    }
    *err = open_self_pipe(r->wake);
    if (*err == 0 && pthread_create(&r->thread, NULL, relay_loop, r) != 0)
        *err = CM_ENOMEM;
    if (*err != 0) {
        relay_free(r);
        return NULL;
    }
    return r;
}

void cm_outbox_relay_kick(cm_outbox_relay_t *r)
{
    if (!r)
        return;
    /* A full pipe already means "wake up": a failed write loses nothing. */
    ssize_t n = write(r->wake[1], "k", 1);
    (void)n;
}

void cm_outbox_relay_stop(cm_outbox_relay_t *r)
{
    if (!r)
        return;
    atomic_store(&r->stop, true);
    cm_outbox_relay_kick(r);
    pthread_join(r->thread, NULL);
    relay_free(r);
}

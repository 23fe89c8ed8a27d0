/*
 * Kafka through librdkafka: the idempotent producer, the transactional
 * outbox relay and the consumer loop (see cm/kafka.h).
 *
 * librdkafka errors are converted to CM_E* codes here and nowhere else.
 */
#include "cm/kafka.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "cm/events.h"
#include "cm/log.h"
#include "cm/util.h"

/* How long the relay waits for one batch's acknowledgements before it gives up on the rest. */
#define OUTBOX_ROUND_MS 10000
/* The safety-net wake-up of the relay when no NOTIFY arrives. */
#define OUTBOX_IDLE_MS 2000
#define OUTBOX_BACKOFF_MIN_MS 250
#define OUTBOX_BACKOFF_MAX_MS 10000
#define CONSUMER_BACKOFF_MIN_MS 100
#define CONSUMER_BACKOFF_MAX_MS 5000
/* The longest the consumer loop waits in one poll (also how soon it sees a stop). */
#define CONSUMER_POLL_MS 200
/* How long a seek may wait for the fetcher to take the new position (a local hand-over). */
#define CONSUMER_SEEK_TIMEOUT_MS 2000
/* A consumer that has not heard from a broker for this long is not healthy. */
#define CONSUMER_STALE_MS 15000

/* ---- shared helpers --------------------------------------------------------- */

static int map_err(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return 0;
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
        return CM_ETIMEDOUT;
    default:
        return CM_EKAFKA;
    }
}

/* librdkafka's own log lines go through ours (they never carry payloads). */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    cm_log_level_t lvl = level <= 4 ? CM_LOG_WARN : CM_LOG_DEBUG;
    CM_LOG(lvl, NULL, "kafka %s %s: %s", rd_kafka_name(rk), fac, buf);
}

/* Sets each key/value pair; returns 0 or CM_EINVAL (and logs the offending key). */
static int conf_set_all(rd_kafka_conf_t *conf, const char *const kv[][2])
{
    char errstr[256];
    for (size_t i = 0; kv[i][0]; i++) {
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK) {
            CM_ERROR(NULL, "kafka config %s: %s", kv[i][0], errstr);
            return CM_EINVAL;
        }
    }
    return 0;
}

/* A topic name Kafka accepts and that is not a subscription regex ("^…"). */
static bool valid_topic(const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len > 249)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* ---- delivery state ------------------------------------------------------------
 * One per produced message, shared by the sender and the delivery-report
 * callback: whoever lets go last frees it, so a sender that timed out never
 * leaves the callback writing into freed memory.
 */
typedef struct delivery {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    bool done;
    int err;
} delivery_t;

static delivery_t *delivery_new(void)
{
    delivery_t *d = cm_xcalloc(1, sizeof *d);
    pthread_mutex_init(&d->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cv, &attr);
    pthread_condattr_destroy(&attr);
    d->refs = 2; /* the sender and the callback */
    return d;
}

static void delivery_put(delivery_t *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    bool last = --d->refs == 0;
    pthread_mutex_unlock(&d->mu);
    if (last) {
        pthread_mutex_destroy(&d->mu);
        pthread_cond_destroy(&d->cv);
        free(d);
    }
}

/* Waits until the report came or deadline (monotonic ms) passed, or *stop (may be NULL) is set. */
static int delivery_wait(delivery_t *d, int64_t deadline, atomic_bool *stop)
{
    pthread_mutex_lock(&d->mu);
    while (!d->done) {
        int64_t now = cm_now_mono_ms();
        if (now >= deadline || (stop && atomic_load(stop)))
            break;
        int64_t until = now + 100 < deadline ? now + 100 : deadline; /* re-check stop */
        struct timespec ts = {until / 1000, (long)(until % 1000) * 1000000L};
        pthread_cond_timedwait(&d->cv, &d->mu, &ts);
    }
    int rc = d->done ? d->err : CM_ETIMEDOUT;
    pthread_mutex_unlock(&d->mu);
    return rc;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    delivery_t *d = m->_private;
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->done = true;
    d->err = map_err(m->err);
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    delivery_put(d);
}

/* ---- producer ------------------------------------------------------------------ */

struct cm_producer {
    rd_kafka_t *rk;
    pthread_t poller;
    atomic_bool stop;
};

/* Serves delivery reports, so any number of senders can wait on their own message. */
static void *producer_poll_loop(void *arg)
{
    cm_producer_t *p = arg;
    while (!atomic_load(&p->stop))
        rd_kafka_poll(p->rk, 100);
    return NULL;
}

static void on_producer_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    cm_log_level_t lvl = err == RD_KAFKA_RESP_ERR__FATAL ? CM_LOG_ERROR : CM_LOG_WARN;
    CM_LOG(lvl, NULL, "kafka producer %s: %s: %s", rd_kafka_name(rk),
           rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static rd_kafka_conf_t *producer_conf(const char *bootstrap, const char *client_id, int *err)
{
    const char *const kv[][2] = {
        {"bootstrap.servers", bootstrap},
        {"client.id", client_id ? client_id : "linktr"},
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", "5"},
        {"message.timeout.ms", "30000"},
        {"reconnect.backoff.max.ms", "2000"},
        {NULL, NULL},
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    *err = conf_set_all(conf, kv);
    if (*err != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_producer_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    return conf;
}

cm_producer_t *cm_producer_new(const char *bootstrap, const char *client_id, int *err)
{
    int dummy = 0;
    err = err ? err : &dummy;
    *err = CM_EINVAL;
    if (!bootstrap || !bootstrap[0])
        return NULL;
    rd_kafka_conf_t *conf = producer_conf(bootstrap, client_id, err);
    if (!conf)
        return NULL;
    char errstr[256];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        CM_ERROR(NULL, "kafka producer: %s", errstr);
        rd_kafka_conf_destroy(conf);
        *err = CM_EKAFKA;
        return NULL;
    }
    cm_producer_t *p = cm_xcalloc(1, sizeof *p);
    p->rk = rk;
    atomic_init(&p->stop, false);
    if (pthread_create(&p->poller, NULL, producer_poll_loop, p) != 0) {
        rd_kafka_destroy(rk);
        free(p);
        *err = CM_ENOMEM;
        return NULL;
    }
    *err = 0;
    return p;
}

void cm_producer_free(cm_producer_t *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, true);
    pthread_join(p->poller, NULL);
    if (rd_kafka_flush(p->rk, 3000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        CM_WARN(NULL, "kafka producer: %d message(s) not delivered at shutdown",
                rd_kafka_outq_len(p->rk));
        /* Purged messages still get their delivery report, which frees their state. */
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(p->rk, 1000);
    }
    rd_kafka_destroy(p->rk);
    free(p);
}

/* Enqueues one message (copied); *out is the delivery state the caller waits on and puts. */
static int produce_async(cm_producer_t *p, const char *topic, const char *key, size_t key_len,
                         const char *value, size_t len, delivery_t **out)
{
    delivery_t *d = delivery_new();
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        /* librdkafka's macros cast to void * (the data is copied): keep const out of sight. */
        RD_KAFKA_V_KEY((void *)(uintptr_t)key, key_len),
        RD_KAFKA_V_VALUE((void *)(uintptr_t)value, len), RD_KAFKA_V_OPAQUE(d), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        CM_WARN(NULL, "kafka produce to %s: %s", topic, rd_kafka_err2str(err));
        delivery_put(d);
        delivery_put(d);
        *out = NULL;
        return map_err(err);
    }
    *out = d;
    return 0;
}

int cm_producer_send(cm_producer_t *p, const char *topic, const char *key, const char *value,
                     size_t len, int timeout_ms)
{
    if (!p || !valid_topic(topic) || (!value && len > 0) || timeout_ms < 0)
        return CM_EINVAL;
    int64_t deadline = cm_now_mono_ms() + timeout_ms;
    delivery_t *d = NULL;
    int rc = produce_async(p, topic, key, key ? strlen(key) : 0, value, len, &d);
    if (rc != 0)
        return rc;
    rc = delivery_wait(d, deadline, NULL);
    delivery_put(d);
    return rc;
}

bool cm_producer_ping(cm_producer_t *p, int timeout_ms)
{
    char reason[256];
    if (!p)
        return false;
    /* An idempotent producer that hit a fatal error never sends again: report it down. */
    if (rd_kafka_fatal_error(p->rk, reason, sizeof reason) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        CM_ERROR(NULL, "kafka producer: fatal: %s", reason);
        return false;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(p->rk, 0, NULL, &md, timeout_ms);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    bool ok = md->broker_cnt > 0;
    rd_kafka_metadata_destroy(md);
    return ok;
}

/* ---- transactional outbox ------------------------------------------------------ */

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
        !valid_topic(type))
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
    delivery_t **d = cm_xcalloc((size_t)n + 1, sizeof(delivery_t *));
    int rc = 0;
    for (int i = 0; i < n; i++) {
        int e = produce_async(r->producer, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                              (size_t)PQgetlength(res, i, 2), PQgetvalue(res, i, 3),
                              (size_t)PQgetlength(res, i, 3), &d[i]);
        rc = rc ? rc : e;
    }
    int64_t deadline = cm_now_mono_ms() + OUTBOX_ROUND_MS;
    for (int i = 0; i < n; i++) {
        int e = d[i] ? delivery_wait(d[i], deadline, &r->stop) : CM_EKAFKA;
        delivery_put(d[i]);
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
    if (cm_db_prepared(db, "cm_outbox_backlog", "SELECT count(*) FROM outbox WHERE sent_at IS NULL",
                       0, NULL, &res) != 0)
        return;
    cm_metric_set(r->backlog, NULL, strtod(PQgetvalue(res, 0, 0), NULL));
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

/* ---- consumer ------------------------------------------------------------------- */

/*
 * A partition held back because its handler failed: paused, rewound to the
 * failed message and resumed when its backoff is over, while the other
 * partitions keep flowing and the loop keeps polling (so the member stays in
 * its group however long the failure lasts). Only the consumer thread (the
 * loop and the rebalance callback it serves) touches these.
 */
typedef struct held {
    char *topic;
    int32_t partition;
    int64_t offset;    /* the message that failed; nothing past it is handled meanwhile */
    int backoff_ms;    /* the current one; doubles while the same message keeps failing */
    int64_t resume_at; /* monotonic ms while paused; 0 once resumed */
} held_t;

struct cm_consumer {
    rd_kafka_t *rk;
    cm_consume_fn fn;
    void *ctx;
    cm_family_t *messages; /* borrowed, or NULL */
    cm_family_t *lag;      /* borrowed, or NULL */
    held_t *held;          /* owned, nheld entries (consumer thread only) */
    size_t nheld;
    atomic_bool stop;
    atomic_bool all_down;
    atomic_llong last_heard_ms;
    pthread_t thread;
};

static void on_consumer_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    cm_consumer_t *c = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        atomic_store(&c->all_down, true);
    CM_WARN(NULL, "kafka consumer %s: %s: %s", rd_kafka_name(rk),
            rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static json_int_t stat_int(json_t *part, const char *key, json_int_t dflt)
{
    json_t *v = json_object_get(part, key); /* borrowed */
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

/*
 * Messages behind on one partition of this member's assignment, from its
 * statistics. librdkafka's consumer_lag is -1 while nothing was ever
 * committed on the partition: a fresh group whose first message keeps
 * failing would read 0. Then everything from the start of the log is
 * behind (auto.offset.reset is earliest).
 */
static json_int_t partition_lag(json_t *part)
{
    const char *state = json_string_value(json_object_get(part, "fetch_state")); /* borrowed */
    if (!state || strcmp(state, "none") == 0 || strncmp(state, "stop", 4) == 0)
        return 0; /* not ours (another member's, or being given away) */
    json_int_t lag = stat_int(part, "consumer_lag", -1);
    if (lag >= 0)
        return lag;
    json_int_t end = stat_int(part, "ls_offset", -1);
    end = end >= 0 ? end : stat_int(part, "hi_offset", -1);
    json_int_t start = stat_int(part, "lo_offset", -1);
    bool committed = stat_int(part, "committed_offset", -1) >= 0;
    return !committed && start >= 0 && end > start ? end - start : 0;
}

/* Sums the lag per topic; notes whether any broker connection is up. */
static void read_stats(cm_consumer_t *c, json_t *stats)
{
    const char *name;
    json_t *v;
    json_object_foreach(json_object_get(stats, "brokers"), name, v)
    {
        const char *state = json_string_value(json_object_get(v, "state")); /* borrowed */
        if (state && strcmp(state, "UP") == 0) {
            atomic_store(&c->last_heard_ms, cm_now_mono_ms());
            atomic_store(&c->all_down, false);
        }
    }
    if (!c->lag)
        return;
    json_object_foreach(json_object_get(stats, "topics"), name, v)
    {
        json_int_t lag = 0;
        const char *pid;
        json_t *part;
        json_object_foreach(json_object_get(v, "partitions"), pid, part)
        {
            if (strcmp(pid, "-1") != 0)
                lag += partition_lag(part);
        }
        const char *labels[] = {name};
        cm_metric_set(c->lag, labels, (double)lag);
    }
}

static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    json_t *stats = json_loadb(json, len, 0, NULL);
    if (stats)
        read_stats(opaque, stats);
    json_decref(stats);
    return 0; /* librdkafka frees json */
}

/* ---- held partitions (pause + seek) ---- */

static held_t *held_find(cm_consumer_t *c, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < c->nheld; i++)
        if (c->held[i].partition == partition && strcmp(c->held[i].topic, topic) == 0)
            return &c->held[i];
    return NULL;
}

static void held_remove(cm_consumer_t *c, held_t *h)
{
    free(h->topic);
    *h = c->held[--c->nheld];
}

/* Forgets the partitions in parts (revoked or lost: their next owner starts at the commit). */
static void held_forget(cm_consumer_t *c, const rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; parts && i < parts->cnt; i++) {
        held_t *h = held_find(c, parts->elems[i].topic, parts->elems[i].partition);
        if (h)
            held_remove(c, h);
    }
}

static void held_free_all(cm_consumer_t *c)
{
    while (c->nheld > 0)
        held_remove(c, &c->held[0]);
    free(c->held);
    c->held = NULL;
}

/* One partition as a list, at offset (RD_KAFKA_OFFSET_INVALID when unused); the caller destroys. */
static rd_kafka_topic_partition_list_t *one_partition(const char *topic, int32_t partition,
                                                      int64_t offset)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = offset;
    return l;
}

/* Logs the first per-partition error of l after a pause, resume or seek. */
static void log_partition_error(const char *what, rd_kafka_resp_err_t err,
                                const rd_kafka_topic_partition_list_t *l)
{
    for (int i = 0; err == RD_KAFKA_RESP_ERR_NO_ERROR && i < l->cnt; i++)
        err = l->elems[i].err;
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        CM_WARN(NULL, "kafka consumer: %s %s/%d: %s", what, l->elems[0].topic,
                (int)l->elems[0].partition, rd_kafka_err2str(err));
}

/* Sets h's partition's fetch position back to the held message (messages already fetched past
 * it are dropped by librdkafka). */
static void rewind_partition(cm_consumer_t *c, const held_t *h)
{
    rd_kafka_topic_partition_list_t *l = one_partition(h->topic, h->partition, h->offset);
    rd_kafka_error_t *e = rd_kafka_seek_partitions(c->rk, l, CONSUMER_SEEK_TIMEOUT_MS);
    if (e) {
        CM_WARN(NULL, "kafka consumer: seek %s/%d: %s", h->topic, (int)h->partition,
                rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else {
        log_partition_error("seek", RD_KAFKA_RESP_ERR_NO_ERROR, l);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/*
 * Holds m's partition back for a backoff after its handler failed: pauses it
 * (the fetcher stops, messages already fetched for it are dropped) and seeks
 * it back to m, so m is the next message of that partition once resumed.
 * Returns the backoff in ms.
 */
static int hold_partition(cm_consumer_t *c, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    held_t *h = held_find(c, topic, m->partition);
    if (h && h->offset == m->offset) {
        h->backoff_ms = h->backoff_ms * 2 > CONSUMER_BACKOFF_MAX_MS ? CONSUMER_BACKOFF_MAX_MS
                                                                    : h->backoff_ms * 2;
    } else {
        if (!h) {
            c->held = cm_xreallocarray(c->held, c->nheld + 1, sizeof *c->held);
            h = &c->held[c->nheld++];
            h->topic = cm_xstrdup(topic);
            h->partition = m->partition;
        }
        h->offset = m->offset;
        h->backoff_ms = CONSUMER_BACKOFF_MIN_MS;
    }
    h->resume_at = cm_now_mono_ms() + h->backoff_ms;
    rd_kafka_topic_partition_list_t *l = one_partition(topic, m->partition, m->offset);
    log_partition_error("pause", rd_kafka_pause_partitions(c->rk, l), l);
    rd_kafka_topic_partition_list_destroy(l);
    rewind_partition(c, h);
    return h->backoff_ms;
}

/* Resumes the held partitions whose backoff is over; returns ms until the next one is due
 * (at most max_ms). */
static int resume_due(cm_consumer_t *c, int max_ms)
{
    int64_t now = cm_now_mono_ms();
    int wait = max_ms;
    for (size_t i = 0; i < c->nheld; i++) {
        held_t *h = &c->held[i];
        if (h->resume_at == 0)
            continue;
        if (h->resume_at > now) {
            wait = h->resume_at - now < wait ? (int)(h->resume_at - now) : wait;
            continue;
        }
        h->resume_at = 0;
        rd_kafka_topic_partition_list_t *l =
            one_partition(h->topic, h->partition, RD_KAFKA_OFFSET_INVALID);
        log_partition_error("resume", rd_kafka_resume_partitions(c->rk, l), l);
        rd_kafka_topic_partition_list_destroy(l);
    }
    return wait;
}

/*
 * Whether m may be handled: not while its partition is held, and nothing
 * past the held message (a message fetched before the pause took effect).
 * A message before it means the partition was rewound (a new assignment
 * from the committed offset): the hold is stale.
 */
static bool admit(cm_consumer_t *c, const rd_kafka_message_t *m)
{
    held_t *h = held_find(c, rd_kafka_topic_name(m->rkt), m->partition);
    if (!h)
        return true;
    if (h->resume_at != 0)
        return false;
    if (m->offset > h->offset) {
        /* Resumed past the held message: the seek did not take. Never skip it: rewind again. */
        rewind_partition(c, h);
        return false;
    }
    if (m->offset < h->offset)
        held_remove(c, h);
    return true;
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    cm_consumer_t *c = opaque;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *e = NULL;
    atomic_store(&c->last_heard_ms, cm_now_mono_ms());
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (coop)
            e = rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
        /* A partition paused while we held it before is not held now. */
        rd_kafka_resume_partitions(rk, parts);
    } else {
        held_forget(c, parts);
        /* Commit what was handled before giving the partitions away (unless they were lost). */
        if (!rd_kafka_assignment_lost(rk))
            rd_kafka_commit(rk, NULL, 0);
        if (coop)
            e = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    }
    if (e) {
        CM_ERROR(NULL, "kafka rebalance: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

static void count_message(cm_consumer_t *c, const char *topic, const char *result)
{
    if (!c->messages)
        return;
    const char *labels[] = {topic, result};
    cm_metric_add(c->messages, labels, 1);
}

/* Stores offset + 1 of m and commits asynchronously (stop commits synchronously). */
static void commit_past(cm_consumer_t *c, const rd_kafka_message_t *m)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(m->rkt), m->partition)->offset =
        m->offset + 1;
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* The partition was revoked meanwhile: its new owner handles the message again. */
        CM_WARN(NULL, "kafka offset store: %s", rd_kafka_err2str(err));
        return;
    }
    rd_kafka_commit(c->rk, NULL, 1);
}

/* Hands m to the handler once: commits past it, or holds its partition back to retry it. */
static void handle_message(cm_consumer_t *c, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    cm_kmsg_t km = {topic, m->partition, m->offset, m->key, m->key_len, m->payload, m->len};
    int rc = c->fn(&km, c->ctx);
    if (rc == 0 || rc == CM_EPARSE) {
        if (rc == CM_EPARSE)
            CM_ERROR(NULL, "kafka consumer: skipping malformed message %s/%d@%lld", topic,
                     (int)m->partition, (long long)m->offset);
        count_message(c, topic, rc == 0 ? "ok" : "malformed");
        held_t *h = held_find(c, topic, m->partition);
        if (h)
            held_remove(c, h);
        commit_past(c, m);
        return;
    }
    count_message(c, topic, "retry");
    int backoff = hold_partition(c, m);
    CM_WARN(NULL, "kafka consumer: %s/%d@%lld failed (%s); retrying in %d ms", topic,
            (int)m->partition, (long long)m->offset, cm_errname(rc), backoff);
}

static void *consumer_loop(void *arg)
{
    cm_consumer_t *c = arg;
    while (!atomic_load(&c->stop)) {
        int wait = resume_due(c, CONSUMER_POLL_MS);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, wait);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            atomic_store(&c->last_heard_ms, cm_now_mono_ms());
            if (admit(c, m))
                handle_message(c, m);
        } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            CM_WARN(NULL, "kafka consumer: %s", rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_resp_err_t err = rd_kafka_commit(c->rk, NULL, 0);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        CM_WARN(NULL, "kafka consumer: final commit: %s", rd_kafka_err2str(err));
    rd_kafka_consumer_close(c->rk);
    held_free_all(c);
    return NULL;
}

static rd_kafka_conf_t *consumer_conf(const cm_consumer_config_t *cfg, cm_consumer_t *c)
{
    const char *const kv[][2] = {
        {"bootstrap.servers", cfg->bootstrap},
        {"group.id", cfg->group_id},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"partition.assignment.strategy", "cooperative-sticky"},
        {"statistics.interval.ms", "2000"},
        /* Latency of one event: the broker answers a fetch as soon as data is there
         * (fetch.min.bytes 1), but an empty fetch may be held for fetch.wait.max.ms, and
         * librdkafka's mock broker always holds it that long (500 ms by default), so a
         * message produced meanwhile waited up to half a second. 25 ms bounds that wait
         * while an idle consumer sends at most 40 fetches a second: no busy loop. */
        {"fetch.wait.max.ms", "25"},
        /* After a fetch error (leader moved, broker back), fetch again soon, not 500 ms later. */
        {"fetch.error.backoff.ms", "100"},
        /* Short, so a crashed member's partitions move on quickly. */
        {"session.timeout.ms", "6000"},
        {"heartbeat.interval.ms", "1500"},
        {"reconnect.backoff.max.ms", "2000"},
        {NULL, NULL},
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf_set_all(conf, kv) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_error_cb(conf, on_consumer_error);
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    rd_kafka_conf_set_log_cb(conf, on_log);
    return conf;
}

static int consumer_subscribe(cm_consumer_t *c, const char *const *topics)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    for (size_t i = 0; topics[i]; i++)
        rd_kafka_topic_partition_list_add(l, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        CM_ERROR(NULL, "kafka subscribe: %s", rd_kafka_err2str(err));
    return map_err(err) ? CM_EKAFKA : 0;
}

static bool valid_consumer_config(const cm_consumer_config_t *cfg)
{
    if (!cfg || !cfg->bootstrap || !cfg->bootstrap[0] || !cfg->group_id || !cfg->group_id[0] ||
        !cfg->fn || !cfg->topics || !cfg->topics[0])
        return false;
    for (size_t i = 0; cfg->topics[i]; i++)
        if (!valid_topic(cfg->topics[i]))
            return false;
    return true;
}

static void consumer_metrics(cm_consumer_t *c, cm_metrics_t *m)
{
    if (!m)
        return;
    c->messages =
        cm_metrics_counter(m, "linktr_consumer_messages_total",
                           "Kafka messages handled, by topic and result.", "topic,result");
    c->lag =
        cm_metrics_gauge(m, "linktr_consumer_lag",
                         "Messages behind the end of the log, summed over partitions.", "topic");
}

cm_consumer_t *cm_consumer_start(const cm_consumer_config_t *cfg, int *err)
{
    int dummy = 0;
    err = err ? err : &dummy;
    *err = CM_EINVAL;
    if (!valid_consumer_config(cfg))
        return NULL;
    cm_consumer_t *c = cm_xcalloc(1, sizeof *c);
    c->fn = cfg->fn;
    c->ctx = cfg->ctx;
    atomic_init(&c->stop, false);
    atomic_init(&c->all_down, false);
    atomic_init(&c->last_heard_ms, 0);
    consumer_metrics(c, cfg->metrics);
    rd_kafka_conf_t *conf = consumer_conf(cfg, c);
    char errstr[256];
    if (conf && !(c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr))) {
        CM_ERROR(NULL, "kafka consumer: %s", errstr);
        rd_kafka_conf_destroy(conf);
        *err = CM_EKAFKA;
    }
    if (!c->rk)
        goto fail;
    rd_kafka_poll_set_consumer(c->rk);
    *err = consumer_subscribe(c, cfg->topics);
    if (*err == 0 && pthread_create(&c->thread, NULL, consumer_loop, c) != 0)
        *err = CM_ENOMEM;
    if (*err == 0)
        return c;
    rd_kafka_consumer_close(c->rk);
    rd_kafka_destroy(c->rk);
fail:
    free(c);
    return NULL;
}

bool cm_consumer_healthy(cm_consumer_t *c)
{
    if (!c || atomic_load(&c->stop) || atomic_load(&c->all_down))
        return false;
    long long heard = atomic_load(&c->last_heard_ms);
    return heard > 0 && cm_now_mono_ms() - heard < CONSUMER_STALE_MS;
}

void cm_consumer_stop(cm_consumer_t *c)
{
    if (!c)
        return;
    atomic_store(&c->stop, true);
    pthread_join(c->thread, NULL);
    rd_kafka_destroy(c->rk);
    free(c);
}

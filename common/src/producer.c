/*
 * The idempotent Kafka producer (see cm/producer.h), and the per-message
 * delivery state the outbox relay also waits on (see kafka_int.h).
 */
#include "cm/producer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cm/events.h"
#include "cm/log.h"
#include "cm/util.h"
#include "kafka_int.h"

/* ---- delivery state ------------------------------------------------------------
 * One per produced message, shared by the sender and the delivery-report
 * callback: whoever lets go last frees it, so a sender that timed out never
 * leaves the callback writing into freed memory.
 */
struct cm__delivery {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    bool done;
    int err;
};

static cm__delivery_t *delivery_new(void)
{
    cm__delivery_t *d = cm_xcalloc(1, sizeof *d);
    pthread_mutex_init(&d->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cv, &attr);
    pthread_condattr_destroy(&attr);
    d->refs = 2; /* the sender and the callback */
    return d;
}

static void delivery_free(cm__delivery_t *d)
{
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d);
}

void cm__delivery_put(cm__delivery_t *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    bool last = --d->refs == 0;
    pthread_mutex_unlock(&d->mu);
    if (last)
        delivery_free(d);
}

/* Waits until the report came or deadline (monotonic ms) passed, or *stop (may be NULL) is set. */
int cm__delivery_wait(cm__delivery_t *d, int64_t deadline, atomic_bool *stop)
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
    cm__delivery_t *d = m->_private;
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->done = true;
    d->err = cm__kafka_err(m->err);
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    cm__delivery_put(d);
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
    *err = cm__kafka_conf_set_all(conf, kv);
    if (*err != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_producer_error);
    rd_kafka_conf_set_log_cb(conf, cm__kafka_on_log);
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

/*
 * The traceparent header of an envelope that carries a correlation id
 * (cm/events.h); false for anything else (no header is sent then).
 */
static bool traceparent_of(const char *value, size_t len, char out[CM_TRACEPARENT_LEN + 1])
{
    cm_event_t ev;
    if (!value || cm_event_parse(value, len, &ev) != 0)
        return false;
    bool ok = ev.correlation_id[0] && cm_event_traceparent(ev.correlation_id, ev.id, out) == 0;
    cm_event_dispose(&ev);
    return ok;
}

/* Enqueues one message (copied); *out is the delivery state the caller waits on and puts. */
int cm__produce_async(cm_producer_t *p, const char *topic, const char *key, size_t key_len,
                      const char *value, size_t len, cm__delivery_t **out)
{
    cm__delivery_t *d = delivery_new();
    char tp[CM_TRACEPARENT_LEN + 1];
    rd_kafka_headers_t *hdrs = NULL;
    if (traceparent_of(value, len, tp)) {
        hdrs = rd_kafka_headers_new(1);
        rd_kafka_header_add(hdrs, "traceparent", -1, tp, (ssize_t)strlen(tp));
    }
    /* With RD_KAFKA_V_HEADERS the message owns hdrs once enqueued; NULL means none. */
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        /* librdkafka's macros cast to void * (the data is copied): keep const out of sight. */
        RD_KAFKA_V_KEY((void *)(uintptr_t)key, key_len),
        RD_KAFKA_V_VALUE((void *)(uintptr_t)value, len), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_OPAQUE(d), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && hdrs)
        rd_kafka_headers_destroy(hdrs); /* not enqueued: still ours */
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        CM_WARN(NULL, "kafka produce to %s: %s", topic, rd_kafka_err2str(err));
        /* Not enqueued: no delivery report will come, so both references go now. */
        delivery_free(d);
        *out = NULL;
        return cm__kafka_err(err);
    }
    *out = d;
    return 0;
}

int cm_producer_send(cm_producer_t *p, const char *topic, const char *key, const char *value,
                     size_t len, int timeout_ms)
{
    if (!p || !cm__kafka_valid_topic(topic) || (!value && len > 0) || timeout_ms < 0)
        return CM_EINVAL;
    int64_t deadline = cm_now_mono_ms() + timeout_ms;
    cm__delivery_t *d = NULL;
    int rc = cm__produce_async(p, topic, key, key ? strlen(key) : 0, value, len, &d);
    if (rc != 0)
        return rc;
    rc = cm__delivery_wait(d, deadline, NULL);
    cm__delivery_put(d);
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

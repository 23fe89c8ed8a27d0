/*
 * The Kafka consumer loop: at-least-once handling with per-partition
 * backoff, health and lag from librdkafka's statistics (see cm/consumer.h).
 */
#include "cm/consumer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "cm/events.h"
#include "cm/log.h"
#include "cm/util.h"
#include "kafka_int.h"

#define CONSUMER_BACKOFF_MIN_MS 100
#define CONSUMER_BACKOFF_MAX_MS 5000
/* The longest the consumer loop waits in one poll (also how soon it sees a stop). */
#define CONSUMER_POLL_MS 200
/* How long a seek may wait for the fetcher to take the new position (a local hand-over). */
#define CONSUMER_SEEK_TIMEOUT_MS 2000
/* A consumer that has not heard from a broker for this long is not healthy. */
#define CONSUMER_STALE_MS 15000

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
    cm_family_t *assigned; /* borrowed, or NULL */
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
    rd_kafka_topic_partition_list_t *now = NULL;
    if (c->assigned && rd_kafka_assignment(rk, &now) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        cm_metric_set(c->assigned, NULL, now->cnt);
        rd_kafka_topic_partition_list_destroy(now);
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

/* The traceparent header of m, copied into out (NUL-terminated), or NULL. */
static const char *traceparent_of(const rd_kafka_message_t *m, char out[CM_TRACEPARENT_LEN + 1])
{
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t n = 0;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(h, "traceparent", &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR || !v ||
        n != CM_TRACEPARENT_LEN)
        return NULL;
    memcpy(out, v, n);
    out[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdef-", out[i]))
            return NULL;
    return out;
}

/*
 * One info line per message handled, with the event's id, type and
 * correlation id (as the line's request_id) as fields, so a request can be
 * followed from the HTTP access log into every consumer.
 */
static void log_handled(const cm_kmsg_t *km, const char *result)
{
    if (!cm_log_enabled(CM_LOG_INFO))
        return;
    cm_event_t ev;
    bool parsed = cm_event_parse(km->value, km->len, &ev) == 0;
    json_t *f = json_pack("{s:s,s:i,s:I,s:s}", "topic", km->topic, "partition", (int)km->partition,
                          "offset", (json_int_t)km->offset, "result", result);
    if (parsed) {
        json_object_set_new(f, "event_id", json_string(ev.id));
        json_object_set_new(f, "event_type", json_string(ev.type));
    }
    if (km->traceparent)
        json_object_set_new(f, "traceparent", json_string(km->traceparent));
    cm_log_write(CM_LOG_INFO, parsed && ev.correlation_id[0] ? ev.correlation_id : NULL, f,
                 "event handled");
    json_decref(f);
    if (parsed)
        cm_event_dispose(&ev);
}

/* Hands m to the handler once: commits past it, or holds its partition back to retry it. */
static void handle_message(cm_consumer_t *c, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    char tp[CM_TRACEPARENT_LEN + 1];
    cm_kmsg_t km = {topic,      m->partition, m->offset, m->key,
                    m->key_len, m->payload,   m->len,    traceparent_of(m, tp)};
    int rc = c->fn(&km, c->ctx);
    log_handled(&km, rc == 0 ? "ok" : rc == CM_EPARSE ? "malformed" : "retry");
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
    char fetch_wait[16];
    snprintf(fetch_wait, sizeof fetch_wait, "%d",
             cfg->fetch_wait_ms > 0 ? cfg->fetch_wait_ms : CM_CONSUMER_FETCH_WAIT_MS);
    const char *const kv[][2] = {
        {"bootstrap.servers", cfg->bootstrap},
        {"group.id", cfg->group_id},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        /* Round-robin over every subscribed topic's partitions: each member gets its share of
         * EVERY topic (6 partitions, 2 members: 3 of each). cooperative-sticky balances only the
         * total count, so with referral's five topics one member could hold all of the busy
         * user.registered and user.verified and the other only quiet topics: a pod added for
         * load took none of it (seen on Apache Kafka: 401 events to one instance, 0 to the
         * other). The price is an eager rebalance: a join or leave pauses the group for the
         * rebalance (seconds), which on_rebalance handles like the cooperative kind. */
        {"partition.assignment.strategy", "roundrobin"},
        {"statistics.interval.ms", "2000"},
        /* How long a broker may hold a fetch that finds nothing (cm/consumer.h). */
        {"fetch.wait.max.ms", fetch_wait},
        /* After a fetch error (leader moved, broker back), fetch again soon, not 500 ms later. */
        {"fetch.error.backoff.ms", "100"},
        /* Short, so a crashed member's partitions move on quickly. */
        {"session.timeout.ms", "6000"},
        {"heartbeat.interval.ms", "1500"},
        {"reconnect.backoff.max.ms", "2000"},
        {NULL, NULL},
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (cm__kafka_conf_set_all(conf, kv) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_error_cb(conf, on_consumer_error);
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    rd_kafka_conf_set_log_cb(conf, cm__kafka_on_log);
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
    return cm__kafka_err(err) ? CM_EKAFKA : 0;
}

static bool valid_consumer_config(const cm_consumer_config_t *cfg)
{
    if (!cfg || !cfg->bootstrap || !cfg->bootstrap[0] || !cfg->group_id || !cfg->group_id[0] ||
        !cfg->fn || !cfg->topics || !cfg->topics[0] || cfg->fetch_wait_ms < 0 ||
        cfg->fetch_wait_ms > 300000) /* librdkafka's range */
        return false;
    for (size_t i = 0; cfg->topics[i]; i++)
        if (!cm__kafka_valid_topic(cfg->topics[i]))
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
        cm_metrics_gauge(m, "linktr_consumer_lag_messages",
                         "Messages behind the end of the log, summed over partitions.", "topic");
    /* A member with none does no work: after a scale-out, until the group has rebalanced. */
    c->assigned = cm_metrics_gauge(m, "linktr_consumer_assigned_partitions",
                                   "Partitions this member holds, over all its topics.", NULL);
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

bool cm_consumer_ready(cm_db_pool_t *pool, cm_consumer_t *consumer, cm_buf_t *why)
{
    bool ok = true;
    if (!cm_db_ping(pool)) {
        cm_buf_puts(why, "database");
        ok = false;
    }
    /* Not connected to a broker, or not heard from one lately: events are not being handled. */
    if (!cm_consumer_healthy(consumer)) {
        cm_buf_puts(why, ok ? "kafka consumer" : ", kafka consumer");
        ok = false;
    }
    return ok;
}

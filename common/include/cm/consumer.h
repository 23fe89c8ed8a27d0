/*
 * cm/consumer.h — a Kafka consumer loop through librdkafka: at-least-once
 * handling in a thread of its own, offsets committed only once a message's
 * effect is stored, a failing partition held back while the others flow.
 *
 * librdkafka errors come back as CM_EKAFKA.
 */
#ifndef CM_CONSUMER_H
#define CM_CONSUMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/db.h"
#include "cm/error.h"
#include "cm/metrics.h"
#include "cm/util.h"

/** A running consumer: its own thread, started by cm_consumer_start(). */
typedef struct cm_consumer cm_consumer_t;

/** One message handed to a consumer callback; every pointer is borrowed. */
typedef struct cm_kmsg {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const char *key;
    size_t key_len;
    const char *value;
    size_t len;
    const char *traceparent; /* the W3C header when present (cm/events.h), else NULL */
} cm_kmsg_t;

/**
 * Handles one message. Return 0 when its effect is stored (the offset is
 * then committed); CM_EPARSE for a message that can never be handled (it
 * is logged with topic/partition/offset and skipped); any other code to
 * retry the same message after a backoff (100 ms doubling to 5 s), so a
 * database outage delays processing but loses nothing. While a message
 * waits for its retry, its partition is paused and rewound to it (nothing
 * after it on that partition is handled, so order is kept), the other
 * partitions keep flowing and the consumer keeps polling, so it stays in
 * its group however long the failure lasts.
 */
typedef int (*cm_consume_fn)(const cm_kmsg_t *msg, void *ctx);

/** fetch.wait.max.ms when nothing else is said: librdkafka's own default (see below). */
#define CM_CONSUMER_FETCH_WAIT_MS 500

/** What cm_consumer_start() needs; read during the call, but ctx and metrics must outlive
 * the consumer. */
typedef struct cm_consumer_config {
    const char *bootstrap;
    const char *group_id;
    const char *const *topics; /* NULL-terminated */
    cm_consume_fn fn;
    void *ctx;
    cm_metrics_t *metrics; /* borrowed; NULL for none. Adds linktr_consumer_lag_messages etc. */
    int fetch_wait_ms;     /* fetch.wait.max.ms, 0-300000; 0 for CM_CONSUMER_FETCH_WAIT_MS */
} cm_consumer_config_t;

/**
 * Subscribes and starts the consumer thread. Returns NULL with *err on a
 * bad config (topics must be plain names: no "^regex"). Offsets are
 * committed only after fn returned 0 or CM_EPARSE (at-least-once); the
 * group uses round-robin assignment (each member gets its share of every
 * topic; consumer.c says why not cooperative-sticky) and a 6 s session
 * timeout.
 * fetch_wait_ms is how long the broker may hold a fetch that finds nothing.
 * Apache Kafka answers a fetch as soon as a message is there (fetch.min.bytes
 * 1), so on a real broker it costs no latency and only sets how often an
 * idle consumer asks: 500 ms (librdkafka's default) is 2 fetches a second per
 * broker. librdkafka's mock broker holds every fetch the whole time, data or
 * not, so against it an event waits up to fetch_wait_ms: the development
 * stack and the tests use 25 ms there (40 fetches a second, idle).
 * Metrics (when set): linktr_consumer_messages_total{topic,result} with
 * result ok|malformed|retry, linktr_consumer_lag_messages{topic} and
 * linktr_consumer_assigned_partitions.
 */
cm_consumer_t *cm_consumer_start(const cm_consumer_config_t *cfg, int *err);

/**
 * True when the consumer heard from a broker in the last 15 s (a connection up in its
 * statistics, a message or a rebalance) and librdkafka has not reported every broker down
 * (for /readyz). Having partitions is not required: a replica beyond the partition count is
 * idle, not broken.
 */
bool cm_consumer_healthy(cm_consumer_t *c);

/** Stops after the message in hand, commits, leaves the group, frees. NULL-safe. */
void cm_consumer_stop(cm_consumer_t *c);

/**
 * The readiness of a service that owns a database and consumes events:
 * true when pool answers a ping and consumer is connected and heard from
 * lately. Appends what is down, comma-separated, to why.
 */
bool cm_consumer_ready(cm_db_pool_t *pool, cm_consumer_t *consumer, cm_buf_t *why);

#endif

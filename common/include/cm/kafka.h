/*
 * cm/kafka.h — Kafka through librdkafka: an idempotent producer, the
 * transactional-outbox relay, and a consumer loop.
 *
 * The outbox contract (every producing service creates this table in its
 * own schema, in one of its numbered migrations):
 *
 *   outbox(id bigserial primary key, event_id uuid not null unique,
 *          topic text not null, key text not null, payload text not null,
 *          created_at timestamptz not null default now(), sent_at timestamptz)
 *
 * A service writes the event with cm_outbox_add() inside the same database
 * transaction as the change it describes, which also NOTIFYs the relay's
 * channel. The relay (one thread) wakes on that NOTIFY (or every few
 * seconds as a safety net), takes unsent rows in id order with FOR UPDATE
 * SKIP LOCKED (so replicas share the work), produces them, waits for the
 * broker's acknowledgement and marks them sent. A Kafka outage leaves rows
 * unsent; nothing is lost, and registration does not fail.
 *
 * librdkafka errors are converted here to CM_EKAFKA / CM_ETIMEDOUT.
 */
#ifndef CM_KAFKA_H
#define CM_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cm/db.h"
#include "cm/error.h"
#include "cm/metrics.h"

typedef struct cm_producer cm_producer_t;
typedef struct cm_outbox_relay cm_outbox_relay_t;
typedef struct cm_consumer cm_consumer_t;

/* ---- producer ------------------------------------------------------------ */

/**
 * Creates an idempotent producer (enable.idempotence, acks=all) for the
 * comma-separated bootstrap list. Returns NULL with *err on a bad config.
 * Connection happens in the background; a broker that is down is not an
 * error here.
 */
cm_producer_t *cm_producer_new(const char *bootstrap, const char *client_id, int *err);

/**
 * Flushes (up to a few seconds) and frees. NULL-safe. Stop the relays that
 * borrow it first. Messages still undelivered after the flush are dropped
 * (their outbox rows stay unsent and go out after the restart).
 */
void cm_producer_free(cm_producer_t *p);

/**
 * Produces one message and waits until the broker acknowledged it or
 * timeout_ms passed. Returns 0, CM_ETIMEDOUT or CM_EKAFKA (CM_EINVAL for a
 * topic outside [A-Za-z0-9._-]). key may be NULL. Safe to call from many
 * threads at once. After CM_ETIMEDOUT the message may still be delivered
 * later (at-least-once).
 */
CM_MUST_CHECK int cm_producer_send(cm_producer_t *p, const char *topic, const char *key,
                                   const char *value, size_t len, int timeout_ms);

/**
 * True when the cluster answered a metadata request within timeout_ms and
 * the producer has not hit a fatal (idempotence) error (for /readyz).
 */
bool cm_producer_ping(cm_producer_t *p, int timeout_ms);

/* ---- transactional outbox --------------------------------------------------- */

/**
 * Inserts the event envelope (borrowed) into the outbox on this connection,
 * inside the caller's transaction, and NOTIFYs channel (delivered when the
 * transaction commits). The topic is the envelope's "type"; key is the
 * user id the event is about. Returns 0 or a CM_E* code: CM_EINVAL for a
 * channel that is not [a-z_][a-z0-9_]*, an empty key or an envelope
 * without a UUID id and a type; CM_ETOOBIG over CM_EVENT_MAX_BYTES;
 * CM_ECONFLICT when the event id is already in the outbox; db errors.
 */
CM_MUST_CHECK int cm_outbox_add(cm_db_t *db, const char *channel, const char *key,
                                json_t *envelope);

typedef struct cm_outbox_config {
    const char *conninfo;    /* its own connection, for LISTEN (copied) */
    const char *channel;     /* NOTIFY channel, a plain identifier ("auth_outbox") */
    cm_db_pool_t *pool;      /* for taking and marking rows (borrowed) */
    cm_producer_t *producer; /* borrowed */
    int batch;               /* rows per round, default 100 */
    /* Borrowed; NULL for none. Adds linktr_outbox_backlog and linktr_outbox_published_total. */
    cm_metrics_t *metrics;
} cm_outbox_config_t;

/**
 * Starts the relay thread. Returns NULL with *err on a bad config. The
 * relay takes at most batch rows per round, waits up to 10 s for their
 * acknowledgements, marks the acknowledged ones sent, and backs off
 * (250 ms doubling to 10 s, checking the cluster before producing again)
 * while Kafka or the database fails. Delivery is at-least-once: a row whose
 * acknowledgement came too late is published again.
 */
cm_outbox_relay_t *cm_outbox_relay_start(const cm_outbox_config_t *cfg, int *err);

/** Wakes the relay early (tests, or after a commit in the same process). */
void cm_outbox_relay_kick(cm_outbox_relay_t *r);

/** Stops the thread (finishing the current batch) and frees. NULL-safe. */
void cm_outbox_relay_stop(cm_outbox_relay_t *r);

/* ---- consumer --------------------------------------------------------------- */

/** One message handed to a consumer callback; every pointer is borrowed. */
typedef struct cm_kmsg {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const char *key;
    size_t key_len;
    const char *value;
    size_t len;
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

typedef struct cm_consumer_config {
    const char *bootstrap;
    const char *group_id;
    const char *const *topics; /* NULL-terminated */
    cm_consume_fn fn;
    void *ctx;
    cm_metrics_t *metrics; /* borrowed; NULL for none. Adds linktr_consumer_lag etc. */
} cm_consumer_config_t;

/**
 * Subscribes and starts the consumer thread. Returns NULL with *err on a
 * bad config (topics must be plain names: no "^regex"). Offsets are
 * committed only after fn returned 0 or CM_EPARSE (at-least-once); the
 * group uses cooperative-sticky assignment and a 6 s session timeout.
 * An event on an idle consumer is handed to fn within a few tens of ms of
 * reaching the broker (fetch.wait.max.ms is 25 ms).
 * Metrics (when set): linktr_consumer_messages_total{topic,result} with
 * result ok|malformed|retry, and linktr_consumer_lag{topic}.
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

#endif

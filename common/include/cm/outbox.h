/*
 * cm/outbox.h — the transactional outbox: events written in the same
 * database transaction as the change they describe, and the relay that
 * publishes them to Kafka.
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
 */
#ifndef CM_OUTBOX_H
#define CM_OUTBOX_H

#include <jansson.h>

#include "cm/db.h"
#include "cm/error.h"
#include "cm/metrics.h"
#include "cm/producer.h"

/** A running relay: one thread, started by cm_outbox_relay_start(). */
typedef struct cm_outbox_relay cm_outbox_relay_t;

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

/** What cm_outbox_relay_start() needs; conninfo and channel are copied, the rest borrowed. */
typedef struct cm_outbox_config {
    const char *conninfo;    /* its own connection, for LISTEN (copied) */
    const char *channel;     /* NOTIFY channel, a plain identifier ("auth_outbox") */
    cm_db_pool_t *pool;      /* for taking and marking rows (borrowed) */
    cm_producer_t *producer; /* borrowed */
    int batch;               /* rows per round, default 100 */
    /*
     * Borrowed; NULL for none. Adds linktr_outbox_backlog (unsent rows),
     * linktr_outbox_oldest_unsent_age_seconds and linktr_outbox_published_total.
     */
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

#endif

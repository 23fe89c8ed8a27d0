/*
 * cm/producer.h — an idempotent Kafka producer through librdkafka
 * (enable.idempotence, acks=all), safe to share between threads.
 *
 * librdkafka errors come back as CM_EKAFKA / CM_ETIMEDOUT.
 */
#ifndef CM_PRODUCER_H
#define CM_PRODUCER_H

#include <stdbool.h>
#include <stddef.h>

#include "cm/error.h"

/** A producer and the thread that serves its delivery reports. */
typedef struct cm_producer cm_producer_t;

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

#endif

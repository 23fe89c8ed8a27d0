/*
 * kafka_int.h — internals shared by producer.c, outbox.c and consumer.c
 * (libuv style: cm__ names, not part of the public headers).
 *
 * kafka.c (and cm__kafka_err() here) hold the librdkafka boundary all
 * three use; producer.c also exposes the asynchronous send the outbox
 * relay uses to publish a batch and wait for each message's
 * acknowledgement.
 */
#ifndef CM_KAFKA_INT_H
#define CM_KAFKA_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "cm/error.h"
#include "cm/producer.h"

/* ---- kafka.c: the librdkafka boundary ----------------------------------------- */

/**
 * Converts a librdkafka error: 0, CM_ETIMEDOUT for its timeouts, CM_EKAFKA
 * for the rest. Inline so that callers (and the static analyzer) see that
 * an error never converts to 0.
 */
static inline int cm__kafka_err(rd_kafka_resp_err_t err)
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

/** librdkafka's log callback: its lines go through CM_LOG (they never carry payloads). */
void cm__kafka_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/**
 * Sets each key/value pair of kv (ended by a {NULL, NULL} row) on conf.
 * Returns 0 or CM_EINVAL (and logs the offending key).
 */
CM_MUST_CHECK int cm__kafka_conf_set_all(rd_kafka_conf_t *conf, const char *const kv[][2]);

/** True for a topic name Kafka accepts ([A-Za-z0-9._-], 1..249 bytes): never a "^regex". */
bool cm__kafka_valid_topic(const char *s);

/* ---- producer.c: asynchronous sends -------------------------------------------- */

/**
 * The delivery state of one produced message, shared by the sender and the
 * delivery-report callback: whoever lets go last frees it.
 */
typedef struct cm__delivery cm__delivery_t;

/**
 * Enqueues one message (key and value are copied). On 0, *out is the
 * message's delivery state: the caller waits on it with cm__delivery_wait()
 * and lets go of it with cm__delivery_put(). On failure *out is NULL and
 * the librdkafka error is returned as a CM_E* code.
 */
CM_MUST_CHECK int cm__produce_async(cm_producer_t *p, const char *topic, const char *key,
                                    size_t key_len, const char *value, size_t len,
                                    cm__delivery_t **out);

/**
 * Waits until the broker's report came, deadline (monotonic ms) passed, or
 * *stop (may be NULL) is set. Returns the report's code, or CM_ETIMEDOUT.
 */
int cm__delivery_wait(cm__delivery_t *d, int64_t deadline, atomic_bool *stop);

/** Lets go of the caller's reference to d. NULL-safe. */
void cm__delivery_put(cm__delivery_t *d);

#endif

/*
 * consumer.h — the referral service's Kafka handler (consumer group "referral").
 *
 * user.registered → a member row and, when the user was referred, a
 * pending referral counted in the referrer's referral_counters.
 * The new referral is rejected at once when a fraud rule says so (see
 * rules.h). user.verified → the user's pending referral becomes
 * successful (a referral.converted event through the outbox) and the
 * reward engine pays (reward.granted events); a verification that
 * arrives before its registration is parked and applied when the
 * registration arrives. user.email.changed → the member's email follows
 * (retried until the member exists). Each event's effect and its id (processed_events)
 * are stored in one transaction, so a redelivered event changes nothing.
 */
#ifndef REF_CONSUMER_H
#define REF_CONSUMER_H

#include <stddef.h>

#include "cm/consumer.h"
#include "cm/db.h"
#include "config.h"

/** What the handler needs; the caller owns it and everything it points to. */
typedef struct ref_ctx {
    const ref_config_t *cfg; /* borrowed */
    cm_db_pool_t *pool;      /* borrowed */
} ref_ctx_t;

/** The topics the referral service consumes (NULL-terminated, static storage). */
extern const char *const ref_topics[];

/**
 * Handles one event envelope (untrusted bytes). Returns 0 when its effect
 * is stored (or was stored before, or the type is not one this service
 * uses); CM_EPARSE for an event that can never be handled (malformed
 * envelope or data); another CM_E* code to retry (database down).
 */
CM_MUST_CHECK int ref_handle_event(ref_ctx_t *ctx, const char *bytes, size_t len);

/**
 * Moves referred_id's pending referral to status (with reason, at time
 * at) inside the caller's transaction: counters, a referral.converted
 * event through the outbox and, for successful, the reward engine
 * (referrer credit, welcome credit, milestones; each a reward.granted
 * event, each paid at most once). Returns 0, CM_ENOTFOUND when nothing
 * is pending, or a CM_E* code. Shared with the expiry sweep. The events
 * written carry correlation_id (the consumed event's; NULL for none).
 */
CM_MUST_CHECK int ref__convert(cm_db_t *db, const ref_config_t *cfg, const char *referred_id,
                               const char *status, const char *reason, const char *at,
                               const char *correlation_id);

/** cm_consume_fn adapter for cm_consumer_start; ctx is a ref_ctx_t. */
int ref_consume(const cm_kmsg_t *msg, void *ctx);

#endif

/*
 * sweep.h — the periodic expiry sweep: pending referrals older than
 * REFERRAL_TTL_DAYS become expired (counters and a referral.converted
 * event in the same transaction). Rows are taken FOR UPDATE SKIP LOCKED,
 * so several replicas can sweep at once without doing a row twice.
 * Forgetting old rows (processed event ids, sent outbox rows) is the
 * retention sweeper's job (common/include/cm/sweep.h, migration 003).
 */
#ifndef REF_SWEEP_H
#define REF_SWEEP_H

#include "cm/db.h"
#include "cm/error.h"
#include "config.h"

typedef struct ref_sweep ref_sweep_t;

/** Referrals expired (and event ids forgotten) per transaction at most. */
#define REF_SWEEP_BATCH 200

/**
 * Runs one sweep until nothing is left to expire. *expired (if not NULL)
 * receives how many referrals it expired. Returns 0 or a CM_E* code.
 */
CM_MUST_CHECK int ref_sweep_once(const ref_config_t *cfg, cm_db_pool_t *pool, int *expired);

/** Starts a thread that sweeps every cfg->sweep_interval_s seconds (both borrowed). */
ref_sweep_t *ref_sweep_start(const ref_config_t *cfg, cm_db_pool_t *pool, int *err);

/** Stops the thread (after the sweep in hand) and frees. NULL-safe. */
void ref_sweep_stop(ref_sweep_t *s);

#endif

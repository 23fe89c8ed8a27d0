/*
 * leaderboard.h — the monthly leaderboard, served from memory.
 *
 *   GET /api/leaderboard/  {"period": "2026-12", "results": [{"rank", "username", "successful"}]}
 *
 * A thread reads the top referrers of the current UTC month from the
 * database (ref_store_leaderboard) every REFERRAL_LEADERBOARD_REFRESH_S
 * seconds and keeps them here; a request copies the cached rows (at most
 * REF_BOARD_MAX) and never touches the database, so its cost does not grow
 * with the number of referrals or clicks. The answer is exact as of the
 * last refresh: a conversion shows within one refresh interval. A user's
 * opt-in change (ref_board_set_show) applies to this process's copy at
 * once, and to other replicas at their next refresh.
 *
 * Metrics: linktr_referral_leaderboard_refreshes_total{outcome} (database
 * reads), linktr_referral_leaderboard_served_total (requests answered from
 * the cache) and linktr_referral_leaderboard_refreshed_timestamp_seconds.
 */
#ifndef REF_LEADERBOARD_H
#define REF_LEADERBOARD_H

#include <stdbool.h>

#include <jansson.h>

#include "cm/db.h"
#include "cm/error.h"
#include "cm/metrics.h"

/** A running leaderboard cache and its refresh thread. */
typedef struct ref_board ref_board_t;

/**
 * Refreshes once (a failure is logged, not fatal: the thread retries) and
 * starts the thread that refreshes every refresh_s seconds. size is the
 * number of places shown (1 to REF_BOARD_MAX). pool and metrics (NULL for
 * none) are borrowed and must outlive ref_board_stop. Returns NULL with
 * *err set on bad arguments or when the thread cannot start.
 */
ref_board_t *ref_board_start(cm_db_pool_t *pool, int refresh_s, int size, cm_metrics_t *metrics,
                             int *err);

/** Stops the thread and frees the cache. NULL-safe. */
void ref_board_stop(ref_board_t *b);

/**
 * Reads the database now and replaces the cached rows. Returns 0 or a
 * CM_E* code (the previous rows stay). Thread-safe.
 */
CM_MUST_CHECK int ref_board_refresh(ref_board_t *b);

/**
 * The answer body from the cache: {"period", "results": [{"rank",
 * "username" (null unless that member opted in), "successful"}]}. Returns
 * a new reference, or NULL before the first successful refresh. Never
 * touches the database. Thread-safe.
 */
json_t *ref_board_json(ref_board_t *b);

/**
 * Applies user_id's new opt-in to the cached rows at once (after the
 * caller stored it), so the member sees the change on this process
 * without waiting for a refresh. Thread-safe.
 */
void ref_board_set_show(ref_board_t *b, const char *user_id, bool show);

#endif

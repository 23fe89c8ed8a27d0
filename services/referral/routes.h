/*
 * routes.h — the referral service's HTTP API (API.md, "Referrals").
 *
 *   GET /api/referral-stats/   the caller's counters: one row read
 *   GET /api/referrals/        the caller's referrals, newest first,
 *                              keyset-paginated (limit 1–100, cursor, status)
 *   GET /api/rewards/          the caller's rewards, newest first (limit, cursor)
 *   GET /api/leaderboard/      this month's top referrers, from the cache (leaderboard.h)
 *   PATCH /api/me/             {"show_on_leaderboard": bool}: the caller's opt-in; the
 *                              gateway routes only PATCH here (GET /api/me/ is auth's)
 *
 * All need "Authorization: Bearer <access token>", verified with the
 * common verifier (ES256, pinned kid) even though the gateway checked it.
 */
#ifndef REF_ROUTES_H
#define REF_ROUTES_H

#include <stddef.h>

#include "cm/db.h"
#include "cm/http.h"
#include "cm/jwt.h"
#include "config.h"
#include "leaderboard.h"
#include "store.h"

/** What the handlers share (thread-safe pieces only); the caller owns it. */
typedef struct ref_api {
    const ref_config_t *cfg; /* borrowed */
    cm_db_pool_t *pool;      /* borrowed */
    cm_jwt_verifier_t *jwt;  /* borrowed */
    ref_board_t *board;      /* borrowed: the leaderboard cache */
} ref_api_t;

/** The route table (static storage); pass a ref_api_t as the server's ctx. */
extern const cm_route_t ref_routes[];
extern const size_t ref_routes_count;

/** Longest cursor text accepted (bytes). */
#define REF_CURSOR_MAX 96

/**
 * Encodes a keyset position as an opaque base64url cursor into out
 * (REF_CURSOR_MAX + 1 bytes).
 */
void ref_cursor_encode(const ref_cursor_t *c, char out[REF_CURSOR_MAX + 1]);

/**
 * Decodes an untrusted cursor. Returns 0 and fills *c, or CM_EPARSE for
 * anything ref_cursor_encode did not produce.
 */
CM_MUST_CHECK int ref_cursor_decode(const char *s, ref_cursor_t *c);

#endif

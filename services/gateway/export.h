/*
 * export.h — GET /api/me/export: the caller's data from every service, as
 * one JSON document to download.
 *
 * The gateway gathers it through the services' own APIs with the caller's
 * own Bearer token, so each service applies its own authorisation and a
 * token can only ever read its own subject's data: auth's GET
 * /api/me/export gives {user, sessions}; referral's GET /api/referrals and
 * GET /api/rewards give the rest, every page (keyset cursors) up to
 * GW_EXPORT_MAX_PAGES each. The referred people's names and ids are left
 * out of the referrals: they are other accounts' data. The answer is
 * {user, sessions, referrals, rewards, exported_at} with
 * Content-Disposition: attachment and Cache-Control: no-store.
 */
#ifndef GW_EXPORT_H
#define GW_EXPORT_H

#include <stdbool.h>

#include "cm/http.h"
#include "gateway.h"
#include "routes.h"

/** Pages of 100 rows fetched per list at most; a longer history answers 502. */
#define GW_EXPORT_MAX_PAGES 1000

/** True when r is the export route (the gateway answers it itself). */
bool gw_export_route(const gw_route_t *r);

/**
 * Answers an export request whose token the edge already verified: ip and
 * xff as the edge decided them (forwarded upstream). Always replies.
 */
void gw_export(gw_t *gw, cm_req_t *rq, const char *ip, const char *xff);

#endif

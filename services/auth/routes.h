/*
 * routes.h — the auth service's HTTP handlers (API.md, "Accounts") and the
 * state they share. Handlers run on many civetweb threads at once: the
 * app is read-only after start-up except through the thread-safe objects
 * it points to (pools, signer, verifier).
 */
#ifndef AUTH_ROUTES_H
#define AUTH_ROUTES_H

#include <stddef.h>
#include <stdint.h>

#include "cm/crypto.h"
#include "cm/db.h"
#include "cm/http.h"
#include "cm/jwt.h"
#include "cm/producer.h"
#include "config.h"

/** Everything a handler needs; owned by main, borrowed by the handlers. */
typedef struct auth_app {
    const auth_config_t *cfg;
    cm_db_pool_t *db;
    cm_hashpool_t *hash;
    cm_producer_t *producer; /* for /readyz */
    cm_jwt_signer_t *signer;
    cm_jwt_verifier_t *verifier; /* our own public key (+ JWT_PUBLIC_KEYS) */
    /* Key that derives a refresh token's successor from the token itself, so a
     * retried refresh within the grace window gets the same pair. Derived from
     * the JWT private key, hence equal on every replica. */
    uint8_t refresh_key[32];
    /* Key of the login throttle's HMACs (store.h), derived the same way. */
    uint8_t throttle_key[32];
    /* Counters (owned by the metrics registry; NULL when not registered). */
    cm_family_t *logins;        /* linktr_auth_logins_total{result} */
    cm_family_t *registrations; /* linktr_auth_registrations_total */
    cm_family_t *reuse;         /* linktr_auth_refresh_reuse_total */
} auth_app_t;

/** Registers the auth counters in m and stores them in app. */
void auth_metrics_register(auth_app_t *app, cm_metrics_t *m);

/** The route table (pass app as the server's ctx). */
extern const cm_route_t auth_routes[];
/** Number of entries in auth_routes. */
extern const size_t auth_nroutes;

/** Readiness for cm_http: the database answers (Kafka is the outbox's concern). ctx is the
 * auth_app_t. */
bool auth_ready(void *ctx, cm_buf_t *why);

/**
 * Picks the client address (registration_ip, the login throttle): the
 * X-Real-IP value real_ip when the peer lies in cfg->gateway_nets (the
 * gateway decided it from X-Forwarded-For) and a valid address, else the
 * peer itself. X-Forwarded-For is never read. Writes "" when the peer is
 * not a valid IP address either. out has room for 46 bytes.
 */
void auth_client_ip(const auth_config_t *cfg, const char *peer, const char *real_ip, char out[46]);

#endif

/*
 * config.h — the auth service's configuration, read once from the
 * environment at start-up (cm/config.h) and then only read.
 */
#ifndef AUTH_CONFIG_H
#define AUTH_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "cm/error.h"
#include "cm/log.h"

/** Every setting of linktr-auth; strings are owned by the struct. */
typedef struct auth_config {
    int port;                           /* PORT, 8001 */
    char *bind;                         /* BIND_ADDRESS, 127.0.0.1 */
    char *database_url;                 /* DATABASE_URL, required */
    char *kafka_bootstrap;              /* KAFKA_BOOTSTRAP, required */
    char *public_base_url;              /* PUBLIC_BASE_URL, without a trailing slash */
    char *jwt_private_key_file;         /* JWT_PRIVATE_KEY_FILE, required (PEM P-256) */
    char *jwt_key_id;                   /* JWT_KEY_ID, dev-1 */
    char *jwt_issuer;                   /* JWT_ISSUER, linktr */
    char *jwt_audience;                 /* JWT_AUDIENCE, linktr */
    char *jwt_public_keys;              /* JWT_PUBLIC_KEYS, optional: older keys still accepted */
    int access_ttl_s;                   /* ACCESS_TTL_S, 900 */
    int refresh_ttl_days;               /* REFRESH_TTL_DAYS, 30 */
    int refresh_grace_s;                /* REFRESH_GRACE_S, 10 */
    uint8_t mailer_seal_pk[32];         /* MAILER_SEAL_PUBLIC_KEY, required */
    unsigned long long argon2_opslimit; /* ARGON2_OPSLIMIT, 2 */
    size_t argon2_memlimit;             /* ARGON2_MEMLIMIT_KIB (19456) in bytes */
    int hash_workers;                   /* HASH_WORKERS, 0 = cores */
    int hash_queue;                     /* HASH_QUEUE, 64 */
    int http_threads;                   /* HTTP_THREADS, 16 */
    int request_timeout_ms;             /* REQUEST_TIMEOUT_MS, CM_HTTP_REQUEST_TIMEOUT_MS */
    int keepalive_timeout_ms;           /* KEEPALIVE_TIMEOUT_MS, 500 (behind the gateway) */
    int db_pool_size;                   /* DB_POOL_SIZE, 10 */
    cm_log_level_t log_level;           /* LOG_LEVEL, info */
} auth_config_t;

/**
 * Reads and validates every variable into *cfg. On a problem prints one
 * line per bad variable (naming it) to stderr and returns CM_EINVAL; then
 * *cfg holds nothing to dispose.
 */
CM_MUST_CHECK int auth_config_load(auth_config_t *cfg);

/** Frees the strings of a loaded config. NULL-safe and idempotent. */
void auth_config_dispose(auth_config_t *cfg);

#endif

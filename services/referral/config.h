/*
 * config.h — the referral service's configuration, read once from the environment.
 */
#ifndef REF_CONFIG_H
#define REF_CONFIG_H

#include "cm/error.h"
#include "cm/log.h"
#include "rules.h"

/** Everything the referral service reads from its environment; strings owned by the struct. */
typedef struct ref_config {
    int port;                 /* PORT, 8002 */
    char *bind;               /* BIND_ADDRESS, 127.0.0.1 */
    char *db_url;             /* DATABASE_URL, required */
    char *kafka;              /* KAFKA_BOOTSTRAP, required */
    char *public_base_url;    /* PUBLIC_BASE_URL, http://127.0.0.1:8000 (no trailing slash) */
    cm_log_level_t log_level; /* LOG_LEVEL, info */
    int db_pool_size;         /* DB_POOL_SIZE, 8 */
    int http_threads;         /* HTTP_THREADS, 8 */
    int request_timeout_ms;   /* REQUEST_TIMEOUT_MS, CM_HTTP_REQUEST_TIMEOUT_MS */
    int keepalive_timeout_ms; /* KEEPALIVE_TIMEOUT_MS, 500 (behind the gateway) */
    char *jwt_public_keys;    /* JWT_PUBLIC_KEYS "kid=path.pem,...", required */
    char *jwt_issuer;         /* JWT_ISSUER, linktr */
    char *jwt_audience;       /* JWT_AUDIENCE, linktr */
    int ttl_days;             /* REFERRAL_TTL_DAYS, 30 */
    int daily_cap;            /* REFERRAL_DAILY_CAP, 50 */
    int sweep_interval_s;     /* REFERRAL_SWEEP_INTERVAL_S, 60: expiry sweep period */
    ref_rules_t rules;        /* REFERRAL_RULES_FILE over the built-in defaults */
    ref_domains_t disposable; /* REFERRAL_DISPOSABLE_DOMAINS_FILE, else the embedded list */
} ref_config_t;

/** The NOTIFY channel of the referral outbox. */
#define REF_OUTBOX_CHANNEL "referral_outbox"

/**
 * Fills cfg from the environment; every bad variable is named on stderr.
 * Returns 0 or CM_EINVAL (then cfg holds nothing to dispose).
 */
CM_MUST_CHECK int ref_config_load(ref_config_t *cfg);

/** Frees the strings and the domain list. NULL-safe. */
void ref_config_dispose(ref_config_t *cfg);

#endif

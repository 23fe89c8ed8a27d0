/*
 * config.h — the referral service's configuration, read once from the environment.
 */
#ifndef REF_CONFIG_H
#define REF_CONFIG_H

#include "cm/config.h"
#include "cm/error.h"
#include "rules.h"

/** Everything the referral service reads from its environment; strings owned by the struct. */
typedef struct ref_config {
    cm_service_config_t svc;  /* PORT 8002, HTTP_THREADS 8, DB_POOL_SIZE 8, KAFKA_BOOTSTRAP, ... */
    cm_jwt_config_t jwt;      /* JWT_PUBLIC_KEYS (required), JWT_ISSUER, JWT_AUDIENCE */
    int ttl_days;             /* REFERRAL_TTL_DAYS, 30 */
    int daily_cap;            /* REFERRAL_DAILY_CAP, 50 */
    int sweep_interval_s;     /* REFERRAL_SWEEP_INTERVAL_S, 60: expiry sweep period */
    int board_refresh_s;      /* REFERRAL_LEADERBOARD_REFRESH_S, 30: leaderboard cache period */
    int board_size;           /* REFERRAL_LEADERBOARD_SIZE, 20: places shown (1-100) */
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

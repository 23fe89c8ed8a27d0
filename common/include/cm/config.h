/*
 * cm/config.h — configuration from environment variables (12-factor).
 *
 * A service reads every variable once at start-up through a cm_cfg_t,
 * which collects every problem instead of stopping at the first, then
 * calls cm_cfg_finish(): it prints one line per bad variable, naming it
 * and saying what is wrong, and fails. The values land in the service's
 * own const config struct; nothing re-reads the environment later.
 *
 *     cm_cfg_t c;
 *     cm_cfg_init(&c, "auth");
 *     cfg.port = (int)cm_cfg_int(&c, "PORT", 8001, 1, 65535);
 *     cfg.db_url = cm_cfg_str(&c, "DATABASE_URL", "postgresql:///linktr");
 *     if (cm_cfg_finish(&c) != 0) exit(2);
 */
#ifndef CM_CONFIG_H
#define CM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "cm/error.h"
#include "cm/log.h"

#define CM_CFG_MAX_ERRORS 32

typedef struct cm_cfg {
    const char *service;
    int nerrors;
    /* "NAME: what is wrong" lines, owned by the cm_cfg_t. */
    char *errors[CM_CFG_MAX_ERRORS];
} cm_cfg_t;

/** Starts collecting; service names the program in messages (borrowed). */
void cm_cfg_init(cm_cfg_t *c, const char *service);

/**
 * Returns the variable's value, or def when unset or empty. The result is
 * a new string the caller free()s (NULL only when unset and def is NULL).
 */
char *cm_cfg_str(cm_cfg_t *c, const char *name, const char *def);

/** Like cm_cfg_str, but an unset or empty variable is an error. */
char *cm_cfg_str_required(cm_cfg_t *c, const char *name);

/** Integer in [min, max]; def when unset; records an error when malformed or out of range. */
long long cm_cfg_int(cm_cfg_t *c, const char *name, long long def, long long min, long long max);

/** Boolean: 1/0, true/false, yes/no, on/off (any case); def when unset. */
bool cm_cfg_bool(cm_cfg_t *c, const char *name, bool def);

/**
 * One of a fixed set of words (NULL-terminated choices); returns the
 * index of the match, or the index of def when unset; records an error
 * listing the choices otherwise.
 */
int cm_cfg_choice(cm_cfg_t *c, const char *name, const char *def, const char *const *choices);

/**
 * A URL whose scheme is one of the NULL-terminated schemes ("http",
 * "postgresql", ...). Returns a new string (caller frees) or NULL when
 * unset with def NULL.
 */
char *cm_cfg_url(cm_cfg_t *c, const char *name, const char *def, const char *const *schemes);

/** Records an error about a variable that the caller validated itself. */
void cm_cfg_error(cm_cfg_t *c, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * Prints every collected error to stderr ("linktr-auth: config: PORT: ...")
 * and frees them. Returns 0 if there were none, CM_EINVAL otherwise.
 */
CM_MUST_CHECK int cm_cfg_finish(cm_cfg_t *c);

/* ---- the variables every service shares ----------------------------------- */

/** The retention settings every service reads (the same variables everywhere). */
typedef struct cm_retention {
    int interval_s; /* RETENTION_INTERVAL_S, 300: time between sweeps */
    int batch;      /* RETENTION_BATCH, 1000: rows per table per statement */
    int pause_ms;   /* RETENTION_PAUSE_MS, 50: pause between two batches */
    int keep_days;  /* RETENTION_DAYS, 7: expired, used and sent rows are kept this long */
    int dedup_days; /* RETENTION_DEDUP_DAYS, 30: processed-event ids, mail ledger, parked rows */
} cm_retention_t;

/**
 * Reads the RETENTION_* variables into r through c (bad values are
 * reported by cm_cfg_finish like any other variable). RETENTION_DEDUP_DAYS
 * must outlast the topics' retention (7 days): past it a redelivery is
 * impossible, so forgetting an event id cannot let it apply twice.
 */
void cm_retention_load(cm_cfg_t *c, cm_retention_t *r);

/** A service's defaults for the shared variables, and which of them it reads. */
typedef struct cm_service_defaults {
    int port;         /* PORT when unset */
    int http_threads; /* HTTP_THREADS when unset */
    int db_pool_size; /* DB_POOL_SIZE when unset; 0: no database, DATABASE_URL is not read */
    bool kafka;       /* reads KAFKA_BOOTSTRAP (then required) */
    int keepalive_timeout_ms; /* KEEPALIVE_TIMEOUT_MS when unset; 0 → 500 */
} cm_service_defaults_t;

/**
 * The shared variables, each read by one helper with one message, so PORT
 * or DATABASE_URL is named and checked the same way in every service.
 * Strings are owned by the struct; free them with cm_service_config_dispose.
 */
/** ADMIN_PORT's default is PORT plus this (8001 → 9001). */
#define CM_ADMIN_PORT_OFFSET 1000

typedef struct cm_service_config {
    int port;                 /* PORT, 1-65535 */
    int admin_port;           /* ADMIN_PORT, PORT + 1000: /healthz /readyz /metrics /version */
    char *bind;               /* BIND_ADDRESS, 127.0.0.1 */
    cm_log_level_t log_level; /* LOG_LEVEL, info */
    int http_threads;         /* HTTP_THREADS, 1-1024 */
    int request_timeout_ms;   /* REQUEST_TIMEOUT_MS: reading a head, then its body (cm/http.h) */
    int keepalive_timeout_ms; /* KEEPALIVE_TIMEOUT_MS: an idle kept-alive connection's life */
    char *database_url;       /* DATABASE_URL (postgresql://), NULL without a database */
    int db_pool_size;         /* DB_POOL_SIZE, 1-256 */
    char *kafka_bootstrap;    /* KAFKA_BOOTSTRAP host:port[,...], NULL without Kafka */
    int kafka_fetch_wait_ms;  /* KAFKA_FETCH_WAIT_MS, 1-10000: a consumer's fetch.wait.max.ms */
    char *public_base_url;    /* PUBLIC_BASE_URL, http://127.0.0.1:8000, no trailing slash */
    cm_retention_t retention; /* RETENTION_*, read where the service has a database */
} cm_service_config_t;

/** Reads the shared variables into *out (zeroed first); errors collect in c. */
void cm_cfg_service(cm_cfg_t *c, const cm_service_defaults_t *d, cm_service_config_t *out);

/** Frees the strings of *s and zeroes it. NULL-safe. */
void cm_service_config_dispose(cm_service_config_t *s);

/** What a token verifier reads: JWT_PUBLIC_KEYS, JWT_ISSUER, JWT_AUDIENCE (owned strings). */
typedef struct cm_jwt_config {
    char *public_keys; /* JWT_PUBLIC_KEYS "kid=path.pem,...", NULL when optional and unset */
    char *issuer;      /* JWT_ISSUER, linktr */
    char *audience;    /* JWT_AUDIENCE, linktr */
} cm_jwt_config_t;

/**
 * Reads the JWT verifier variables into *out. With keys_required, an
 * unset JWT_PUBLIC_KEYS is an error. The list itself is parsed once, when
 * cm_jwt_verifier_from_config loads it (it reads the key files).
 */
void cm_cfg_jwt(cm_cfg_t *c, bool keys_required, cm_jwt_config_t *out);

/** Frees the strings of *j and zeroes it. NULL-safe. */
void cm_jwt_config_dispose(cm_jwt_config_t *j);

#endif

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

#endif

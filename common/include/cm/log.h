/*
 * cm/log.h — JSON lines on stdout.
 *
 * One line per event: {"time","level","service","request_id","msg",...fields}.
 * The service name and level are set once by cm_log_init() at start-up,
 * before any thread starts, and only read afterwards.
 */
#ifndef CM_LOG_H
#define CM_LOG_H

#include <stdbool.h>

#include <jansson.h>

typedef enum cm_log_level {
    CM_LOG_DEBUG = 0,
    CM_LOG_INFO = 1,
    CM_LOG_WARN = 2,
    CM_LOG_ERROR = 3,
} cm_log_level_t;

/** Longest message text written; longer text (user input included) is cut. */
#define CM_LOG_MAX_MSG 1024

/** Sets the service name (copied) and minimum level. Call once, before threads start. */
void cm_log_init(const char *service, cm_log_level_t level);

/** Parses "debug|info|warn|error" into *out. Returns 0 or CM_EPARSE. */
int cm_log_parse_level(const char *s, cm_log_level_t *out);

/** True if a line at this level would be written. */
bool cm_log_enabled(cm_log_level_t level);

/**
 * Writes one line. request_id may be NULL. fields may be NULL or a JSON
 * object whose members are added to the line (borrowed: not decref'd).
 * Prefer the CM_LOG macros, which skip argument evaluation when disabled.
 */
void cm_log_write(cm_log_level_t level, const char *request_id, json_t *fields, const char *fmt,
                  ...) __attribute__((format(printf, 4, 5)));

/**
 * Writes one access-log line: the standard members, msg "request", and
 * method, route, status and duration_ms as fields — the same object
 * cm_log_write would write, formatted straight into a stack buffer (one
 * per answered request on every service, so no JSON tree is built). Text
 * members are escaped; request_id and route may be NULL (omitted).
 */
void cm_log_request(cm_log_level_t level, const char *request_id, const char *method,
                    const char *route, int status, double duration_ms);

/** Logs at a level; arguments are evaluated only when the level is enabled. */
#define CM_LOG(level, request_id, ...)                                                             \
    do {                                                                                           \
        if (cm_log_enabled(level))                                                                 \
            cm_log_write((level), (request_id), NULL, __VA_ARGS__);                                \
    } while (0)

/** Like CM_LOG with extra fields (a borrowed JSON object). */
#define CM_LOGF(level, request_id, fields, ...)                                                    \
    do {                                                                                           \
        if (cm_log_enabled(level))                                                                 \
            cm_log_write((level), (request_id), (fields), __VA_ARGS__);                            \
    } while (0)

#define CM_DEBUG(rid, ...) CM_LOG(CM_LOG_DEBUG, rid, __VA_ARGS__)
#define CM_INFO(rid, ...) CM_LOG(CM_LOG_INFO, rid, __VA_ARGS__)
#define CM_WARN(rid, ...) CM_LOG(CM_LOG_WARN, rid, __VA_ARGS__)
#define CM_ERROR(rid, ...) CM_LOG(CM_LOG_ERROR, rid, __VA_ARGS__)

#endif

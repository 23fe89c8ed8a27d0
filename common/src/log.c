#include "cm/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cm/error.h"
#include "cm/util.h"

/*
 * Set once by cm_log_init() before any thread starts and only read after
 * that; a logger threaded through every call would add noise for nothing.
 */
static struct {
    char service[64];
    cm_log_level_t level;
} log_cfg = {"linktr", CM_LOG_INFO};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void cm_log_init(const char *service, cm_log_level_t level)
{
    snprintf(log_cfg.service, sizeof log_cfg.service, "%s", service ? service : "linktr");
    log_cfg.level = level;
}

int cm_log_parse_level(const char *s, cm_log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (s && strcmp(s, level_names[i]) == 0) {
            *out = (cm_log_level_t)i;
            return 0;
        }
    }
    return CM_EPARSE;
}

bool cm_log_enabled(cm_log_level_t level)
{
    return level >= log_cfg.level;
}

void cm_log_write(cm_log_level_t level, const char *request_id, json_t *fields, const char *fmt,
                  ...)
{
    if ((int)level < 0 || level > CM_LOG_ERROR)
        level = CM_LOG_ERROR;
    char msg[CM_LOG_MAX_MSG + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    char when[32];
    cm_format_time(cm_now_us(), when);
    json_t *line = json_object();
    json_object_set_new(line, "time", json_string(when));
    json_object_set_new(line, "level", json_string(level_names[level]));
    json_object_set_new(line, "service", json_string(log_cfg.service));
    if (request_id)
        json_object_set_new(line, "request_id", json_stringn(request_id, strnlen(request_id, 128)));
    /* Cut text may end inside a UTF-8 sequence; jansson would refuse it. */
    json_t *m = json_string(msg);
    json_object_set_new(line, "msg", m ? m : json_string("(message not valid UTF-8)"));
    if (json_is_object(fields))
        json_object_update_missing(line, fields);
    char *text = json_dumps(line, JSON_COMPACT);
    json_decref(line);
    if (!text)
        return;
    flockfile(stdout);
    fputs(text, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    funlockfile(stdout);
    free(text);
}

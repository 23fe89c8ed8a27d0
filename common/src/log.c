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

/*
 * Appends to buf[*at..cap): raw text (put_raw) or s as a JSON string with its quotes,
 * escaping what JSON must and any byte outside printable ASCII (put_json). Each stops
 * short rather than overflow; cm_log_request's buffer holds the longest line its bounds
 * allow, so nothing is ever cut in practice.
 */
static void put_raw(char *buf, size_t cap, size_t *at, const char *s)
{
    size_t n = strlen(s);
    if (*at + n < cap) {
        for (size_t k = 0; k < n; k++)
            buf[*at + k] = s[k];
        *at += n;
    }
}

static void put_json(char *buf, size_t cap, size_t *at, const char *s, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = *at;
    if (i + 2 >= cap)
        return;
    buf[i++] = '"';
    for (size_t k = 0; k < max && s[k] && i + 8 < cap; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c == '"' || c == '\\') {
            buf[i++] = '\\';
            buf[i++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            buf[i++] = '\\';
            buf[i++] = 'u';
            buf[i++] = '0';
            buf[i++] = '0';
            buf[i++] = hex[c >> 4];
            buf[i++] = hex[c & 15];
        } else {
            buf[i++] = (char)c;
        }
    }
    buf[i++] = '"';
    *at = i;
}

/* Longest text members of an access line, in bytes before escaping (at most 6 each after). */
enum { REQ_MAX_ID = 128, REQ_MAX_METHOD = 16, REQ_MAX_ROUTE = 256 };

void cm_log_request(cm_log_level_t level, const char *request_id, const char *method,
                    const char *route, int status, double duration_ms)
{
    if ((int)level < 0 || level > CM_LOG_ERROR)
        level = CM_LOG_ERROR;
    char when[32], tail[64];
    cm_format_time(cm_now_us(), when);
    /* 6 bytes per escaped byte of every text member, plus the names and numbers. */
    char line[6 * (sizeof log_cfg.service + REQ_MAX_ID + REQ_MAX_METHOD + REQ_MAX_ROUTE) + 256];
    size_t at = 0;
    put_raw(line, sizeof line, &at, "{\"time\":\"");
    put_raw(line, sizeof line, &at, when);
    put_raw(line, sizeof line, &at, "\",\"level\":\"");
    put_raw(line, sizeof line, &at, level_names[level]);
    put_raw(line, sizeof line, &at, "\",\"service\":");
    put_json(line, sizeof line, &at, log_cfg.service, sizeof log_cfg.service);
    if (request_id) {
        put_raw(line, sizeof line, &at, ",\"request_id\":");
        put_json(line, sizeof line, &at, request_id, REQ_MAX_ID);
    }
    put_raw(line, sizeof line, &at, ",\"msg\":\"request\",\"method\":");
    put_json(line, sizeof line, &at, method ? method : "OTHER", REQ_MAX_METHOD);
    if (route) {
        put_raw(line, sizeof line, &at, ",\"route\":");
        put_json(line, sizeof line, &at, route, REQ_MAX_ROUTE);
    }
    snprintf(tail, sizeof tail, ",\"status\":%d,\"duration_ms\":%.6f}\n", status,
             duration_ms >= 0 && duration_ms < 1e12 ? duration_ms : 0.0);
    put_raw(line, sizeof line, &at, tail);
    flockfile(stdout);
    fwrite(line, 1, at, stdout);
    fflush(stdout);
    funlockfile(stdout);
}

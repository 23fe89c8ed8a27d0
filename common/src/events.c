/* The event envelope: building and strict parsing (see cm/events.h). */
#include "cm/events.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "cm/jsonscan.h"
#include "cm/util.h"

/* A type is 1–63 characters of [a-z.]: it doubles as a Kafka topic name. */
static bool valid_type(const char *s, size_t len)
{
    if (len == 0 || len >= sizeof(((cm_event_t *)0)->type))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '.'))
            return false;
    return true;
}

/* A source is a service name: 1–31 characters of [a-z0-9_-]. */
static bool valid_source(const char *s, size_t len)
{
    if (len == 0 || len >= sizeof(((cm_event_t *)0)->source))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

json_t *cm_event_new(const char *type, const char *source, json_t *data)
{
    if (!type || !source || !json_is_object(data) || !valid_type(type, strlen(type)) ||
        !valid_source(source, strlen(source))) {
        json_decref(data);
        return NULL;
    }
    char id[37];
    char at[32];
    cm_uuid_v4(id);
    cm_format_time(cm_now_us(), at);
    return json_pack("{s:s, s:s, s:i, s:s, s:s, s:o}", "id", id, "type", type, "version", 1,
                     "occurred_at", at, "source", source, "data", data);
}

/* Copies a string member into dst (size cap) after checking it with ok(). */
static int copy_member(json_t *root, const char *name, char *dst, size_t cap,
                       bool (*ok)(const char *, size_t))
{
    json_t *v = json_object_get(root, name); /* borrowed */
    if (!json_is_string(v))
        return CM_EPARSE;
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len >= cap || memchr(s, '\0', len) || (ok && !ok(s, len)))
        return CM_EPARSE;
    memcpy(dst, s, len);
    dst[len] = '\0';
    return 0;
}

static bool valid_uuid(const char *s, size_t len)
{
    return cm_is_uuid(s, len);
}

/* An RFC 3339 timestamp is at least "2026-11-27T10:00:00Z"; the exact form is the producer's. */
static bool valid_time(const char *s, size_t len)
{
    return len >= 20 && s[4] == '-' && s[7] == '-' && (s[10] == 'T' || s[10] == 't');
}

bool cm_event_correlation_valid(const char *s)
{
    size_t n = s ? strnlen(s, CM_EVENT_MAX_CORRELATION + 1) : 0;
    if (n == 0 || n > CM_EVENT_MAX_CORRELATION)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool valid_correlation(const char *s, size_t len)
{
    return len > 0 && len <= CM_EVENT_MAX_CORRELATION && cm_event_correlation_valid(s);
}

int cm_event_set_correlation(json_t *env, const char *id)
{
    if (!id || !*id)
        return 0;
    if (!json_is_object(env) || !cm_event_correlation_valid(id))
        return CM_EINVAL;
    return json_object_set_new(env, "correlation_id", json_string(id)) == 0 ? 0 : CM_ENOMEM;
}

/* Appends the hex digits of a UUID (36 characters) to dst, lower case, up to n digits. */
static void uuid_hex(const char *uuid, char *dst, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; uuid[i] && k < n; i++)
        if (uuid[i] != '-')
            dst[k++] = (char)((uuid[i] >= 'A' && uuid[i] <= 'F') ? uuid[i] + 32 : uuid[i]);
}

int cm_event_traceparent(const char *correlation_id, const char *event_id,
                         char out[CM_TRACEPARENT_LEN + 1])
{
    if (!cm_event_correlation_valid(correlation_id) || !event_id ||
        !cm_is_uuid(event_id, strnlen(event_id, 37)))
        return CM_EINVAL;
    char trace[33] = {0}, parent[17] = {0};
    size_t n = strlen(correlation_id);
    if (cm_is_uuid(correlation_id, n)) {
        uuid_hex(correlation_id, trace, 32);
    } else {
        unsigned char h[16];
        crypto_generichash(h, sizeof h, (const unsigned char *)correlation_id, n, NULL, 0);
        sodium_bin2hex(trace, sizeof trace, h, sizeof h);
    }
    uuid_hex(event_id, parent, 16);
    /* All-zero ids are invalid in W3C trace context. */
    if (strspn(trace, "0") == 32 || strspn(parent, "0") == 16)
        return CM_EINVAL;
    snprintf(out, CM_TRACEPARENT_LEN + 1, "00-%s-%s-01", trace, parent);
    return 0;
}

static int parse_members(json_t *root, cm_event_t *ev)
{
    if (copy_member(root, "id", ev->id, sizeof ev->id, valid_uuid) != 0 ||
        copy_member(root, "type", ev->type, sizeof ev->type, valid_type) != 0 ||
        copy_member(root, "occurred_at", ev->occurred_at, sizeof ev->occurred_at, valid_time) !=
            0 ||
        copy_member(root, "source", ev->source, sizeof ev->source, valid_source) != 0)
        return CM_EPARSE;
    json_t *version = json_object_get(root, "version"); /* borrowed */
    if (!json_is_integer(version) || json_integer_value(version) < 1 ||
        json_integer_value(version) > 1000000)
        return CM_EPARSE;
    ev->version = (int)json_integer_value(version);
    if (json_object_get(root, "correlation_id") &&
        copy_member(root, "correlation_id", ev->correlation_id, sizeof ev->correlation_id,
                    valid_correlation) != 0)
        return CM_EPARSE;
    json_t *data = json_object_get(root, "data"); /* borrowed */
    if (!json_is_object(data))
        return CM_EPARSE;
    ev->data = json_incref(data);
    return 0;
}

int cm_event_parse(const char *bytes, size_t len, cm_event_t *out)
{
    if (!out)
        return CM_EINVAL;
    memset(out, 0, sizeof *out);
    if (!bytes)
        return CM_EPARSE;
    if (len > CM_EVENT_MAX_BYTES)
        return CM_ETOOBIG;
    /* Consumer threads are not the 8 MiB main thread: bound jansson's recursion first. */
    if (cm_json_scan(bytes, len, CM_EVENT_MAX_BYTES, CM_JSON_MAX_DEPTH_EVENT, NULL) != 0)
        return CM_EPARSE;
    json_error_t jerr;
    json_t *root = json_loadb(bytes, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return CM_EPARSE;
    }
    int rc = parse_members(root, out);
    json_decref(root);
    if (rc != 0) {
        cm_event_dispose(out);
        memset(out, 0, sizeof *out);
    }
    return rc;
}

void cm_event_dispose(cm_event_t *ev)
{
    if (!ev)
        return;
    json_decref(ev->data);
    ev->data = NULL;
}

/* ---- field readers ------------------------------------------------------------ */

const char *cm_event_text(const json_t *obj, const char *key, size_t max)
{
    json_t *v = json_object_get(obj, key); /* borrowed */
    const char *s = json_string_value(v);
    if (!s)
        return NULL;
    /* A JSON string may hold \u0000: its length then differs from strlen. */
    size_t n = json_string_length(v);
    if (n == 0 || n > max || strlen(s) != n)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return NULL;
    return s;
}

const char *cm_event_uuid(const json_t *obj, const char *key)
{
    const char *s = cm_event_text(obj, key, 36);
    return s && cm_is_uuid(s, strlen(s)) ? s : NULL;
}

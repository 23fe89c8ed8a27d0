/* A JSON Schema subset validator for tests (see schema.h). */
#include "schema.h"

#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/util.h"

typedef struct vctx {
    char *err;
    size_t errlen;
} vctx_t;

static bool validate(json_t *schema, json_t *inst, const char *path, vctx_t *v);

__attribute__((format(printf, 3, 4))) static bool fail(vctx_t *v, const char *path, const char *fmt,
                                                       ...)
{
    if (!v->err || v->errlen == 0)
        return false;
    int n = snprintf(v->err, v->errlen, "%s: ", path);
    if (n >= 0 && (size_t)n < v->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(v->err + n, v->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return false;
}

static bool is_annotation(const char *k)
{
    static const char *const names[] = {"$schema",  "$id",      "title",   "description",
                                        "examples", "$comment", "default", NULL};
    for (size_t i = 0; names[i]; i++)
        if (strcmp(k, names[i]) == 0)
            return true;
    return false;
}

static bool type_matches(const char *name, json_t *inst)
{
    if (strcmp(name, "object") == 0)
        return json_is_object(inst);
    if (strcmp(name, "array") == 0)
        return json_is_array(inst);
    if (strcmp(name, "string") == 0)
        return json_is_string(inst);
    if (strcmp(name, "boolean") == 0)
        return json_is_boolean(inst);
    if (strcmp(name, "null") == 0)
        return json_is_null(inst);
    if (strcmp(name, "number") == 0)
        return json_is_number(inst);
    if (strcmp(name, "integer") == 0) {
        if (json_is_integer(inst))
            return true;
        double d = json_is_real(inst) ? json_real_value(inst) : 0.5;
        return d == (double)(long long)d;
    }
    return false;
}

static bool check_type(json_t *t, json_t *inst, const char *path, vctx_t *v)
{
    if (json_is_string(t)) {
        if (type_matches(json_string_value(t), inst))
            return true;
        return fail(v, path, "type: expected %s", json_string_value(t));
    }
    if (!json_is_array(t) || json_array_size(t) == 0)
        return fail(v, path, "schema error: type must be a string or a non-empty array");
    size_t i;
    json_t *name;
    json_array_foreach(t, i, name)
    {
        if (!json_is_string(name))
            return fail(v, path, "schema error: type names must be strings");
        if (type_matches(json_string_value(name), inst))
            return true;
    }
    return fail(v, path, "type: matches none of the listed types");
}

static bool check_enum(json_t *e, json_t *inst, const char *path, vctx_t *v)
{
    if (!json_is_array(e))
        return fail(v, path, "schema error: enum must be an array");
    size_t i;
    json_t *option;
    json_array_foreach(e, i, option)
    {
        if (json_equal(option, inst))
            return true;
    }
    return fail(v, path, "enum: value is not one of the allowed values");
}

/* Length in code points, as JSON Schema counts it (jansson holds valid UTF-8). */
static size_t utf8_length(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            count++;
    return count;
}

/* pattern: the schemas use POSIX-extended-compatible expressions only (anchors, classes, {m,n}). */
static bool check_pattern(json_t *pattern, json_t *inst, const char *path, vctx_t *v)
{
    if (!json_is_string(inst))
        return true;
    regex_t re;
    if (!json_is_string(pattern) ||
        regcomp(&re, json_string_value(pattern), REG_EXTENDED | REG_NOSUB) != 0)
        return fail(v, path, "schema error: pattern is not a POSIX extended expression");
    bool ok = regexec(&re, json_string_value(inst), 0, NULL, 0) == 0;
    regfree(&re);
    return ok ? true : fail(v, path, "pattern: %s does not match", json_string_value(pattern));
}

static bool check_length(const char *kw, json_t *limit, json_t *inst, const char *path, vctx_t *v)
{
    if (!json_is_integer(limit) || json_integer_value(limit) < 0)
        return fail(v, path, "schema error: %s must be a non-negative integer", kw);
    if (!json_is_string(inst))
        return true;
    size_t len = utf8_length(json_string_value(inst), json_string_length(inst));
    size_t want = (size_t)json_integer_value(limit);
    bool is_min = strcmp(kw, "minLength") == 0;
    if (is_min ? len < want : len > want)
        return fail(v, path, "%s: length %zu, limit %zu", kw, len, want);
    return true;
}

static bool check_bound(const char *kw, json_t *limit, json_t *inst, const char *path, vctx_t *v)
{
    if (!json_is_number(limit))
        return fail(v, path, "schema error: %s must be a number", kw);
    if (!json_is_number(inst))
        return true;
    double x = json_number_value(inst);
    double b = json_number_value(limit);
    bool is_min = strcmp(kw, "minimum") == 0;
    if (is_min ? x < b : x > b)
        return fail(v, path, "%s: %g is beyond %g", kw, x, b);
    return true;
}

static bool digits(const char *s, size_t n, int *out)
{
    int value = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        value = value * 10 + (s[i] - '0');
    }
    *out = value;
    return true;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

/* RFC 3339 section 5.6 date-time: 2026-11-27T10:00:00.123Z or with a ±hh:mm offset. */
static bool is_date_time(const char *s, size_t n)
{
    int y, mo, d, h, mi, sec, oh, om;
    if (n < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &h) ||
        s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &sec))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
        return false;
    size_t i = 19;
    if (i < n && s[i] == '.') {
        size_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start)
            return false;
    }
    if (i + 1 == n && (s[i] == 'Z' || s[i] == 'z'))
        return true;
    if (i + 6 != n || (s[i] != '+' && s[i] != '-') || !digits(s + i + 1, 2, &oh) ||
        s[i + 3] != ':' || !digits(s + i + 4, 2, &om))
        return false;
    return oh <= 23 && om <= 59;
}

static bool check_format(json_t *f, json_t *inst, const char *path, vctx_t *v)
{
    if (!json_is_string(f))
        return fail(v, path, "schema error: format must be a string");
    if (!json_is_string(inst))
        return true;
    const char *name = json_string_value(f);
    const char *s = json_string_value(inst);
    size_t n = json_string_length(inst);
    if (strcmp(name, "uuid") == 0)
        return cm_is_uuid(s, n) ? true : fail(v, path, "format uuid");
    if (strcmp(name, "date-time") == 0)
        return is_date_time(s, n) ? true : fail(v, path, "format date-time");
    return fail(v, path, "schema error: unsupported format %s", name);
}

static bool check_required(json_t *req, json_t *inst, const char *path, vctx_t *v)
{
    if (!json_is_array(req))
        return fail(v, path, "schema error: required must be an array");
    if (!json_is_object(inst))
        return true;
    size_t i;
    json_t *name;
    json_array_foreach(req, i, name)
    {
        if (!json_is_string(name))
            return fail(v, path, "schema error: required names must be strings");
        if (!json_object_get(inst, json_string_value(name)))
            return fail(v, path, "required: missing member %s", json_string_value(name));
    }
    return true;
}

static bool check_properties(json_t *props, json_t *additional, json_t *inst, const char *path,
                             vctx_t *v)
{
    if ((props && !json_is_object(props)) ||
        (additional && !json_is_object(additional) && !json_is_boolean(additional)))
        return fail(v, path, "schema error: properties/additionalProperties malformed");
    if (!json_is_object(inst))
        return true;
    const char *key;
    json_t *member;
    json_object_foreach(inst, key, member)
    {
        json_t *sub = props ? json_object_get(props, key) : NULL; /* borrowed */
        if (!sub)
            sub = additional;
        if (!sub)
            continue;
        char child[512];
        snprintf(child, sizeof child, "%s.%s", path, key);
        if (json_is_false(sub))
            return fail(v, child, "additionalProperties: member not allowed");
        if (!validate(sub, member, child, v))
            return false;
    }
    return true;
}

static bool check_keyword(json_t *schema, const char *kw, json_t *value, json_t *inst,
                          const char *path, vctx_t *v)
{
    if (is_annotation(kw))
        return true;
    if (strcmp(kw, "type") == 0)
        return check_type(value, inst, path, v);
    if (strcmp(kw, "const") == 0)
        return json_equal(value, inst) ? true : fail(v, path, "const: value differs");
    if (strcmp(kw, "enum") == 0)
        return check_enum(value, inst, path, v);
    if (strcmp(kw, "minLength") == 0 || strcmp(kw, "maxLength") == 0)
        return check_length(kw, value, inst, path, v);
    if (strcmp(kw, "minimum") == 0 || strcmp(kw, "maximum") == 0)
        return check_bound(kw, value, inst, path, v);
    if (strcmp(kw, "format") == 0)
        return check_format(value, inst, path, v);
    if (strcmp(kw, "pattern") == 0)
        return check_pattern(value, inst, path, v);
    if (strcmp(kw, "required") == 0)
        return check_required(value, inst, path, v);
    if (strcmp(kw, "properties") == 0)
        return check_properties(value, json_object_get(schema, "additionalProperties"), inst, path,
                                v);
    if (strcmp(kw, "additionalProperties") == 0)
        return json_object_get(schema, "properties") ? true /* checked together with properties */
                                                     : check_properties(NULL, value, inst, path, v);
    return fail(v, path, "schema error: unsupported keyword %s", kw);
}

static bool validate(json_t *schema, json_t *inst, const char *path, vctx_t *v)
{
    if (json_is_true(schema))
        return true;
    if (json_is_false(schema))
        return fail(v, path, "schema false: nothing is allowed");
    if (!json_is_object(schema))
        return fail(v, path, "schema error: a schema must be an object or a boolean");
    const char *kw;
    json_t *value;
    json_object_foreach(schema, kw, value)
    {
        if (!check_keyword(schema, kw, value, inst, path, v))
            return false;
    }
    return true;
}

bool t_schema_validate(json_t *schema, json_t *instance, char *err, size_t errlen)
{
    vctx_t v = {err, errlen};
    if (err && errlen)
        err[0] = '\0';
    if (!schema || !instance)
        return fail(&v, "$", "no schema or no instance");
    return validate(schema, instance, "$", &v);
}

const char *t_proto_events_dir(void)
{
    static char dir[1024];
    const char *env = getenv("LINKTR_PROTO_DIR");
    if (env && env[0])
        return env;
    if (!dir[0]) {
        /* CMake compiles with absolute paths: cut ".../tests/support/schema.c". */
        const char *file = __FILE__;
        const char *cut = strstr(file, "tests/support/schema.c");
        int prefix = cut ? (int)(cut - file) : 0;
        snprintf(dir, sizeof dir, "%.*sproto/events", prefix, file);
    }
    return dir;
}

json_t *t_schema_load(const char *name)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.schema.json", t_proto_events_dir(), name);
    json_error_t jerr;
    json_t *schema = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!schema) {
        fprintf(stderr, "test setup: cannot load schema %s: %s (line %d)\n", path, jerr.text,
                jerr.line);
        exit(2);
    }
    return schema;
}

bool t_schema_validate_event(json_t *envelope, char *err, size_t errlen)
{
    json_t *env_schema = t_schema_load("envelope");
    bool ok = t_schema_validate(env_schema, envelope, err, errlen);
    json_decref(env_schema);
    if (!ok)
        return false;
    const char *type = json_string_value(json_object_get(envelope, "type"));
    char file[128];
    snprintf(file, sizeof file, "%s", type);
    json_t *schema = t_schema_load(file);
    ok = t_schema_validate(schema, envelope, err, errlen);
    json_decref(schema);
    return ok;
}

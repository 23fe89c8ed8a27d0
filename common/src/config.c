#include "cm/config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cm/consumer.h"
#include "cm/http.h"
#include "cm/util.h"

void cm_cfg_init(cm_cfg_t *c, const char *service)
{
    memset(c, 0, sizeof *c);
    c->service = service;
}

void cm_cfg_error(cm_cfg_t *c, const char *name, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (c->nerrors < CM_CFG_MAX_ERRORS)
        c->errors[c->nerrors] = cm_xasprintf("%s: %s", name, what);
    c->nerrors++;
}

/* The raw value, or NULL when unset or empty (both mean "use the default"). */
static const char *raw(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

char *cm_cfg_str(cm_cfg_t *c, const char *name, const char *def)
{
    (void)c;
    const char *v = raw(name);
    return cm_xstrdup(v ? v : def);
}

char *cm_cfg_str_required(cm_cfg_t *c, const char *name)
{
    const char *v = raw(name);
    if (!v) {
        cm_cfg_error(c, name, "is required but not set");
        return NULL;
    }
    return cm_xstrdup(v);
}

long long cm_cfg_int(cm_cfg_t *c, const char *name, long long def, long long min, long long max)
{
    const char *v = raw(name);
    if (!v)
        return def;
    long long out = def;
    int rc = cm_strtonum(v, min, max, &out);
    if (rc == CM_ERANGE)
        cm_cfg_error(c, name, "must be between %lld and %lld, got \"%.40s\"", min, max, v);
    else if (rc != 0)
        cm_cfg_error(c, name, "must be a whole number, got \"%.40s\"", v);
    return rc == 0 ? out : def;
}

bool cm_cfg_bool(cm_cfg_t *c, const char *name, bool def)
{
    static const char *const yes[] = {"1", "true", "yes", "on", NULL};
    static const char *const no[] = {"0", "false", "no", "off", NULL};
    const char *v = raw(name);
    if (!v)
        return def;
    for (int i = 0; yes[i]; i++) {
        if (strcasecmp(v, yes[i]) == 0)
            return true;
        if (strcasecmp(v, no[i]) == 0)
            return false;
    }
    cm_cfg_error(c, name, "must be true or false (1/0, yes/no, on/off), got \"%.40s\"", v);
    return def;
}

int cm_cfg_choice(cm_cfg_t *c, const char *name, const char *def, const char *const *choices)
{
    const char *v = raw(name);
    const char *want = v ? v : def;
    cm_buf_t list;
    cm_buf_init(&list);
    int found = -1;
    for (int i = 0; choices[i]; i++) {
        if (want && strcasecmp(want, choices[i]) == 0 && found < 0)
            found = i;
        if (i)
            cm_buf_puts(&list, ", ");
        cm_buf_puts(&list, choices[i]);
    }
    if (found < 0) {
        cm_cfg_error(c, name, "must be one of %s, got \"%.40s\"", list.data ? list.data : "",
                     want ? want : "");
        found = 0;
    }
    cm_buf_dispose(&list);
    return found;
}

char *cm_cfg_url(cm_cfg_t *c, const char *name, const char *def, const char *const *schemes)
{
    const char *v = raw(name);
    const char *url = v ? v : def;
    if (!url)
        return NULL;
    const char *sep = strstr(url, "://");
    if (sep && sep[3] != '\0') {
        for (int i = 0; schemes[i]; i++) {
            size_t n = strlen(schemes[i]);
            if ((size_t)(sep - url) == n && strncasecmp(url, schemes[i], n) == 0)
                return cm_xstrdup(url);
        }
    }
    /* Never echo the value: URLs may carry passwords. */
    cm_cfg_error(c, name, "must be a URL starting with %s://%s", schemes[0],
                 schemes[1] ? " (or another supported scheme)" : "");
    return cm_xstrdup(url);
}

int cm_cfg_finish(cm_cfg_t *c)
{
    int n = c->nerrors < CM_CFG_MAX_ERRORS ? c->nerrors : CM_CFG_MAX_ERRORS;
    for (int i = 0; i < n; i++) {
        fprintf(stderr, "linktr-%s: config: %s\n", c->service ? c->service : "?", c->errors[i]);
        free(c->errors[i]);
        c->errors[i] = NULL;
    }
    if (c->nerrors > n)
        fprintf(stderr, "linktr-%s: config: ... and %d more\n", c->service, c->nerrors - n);
    int rc = c->nerrors ? CM_EINVAL : 0;
    c->nerrors = 0;
    return rc;
}

/* ---- the shared variables ------------------------------------------------------------- */

static const char *const HTTP_SCHEMES[] = {"http", "https", NULL};
static const char *const PG_SCHEMES[] = {"postgresql", "postgres", NULL};

/* A base URL is joined with paths that start with "/": drop trailing slashes. */
static void trim_slashes(char *url)
{
    size_t n = url ? strlen(url) : 0;
    while (n > 0 && url[n - 1] == '/')
        url[--n] = '\0';
}

static int cfg_port(cm_cfg_t *c, int def)
{
    return (int)cm_cfg_int(c, "PORT", def, 1, 65535);
}

/*
 * The admin listener (health, readiness, metrics, version): PORT + 1000 by
 * default (9000-9003 with the default ports), never the public port.
 */
static int cfg_admin_port(cm_cfg_t *c, int port)
{
    int def = port <= 65535 - CM_ADMIN_PORT_OFFSET ? port + CM_ADMIN_PORT_OFFSET : 0;
    int admin = (int)cm_cfg_int(c, "ADMIN_PORT", def, 1, 65535);
    if (admin == 0)
        cm_cfg_error(c, "ADMIN_PORT", "must be set when PORT is above %d",
                     65535 - CM_ADMIN_PORT_OFFSET);
    else if (admin == port)
        cm_cfg_error(c, "ADMIN_PORT", "must differ from PORT (%d)", port);
    return admin;
}

static char *cfg_bind(cm_cfg_t *c)
{
    return cm_cfg_str(c, "BIND_ADDRESS", "127.0.0.1");
}

static cm_log_level_t cfg_log_level(cm_cfg_t *c)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    return (cm_log_level_t)cm_cfg_choice(c, "LOG_LEVEL", "info", levels);
}

static int cfg_http_threads(cm_cfg_t *c, int def)
{
    return (int)cm_cfg_int(c, "HTTP_THREADS", def, 1, 1024);
}

static int cfg_request_timeout_ms(cm_cfg_t *c)
{
    return (int)cm_cfg_int(c, "REQUEST_TIMEOUT_MS", CM_HTTP_REQUEST_TIMEOUT_MS, 100, 600000);
}

static int cfg_keepalive_timeout_ms(cm_cfg_t *c, int def)
{
    return (int)cm_cfg_int(c, "KEEPALIVE_TIMEOUT_MS", def > 0 ? def : 500, 1, 3600000);
}

static char *cfg_database_url(cm_cfg_t *c)
{
    char *url = cm_cfg_url(c, "DATABASE_URL", NULL, PG_SCHEMES);
    if (!url)
        cm_cfg_error(c, "DATABASE_URL", "is required but not set (postgresql://user@host/db)");
    return url;
}

static int cfg_db_pool_size(cm_cfg_t *c, int def)
{
    return (int)cm_cfg_int(c, "DB_POOL_SIZE", def, 1, 256);
}

static char *cfg_kafka_bootstrap(cm_cfg_t *c)
{
    return cm_cfg_str_required(c, "KAFKA_BOOTSTRAP");
}

static char *cfg_public_base_url(cm_cfg_t *c)
{
    char *url = cm_cfg_url(c, "PUBLIC_BASE_URL", "http://127.0.0.1:8000", HTTP_SCHEMES);
    trim_slashes(url);
    return url;
}

void cm_retention_load(cm_cfg_t *c, cm_retention_t *r)
{
    r->interval_s = (int)cm_cfg_int(c, "RETENTION_INTERVAL_S", 300, 1, 86400);
    r->batch = (int)cm_cfg_int(c, "RETENTION_BATCH", 1000, 1, 100000);
    r->pause_ms = (int)cm_cfg_int(c, "RETENTION_PAUSE_MS", 50, 0, 60000);
    r->keep_days = (int)cm_cfg_int(c, "RETENTION_DAYS", 7, 1, 3650);
    r->dedup_days = (int)cm_cfg_int(c, "RETENTION_DEDUP_DAYS", 30, 8, 3650);
}

void cm_cfg_service(cm_cfg_t *c, const cm_service_defaults_t *d, cm_service_config_t *out)
{
    memset(out, 0, sizeof *out);
    out->port = cfg_port(c, d->port);
    out->admin_port = cfg_admin_port(c, out->port);
    out->bind = cfg_bind(c);
    out->log_level = cfg_log_level(c);
    out->http_threads = cfg_http_threads(c, d->http_threads);
    out->request_timeout_ms = cfg_request_timeout_ms(c);
    out->keepalive_timeout_ms = cfg_keepalive_timeout_ms(c, d->keepalive_timeout_ms);
    if (d->db_pool_size > 0) {
        out->database_url = cfg_database_url(c);
        out->db_pool_size = cfg_db_pool_size(c, d->db_pool_size);
        cm_retention_load(c, &out->retention);
    }
    if (d->kafka) {
        out->kafka_bootstrap = cfg_kafka_bootstrap(c);
        /* Apache Kafka answers a fetch as soon as data is there: the wait only bounds an idle
         * consumer's fetches (2 a second per broker at 500). librdkafka's mock broker holds every
         * fetch this long, so the development stack and the tests set 25 (cm/consumer.h). */
        out->kafka_fetch_wait_ms =
            (int)cm_cfg_int(c, "KAFKA_FETCH_WAIT_MS", CM_CONSUMER_FETCH_WAIT_MS, 1, 10000);
    }
    out->public_base_url = cfg_public_base_url(c);
}

void cm_service_config_dispose(cm_service_config_t *s)
{
    if (!s)
        return;
    free(s->bind);
    free(s->database_url);
    free(s->kafka_bootstrap);
    free(s->public_base_url);
    memset(s, 0, sizeof *s);
}

void cm_cfg_jwt(cm_cfg_t *c, bool keys_required, cm_jwt_config_t *out)
{
    memset(out, 0, sizeof *out);
    out->public_keys = keys_required ? cm_cfg_str_required(c, "JWT_PUBLIC_KEYS")
                                     : cm_cfg_str(c, "JWT_PUBLIC_KEYS", NULL);
    out->issuer = cm_cfg_str(c, "JWT_ISSUER", "linktr");
    out->audience = cm_cfg_str(c, "JWT_AUDIENCE", "linktr");
}

void cm_jwt_config_dispose(cm_jwt_config_t *j)
{
    if (!j)
        return;
    free(j->public_keys);
    free(j->issuer);
    free(j->audience);
    memset(j, 0, sizeof *j);
}

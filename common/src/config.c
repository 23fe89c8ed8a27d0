#include "cm/config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

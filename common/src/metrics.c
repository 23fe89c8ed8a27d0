#include "cm/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/*
 * A registry is a list of families behind one mutex (taken to register and
 * to render); each family keeps its series behind its own mutex, so
 * updates to different families never contend. Series live in an array
 * of pointers that only grows, searched by a hash of the label values:
 * at most CM_METRICS_MAX_SERIES entries, then everything goes to "other".
 */

/* Label values longer than this are cut: a label is a name, not a payload. */
#define MAX_LABEL_VALUE 128

typedef enum { K_COUNTER, K_GAUGE, K_HISTOGRAM, K_GAUGE_FN } kind_t;

typedef struct series {
    uint64_t hash;
    char *values[CM_METRICS_MAX_LABELS];
    double value;     /* counter and gauge */
    uint64_t *counts; /* histogram: per bucket (not cumulative), then +Inf */
    double sum;
    uint64_t count;
} series_t;

struct cm_family {
    cm_family_t *next;
    char *name;
    char *help;
    kind_t kind;
    size_t nlabels;
    char *labels[CM_METRICS_MAX_LABELS];
    double *bounds;
    size_t nbounds;
    cm_gauge_fn fn;
    void *fn_ctx;
    pthread_mutex_t mu;
    series_t **series;
    size_t nseries;
    size_t cap;
    series_t *other;
};

struct cm_metrics {
    pthread_mutex_t mu;
    cm_family_t *head;
    cm_family_t *tail;
};

static const double default_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                         0.25,  0.5,    1,     2.5,  5,     10};

/* ---- registry -------------------------------------------------------------- */

cm_metrics_t *cm_metrics_new(void)
{
    cm_metrics_t *m = cm_xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

static void series_free(series_t *s, size_t nlabels)
{
    if (!s)
        return;
    for (size_t i = 0; i < nlabels; i++)
        free(s->values[i]);
    free(s->counts);
    free(s);
}

static void family_free(cm_family_t *f)
{
    for (size_t i = 0; i < f->nseries; i++)
        series_free(f->series[i], f->nlabels);
    series_free(f->other, f->nlabels);
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    pthread_mutex_destroy(&f->mu);
    free(f->series);
    free(f->bounds);
    free(f->name);
    free(f->help);
    free(f);
}

void cm_metrics_free(cm_metrics_t *m)
{
    if (!m)
        return;
    cm_family_t *f = m->head;
    while (f) {
        cm_family_t *next = f->next;
        family_free(f);
        f = next;
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* ---- registration ------------------------------------------------------------ */

static bool name_char_ok(char c, bool first, bool colon)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')
        return true;
    if (c == ':')
        return colon;
    return !first && c >= '0' && c <= '9';
}

/* Metric names allow ':' (recording rules); label names do not. */
static bool valid_name(const char *s, size_t len, bool colon)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!name_char_ok(s[i], i == 0, colon))
            return false;
    return true;
}

/* Splits "route,status" into f->labels. Returns false when malformed. */
static bool parse_labels(cm_family_t *f, const char *labels)
{
    const char *p = labels;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (f->nlabels == CM_METRICS_MAX_LABELS || !valid_name(p, len, false) ||
            (len == 2 && memcmp(p, "le", 2) == 0))
            return false;
        f->labels[f->nlabels++] = cm_xstrndup(p, len);
        p = comma ? comma + 1 : NULL;
        if (comma && !*p)
            return false;
    }
    return true;
}

static bool valid_bounds(const double *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(b[i]) || (i > 0 && !(b[i] > b[i - 1])))
            return false;
    return true;
}

static cm_family_t *find_family(cm_metrics_t *m, const char *name)
{
    for (cm_family_t *f = m->head; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

static cm_family_t *family_new(const char *name, const char *help, kind_t kind, const char *labels)
{
    cm_family_t *f = cm_xcalloc(1, sizeof *f);
    f->name = cm_xstrdup(name);
    f->help = cm_xstrdup(help ? help : "");
    f->kind = kind;
    pthread_mutex_init(&f->mu, NULL);
    if (!parse_labels(f, labels)) {
        family_free(f);
        return NULL;
    }
    return f;
}

/*
 * Registers a family, or returns the one already registered under that
 * name when it has the same kind. NULL for an invalid name, label list or
 * bucket list: a programming error the caller sees at start-up.
 */
static cm_family_t *add_family(cm_metrics_t *m, const char *name, const char *help, kind_t kind,
                               const char *labels, const double *bounds, size_t nbounds)
{
    if (!m || !name || !valid_name(name, strlen(name), true) || !valid_bounds(bounds, nbounds))
        return NULL;
    pthread_mutex_lock(&m->mu);
    cm_family_t *f = find_family(m, name);
    if (f) {
        f = f->kind == kind ? f : NULL;
        goto out;
    }
    f = family_new(name, help, kind, labels);
    if (!f)
        goto out;
    if (nbounds) {
        f->bounds = cm_xcalloc(nbounds, sizeof *f->bounds);
        memcpy(f->bounds, bounds, nbounds * sizeof *bounds);
        f->nbounds = nbounds;
    }
    if (m->tail)
        m->tail->next = f;
    else
        m->head = f;
    m->tail = f;
out:
    pthread_mutex_unlock(&m->mu);
    return f;
}

cm_family_t *cm_metrics_counter(cm_metrics_t *m, const char *name, const char *help,
                                const char *labels)
{
    return add_family(m, name, help, K_COUNTER, labels, NULL, 0);
}

cm_family_t *cm_metrics_gauge(cm_metrics_t *m, const char *name, const char *help,
                              const char *labels)
{
    return add_family(m, name, help, K_GAUGE, labels, NULL, 0);
}

cm_family_t *cm_metrics_histogram(cm_metrics_t *m, const char *name, const char *help,
                                  const char *labels, const double *buckets, size_t n)
{
    if (!buckets || n == 0) {
        buckets = default_buckets;
        n = sizeof default_buckets / sizeof default_buckets[0];
    }
    return add_family(m, name, help, K_HISTOGRAM, labels, buckets, n);
}

void cm_metrics_gauge_fn(cm_metrics_t *m, const char *name, const char *help, cm_gauge_fn fn,
                         void *ctx)
{
    if (!fn)
        return;
    cm_family_t *f = add_family(m, name, help, K_GAUGE_FN, NULL, NULL, 0);
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->fn = fn;
    f->fn_ctx = ctx;
    pthread_mutex_unlock(&f->mu);
}

/* ---- series -------------------------------------------------------------------- */

static const char *label_value(const char *const *values, size_t i)
{
    return values && values[i] ? values[i] : "";
}

static size_t cut_len(const char *v)
{
    return strnlen(v, MAX_LABEL_VALUE);
}

/* FNV-1a over the (cut) label values, each followed by a separator. */
static uint64_t hash_values(const char *const *values, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        const char *v = label_value(values, i);
        size_t len = cut_len(v);
        for (size_t j = 0; j <= len; j++) {
            h ^= j < len ? (unsigned char)v[j] : 0xffu;
            h *= 1099511628211ull;
        }
    }
    return h;
}

static bool series_matches(const series_t *s, uint64_t h, const char *const *values, size_t n)
{
    if (s->hash != h)
        return false;
    for (size_t i = 0; i < n; i++) {
        const char *v = label_value(values, i);
        size_t len = cut_len(v);
        if (strlen(s->values[i]) != len || memcmp(s->values[i], v, len) != 0)
            return false;
    }
    return true;
}

static series_t *series_new(const cm_family_t *f, uint64_t h, const char *const *values)
{
    series_t *s = cm_xcalloc(1, sizeof *s);
    s->hash = h;
    for (size_t i = 0; i < f->nlabels; i++) {
        const char *v = label_value(values, i);
        s->values[i] = cm_xstrndup(v, cut_len(v));
    }
    if (f->kind == K_HISTOGRAM)
        s->counts = cm_xcalloc(f->nbounds + 1, sizeof *s->counts);
    return s;
}

static series_t *other_series(cm_family_t *f)
{
    if (!f->other) {
        const char *values[CM_METRICS_MAX_LABELS] = {"other", "other", "other", "other"};
        f->other = series_new(f, 0, values);
    }
    return f->other;
}

/* Finds or creates the series for values. Call with f->mu held. */
static series_t *get_series(cm_family_t *f, const char *const *values)
{
    uint64_t h = hash_values(values, f->nlabels);
    for (size_t i = 0; i < f->nseries; i++)
        if (series_matches(f->series[i], h, values, f->nlabels))
            return f->series[i];
    if (f->nseries == CM_METRICS_MAX_SERIES)
        return other_series(f);
    if (f->nseries == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 8;
        f->series = cm_xreallocarray(f->series, f->cap, sizeof(series_t *)); /* pointers */
    }
    series_t *s = series_new(f, h, values);
    f->series[f->nseries++] = s;
    return s;
}

void cm_metric_add(cm_family_t *f, const char *const *values, double v)
{
    if (!f || (f->kind != K_COUNTER && f->kind != K_GAUGE))
        return;
    /* A counter only goes up; a negative or NaN step would break rate(). */
    if (f->kind == K_COUNTER && !(v >= 0))
        return;
    pthread_mutex_lock(&f->mu);
    get_series(f, values)->value += v;
    pthread_mutex_unlock(&f->mu);
}

void cm_metric_set(cm_family_t *f, const char *const *values, double v)
{
    if (!f || f->kind != K_GAUGE)
        return;
    pthread_mutex_lock(&f->mu);
    get_series(f, values)->value = v;
    pthread_mutex_unlock(&f->mu);
}

void cm_metric_observe(cm_family_t *f, const char *const *values, double v)
{
    if (!f || f->kind != K_HISTOGRAM || isnan(v))
        return;
    size_t b = 0;
    while (b < f->nbounds && v > f->bounds[b])
        b++;
    pthread_mutex_lock(&f->mu);
    series_t *s = get_series(f, values);
    s->counts[b]++;
    s->count++;
    s->sum += v;
    pthread_mutex_unlock(&f->mu);
}

/* ---- rendering ------------------------------------------------------------------- */

/* The shortest of %.15g / %.17g that reads back exactly; Prometheus spellings of the rest. */
static void put_number(cm_buf_t *out, double v)
{
    if (isnan(v)) {
        cm_buf_puts(out, "NaN");
    } else if (isinf(v)) {
        cm_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
    } else {
        char tmp[32];
        snprintf(tmp, sizeof tmp, "%.15g", v);
        if (strtod(tmp, NULL) != v)
            snprintf(tmp, sizeof tmp, "%.17g", v);
        cm_buf_puts(out, tmp);
    }
}

/* Escapes backslash and newline (HELP text), plus the double quote in label values. */
static void put_escaped(cm_buf_t *out, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            cm_buf_puts(out, "\\\\");
        else if (*s == '\n')
            cm_buf_puts(out, "\\n");
        else if (*s == '"' && quote)
            cm_buf_puts(out, "\\\"");
        else
            cm_buf_append(out, s, 1);
    }
}

/* Writes name{labels[,le="x"]} — le is NULL outside histogram buckets. */
static void put_series_name(cm_buf_t *out, const cm_family_t *f, const char *suffix,
                            const series_t *s, const char *le)
{
    cm_buf_puts(out, f->name);
    cm_buf_puts(out, suffix);
    if (f->nlabels == 0 && !le)
        return;
    cm_buf_puts(out, "{");
    for (size_t i = 0; i < f->nlabels; i++) {
        cm_buf_printf(out, "%s%s=\"", i ? "," : "", f->labels[i]);
        put_escaped(out, s->values[i], true);
        cm_buf_puts(out, "\"");
    }
    if (le)
        cm_buf_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    cm_buf_puts(out, "}");
}

static void put_sample(cm_buf_t *out, const cm_family_t *f, const char *suffix, const series_t *s,
                       const char *le, double v)
{
    put_series_name(out, f, suffix, s, le);
    cm_buf_puts(out, " ");
    put_number(out, v);
    cm_buf_puts(out, "\n");
}

static void render_histogram(cm_buf_t *out, const cm_family_t *f, const series_t *s)
{
    uint64_t cumulative = 0;
    for (size_t b = 0; b <= f->nbounds; b++) {
        cm_buf_t le;
        cm_buf_init(&le);
        if (b < f->nbounds)
            put_number(&le, f->bounds[b]);
        else
            cm_buf_puts(&le, "+Inf");
        cumulative += s->counts[b];
        put_sample(out, f, "_bucket", s, le.data, (double)cumulative);
        cm_buf_dispose(&le);
    }
    put_sample(out, f, "_sum", s, NULL, s->sum);
    put_sample(out, f, "_count", s, NULL, (double)s->count);
}

static void render_series(cm_buf_t *out, const cm_family_t *f, const series_t *s)
{
    if (f->kind == K_HISTOGRAM)
        render_histogram(out, f, s);
    else
        put_sample(out, f, "", s, NULL, s->value);
}

static const char *type_name(kind_t k)
{
    switch (k) {
    case K_COUNTER:
        return "counter";
    case K_HISTOGRAM:
        return "histogram";
    default:
        return "gauge";
    }
}

static void render_family(cm_buf_t *out, cm_family_t *f)
{
    cm_buf_printf(out, "# HELP %s ", f->name);
    put_escaped(out, f->help, false);
    cm_buf_printf(out, "\n# TYPE %s %s\n", f->name, type_name(f->kind));
    pthread_mutex_lock(&f->mu);
    if (f->kind == K_GAUGE_FN && f->fn) {
        /* A gauge function is one unlabelled sample (registered without labels). */
        cm_buf_puts(out, f->name);
        cm_buf_puts(out, " ");
        put_number(out, f->fn(f->fn_ctx));
        cm_buf_puts(out, "\n");
    }
    for (size_t i = 0; i < f->nseries; i++)
        render_series(out, f, f->series[i]);
    if (f->other)
        render_series(out, f, f->other);
    pthread_mutex_unlock(&f->mu);
}

void cm_metrics_render(cm_metrics_t *m, cm_buf_t *out)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    for (cm_family_t *f = m->head; f; f = f->next)
        render_family(out, f);
    pthread_mutex_unlock(&m->mu);
}

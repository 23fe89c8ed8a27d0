/*
 * cm/metrics.h — counters, gauges and histograms rendered as Prometheus text.
 *
 * A registry owns its families; a family owns its labelled series. Every
 * update is thread-safe (civetweb runs handlers on many threads). Families
 * are registered at start-up; series appear on first use. Label values
 * are copied. Series per family are capped (CM_METRICS_MAX_SERIES) so a
 * hostile label value (a random path) cannot grow memory without bound:
 * over the cap, updates go to a series labelled "other".
 */
#ifndef CM_METRICS_H
#define CM_METRICS_H

#include <stddef.h>

#include "cm/util.h"

#define CM_METRICS_MAX_SERIES 512
#define CM_METRICS_MAX_LABELS 4

typedef struct cm_metrics cm_metrics_t;
typedef struct cm_family cm_family_t;

/** Computes a gauge's value at render time (queue depth, outbox backlog). */
typedef double (*cm_gauge_fn)(void *ctx);

/** Returns a new, empty registry; free with cm_metrics_free(). */
cm_metrics_t *cm_metrics_new(void);
/** Frees the registry and all its families. NULL-safe. */
void cm_metrics_free(cm_metrics_t *m);

/**
 * Registers a counter family. labels is a comma-separated list of label
 * names ("route,status") or NULL for none. Returns a family owned by the
 * registry (valid until cm_metrics_free). Registering the same name twice
 * returns the existing family. Returns NULL for a programming error: an
 * invalid metric or label name, more than CM_METRICS_MAX_LABELS labels,
 * the name already registered as another kind, or (histograms) bounds
 * that are not finite and ascending. Updates on a NULL family do nothing.
 */
cm_family_t *cm_metrics_counter(cm_metrics_t *m, const char *name, const char *help,
                                const char *labels);
/** Registers a gauge family (see cm_metrics_counter). */
cm_family_t *cm_metrics_gauge(cm_metrics_t *m, const char *name, const char *help,
                              const char *labels);
/**
 * Registers a histogram family with n upper bounds (ascending, copied);
 * buckets NULL uses latency defaults in seconds (0.001 … 10).
 */
cm_family_t *cm_metrics_histogram(cm_metrics_t *m, const char *name, const char *help,
                                  const char *labels, const double *buckets, size_t n);
/** Registers an unlabelled gauge whose value fn(ctx) computes at render time. */
void cm_metrics_gauge_fn(cm_metrics_t *m, const char *name, const char *help, cm_gauge_fn fn,
                         void *ctx);

/**
 * Adds v to a counter series (or a gauge: v may then be negative; a
 * counter ignores negative steps). values holds one string per label
 * name, in order (NULL when the family has no labels); each is copied and
 * cut to 128 bytes. Unknown kinds are ignored.
 */
void cm_metric_add(cm_family_t *f, const char *const *values, double v);
/** Sets a gauge series. */
void cm_metric_set(cm_family_t *f, const char *const *values, double v);
/** Records one observation in a histogram series. */
void cm_metric_observe(cm_family_t *f, const char *const *values, double v);

/** Appends the whole registry in Prometheus text exposition format 0.0.4. */
void cm_metrics_render(cm_metrics_t *m, cm_buf_t *out);

#endif

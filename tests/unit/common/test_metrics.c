/* Tests for common/src/metrics.c: Prometheus text for each kind, escaping, caps, threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm/metrics.h"
#include "cm/util.h"

/* Renders m into a new string the caller frees. */
static char *render(cm_metrics_t *m)
{
    cm_buf_t b;
    cm_buf_init(&b);
    cm_metrics_render(m, &b);
    cm_buf_puts(&b, "");
    return cm_buf_steal(&b);
}

/* True when text has line as one whole line. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = strstr(text, line); p; p = strstr(p + 1, line))
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return true;
    return false;
}

static size_t count_lines_starting(const char *text, const char *prefix)
{
    size_t n = 0;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, prefix, strlen(prefix)) == 0)
            n++;
    return n;
}

static void counter_renders_help_type_and_labelled_series(void **state)
{
    (void)state;
    cm_metrics_t *m = cm_metrics_new();
    cm_family_t *f = cm_metrics_counter(m, "linktr_test_total", "Things counted.", "route,status");
    assert_non_null(f);
    cm_metric_add(f, (const char *[]){"/api/login", "200"}, 1);
    cm_metric_add(f, (const char *[]){"/api/login", "200"}, 2);
    cm_metric_add(f, (const char *[]){"/api/login", "401"}, 1);
    cm_metric_add(f, (const char *[]){"/api/login", "401"}, -5); /* counters never go down */
    char *text = render(m);
    assert_true(has_line(text, "# HELP linktr_test_total Things counted."));
    assert_true(has_line(text, "# TYPE linktr_test_total counter"));
    assert_true(has_line(text, "linktr_test_total{route=\"/api/login\",status=\"200\"} 3"));
    assert_true(has_line(text, "linktr_test_total{route=\"/api/login\",status=\"401\"} 1"));
    free(text);
    cm_metrics_free(m);
}

static void gauge_is_set_and_added_and_unlabelled_has_no_braces(void **state)
{
    (void)state;
    cm_metrics_t *m = cm_metrics_new();
    cm_family_t *f = cm_metrics_gauge(m, "linktr_queue_depth", "Jobs waiting.", NULL);
    cm_metric_set(f, NULL, 7);
    cm_metric_add(f, NULL, -2.5);
    cm_metric_observe(f, NULL, 100); /* wrong kind: ignored */
    char *text = render(m);
    assert_true(has_line(text, "# TYPE linktr_queue_depth gauge"));
    assert_true(has_line(text, "linktr_queue_depth 4.5"));
    free(text);
    cm_metrics_free(m);
}

static double answer(void *ctx)
{
    return (double)*(int *)ctx;
}

static void gauge_fn_is_evaluated_at_render_time(void **state)
{
    (void)state;
    cm_metrics_t *m = cm_metrics_new();
    int backlog = 3;
    cm_metrics_gauge_fn(m, "linktr_outbox_backlog", "Unsent events.", answer, &backlog);
    char *text = render(m);
    assert_true(has_line(text, "# TYPE linktr_outbox_backlog gauge"));
    assert_true(has_line(text, "linktr_outbox_backlog 3"));
    free(text);
    backlog = 42;
    text = render(m);
    assert_true(has_line(text, "linktr_outbox_backlog 42"));
    free(text);
    cm_metrics_free(m);
}

static void histogram_renders_cumulative_buckets_sum_and_count(void **state)
{
    (void)state;
    cm_metrics_t *m = cm_metrics_new();
    const double bounds[] = {0.25, 0.5, 1};
    cm_family_t *f = cm_metrics_histogram(m, "linktr_wait_seconds", "Waits.", "pool", bounds, 3);
    const char *pool[] = {"hash"};
    cm_metric_observe(f, pool, 0.125);
    cm_metric_observe(f, pool, 0.25); /* le is inclusive */
    cm_metric_observe(f, pool, 0.75);
    cm_metric_observe(f, pool, 3);
    char *text = render(m);
    assert_true(has_line(text, "# TYPE linktr_wait_seconds histogram"));
    assert_true(has_line(text, "linktr_wait_seconds_bucket{pool=\"hash\",le=\"0.25\"} 2"));
    assert_true(has_line(text, "linktr_wait_seconds_bucket{pool=\"hash\",le=\"0.5\"} 2"));
    assert_true(has_line(text, "linktr_wait_seconds_bucket{pool=\"hash\",le=\"1\"} 3"));
    assert_true(has_line(text, "linktr_wait_seconds_bucket{pool=\"hash\",le=\"+Inf\"} 4"));
    assert_true(has_line(text, "linktr_wait_seconds_sum{pool=\"hash\"} 4.125"));
    assert_true(has_line(text, "linktr_wait_seconds_count{pool=\"hash\"} 4"));
    free(text);
    cm_metrics_free(m);
}

static void histogram_without_buckets_uses_latency_defaults(void **state)
{
    (void)state;
    cm_metrics_t *m = cm_metrics_new();
    cm_family_t *f = cm_metrics_histogram(m, "linktr_lat_seconds", "Latency.", NULL, NULL, 0);
    cm_metric_observe(f, NULL, 0.003);
    char *text = render(m);
    assert_true(has_line(text, "linktr_lat_seconds_bucket{le=\"0.001\"} 0"));
    assert_true(has_line(text, "linktr_lat_seconds_bucket{le=\"0.0025\"} 0"));
    assert_true(has_line(text, "linktr_lat_seconds_bucket{le=\"0.005\"} 1"));
    assert_true(has_line(text, "linktr_lat_seconds_bucket{le=\"10\"} 1"));
    assert_true(has_line(text, "linktr_lat_seconds_bucket{le=\"+Inf\"} 1"));
    assert_int_equal(count_lines_starting(text, "linktr_lat_seconds_bucket"), 14);
    free(text);
    cm_metrics_free(m);
}

static void label_values_and_help_are_escaped(void **state)
{
    (void)state;
    cm_metrics_t *m = cm_metrics_new();
    cm_family_t *f = cm_metrics_counter(m, "linktr_esc_total", "Back\\slash and\nnewline.", "v");
    cm_metric_add(f, (const char *[]){"a\"b\\c\nd"}, 1);
    char *text = render(m);
    assert_true(has_line(text, "# HELP linktr_esc_total Back\\\\slash and\\nnewline."));
    assert_true(has_line(text, "linktr_esc_total{v=\"a\\\"b\\\\c\\nd\"} 1"));
    free(text);
    cm_metrics_free(m);
}

static void series_beyond_the_cap_go_to_other(void **state)
{
    (void)state;
    cm_metrics_t *m = cm_metrics_new();
    cm_family_t *f = cm_metrics_counter(m, "linktr_paths_total", "Paths.", "path");
    char v[32];
    for (int i = 0; i < CM_METRICS_MAX_SERIES + 100; i++) {
        snprintf(v, sizeof v, "/p%d", i);
        cm_metric_add(f, (const char *[]){v}, 1);
    }
    cm_metric_add(f, (const char *[]){"/p0"}, 1); /* an existing series still counts itself */
    char *text = render(m);
    assert_int_equal(count_lines_starting(text, "linktr_paths_total{"), CM_METRICS_MAX_SERIES + 1);
    assert_true(has_line(text, "linktr_paths_total{path=\"other\"} 100"));
    assert_true(has_line(text, "linktr_paths_total{path=\"/p0\"} 2"));
    free(text);
    cm_metrics_free(m);
}

static void registering_twice_returns_the_same_family_and_bad_names_fail(void **state)
{
    (void)state;
    cm_metrics_t *m = cm_metrics_new();
    cm_family_t *a = cm_metrics_counter(m, "linktr_x_total", "X.", "a");
    assert_ptr_equal(cm_metrics_counter(m, "linktr_x_total", "X.", "a"), a);
    assert_null(cm_metrics_gauge(m, "linktr_x_total", "X as a gauge.", "a"));
    assert_null(cm_metrics_counter(m, "9starts_with_digit", "Bad.", NULL));
    assert_null(cm_metrics_counter(m, "linktr_y_total", "Bad label.", "ok,bad-label"));
    assert_null(cm_metrics_counter(m, "linktr_z_total", "Too many.", "a,b,c,d,e"));
    const double unsorted[] = {1, 0.5};
    assert_null(cm_metrics_histogram(m, "linktr_h_seconds", "Bad buckets.", NULL, unsorted, 2));
    cm_metric_add(NULL, NULL, 1); /* a failed registration must not crash its users */
    char *text = render(m);
    assert_null(strstr(text, "linktr_y_total"));
    assert_int_equal(count_lines_starting(text, "# TYPE"), 1);
    free(text);
    cm_metrics_free(m);
    cm_metrics_free(NULL);
}

enum { THREADS = 4, ROUNDS = 20000 };

typedef struct {
    cm_family_t *counter;
    cm_family_t *hist;
    int index;
} worker_t;

static void *hammer(void *arg)
{
    worker_t *w = arg;
    char mine[16];
    snprintf(mine, sizeof mine, "t%d", w->index);
    for (int i = 0; i < ROUNDS; i++) {
        cm_metric_add(w->counter, (const char *[]){"shared"}, 1);
        cm_metric_add(w->counter, (const char *[]){mine}, 1);
        cm_metric_observe(w->hist, NULL, 0.002);
    }
    return NULL;
}

static void concurrent_increments_from_several_threads_add_up_exactly(void **state)
{
    (void)state;
    cm_metrics_t *m = cm_metrics_new();
    worker_t w[THREADS];
    pthread_t t[THREADS];
    cm_family_t *c = cm_metrics_counter(m, "linktr_hits_total", "Hits.", "who");
    cm_family_t *h = cm_metrics_histogram(m, "linktr_hit_seconds", "Hit time.", NULL, NULL, 0);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker_t){c, h, i};
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    char *text = render(m);
    char line[96];
    snprintf(line, sizeof line, "linktr_hits_total{who=\"shared\"} %d", THREADS * ROUNDS);
    assert_true(has_line(text, line));
    for (int i = 0; i < THREADS; i++) {
        snprintf(line, sizeof line, "linktr_hits_total{who=\"t%d\"} %d", i, ROUNDS);
        assert_true(has_line(text, line));
    }
    snprintf(line, sizeof line, "linktr_hit_seconds_count %d", THREADS * ROUNDS);
    assert_true(has_line(text, line));
    snprintf(line, sizeof line, "linktr_hit_seconds_bucket{le=\"0.0025\"} %d", THREADS * ROUNDS);
    assert_true(has_line(text, line));
    free(text);
    cm_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(counter_renders_help_type_and_labelled_series),
        cmocka_unit_test(gauge_is_set_and_added_and_unlabelled_has_no_braces),
        cmocka_unit_test(gauge_fn_is_evaluated_at_render_time),
        cmocka_unit_test(histogram_renders_cumulative_buckets_sum_and_count),
        cmocka_unit_test(histogram_without_buckets_uses_latency_defaults),
        cmocka_unit_test(label_values_and_help_are_escaped),
        cmocka_unit_test(series_beyond_the_cap_go_to_other),
        cmocka_unit_test(registering_twice_returns_the_same_family_and_bad_names_fail),
        cmocka_unit_test(concurrent_increments_from_several_threads_add_up_exactly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * The alerts and the dashboard in deploy/k8s/monitoring name only metrics
 * the services really export: every linktr_* and process_* name in
 * prometheusrule.yaml and dashboard.json (histogram suffixes _bucket,
 * _sum and _count taken off) has a "# TYPE" line in the /metrics of some
 * service of the running stack, read on their admin ports.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm/util.h"
#include "http_client.h"
#include "stack.h"

/* Every service's /metrics text, concatenated. */
static char *all_metrics(void)
{
    const char *keys[] = {"GATEWAY_ADMIN_URL", "AUTH_ADMIN_URLS", "REFERRAL_ADMIN_URLS",
                          "MAILER_ADMIN_URLS"};
    cm_buf_t all;
    cm_buf_init(&all);
    int services = 0;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        char *urls = t_stack(keys[k]);
        char *save = NULL;
        for (char *u = strtok_r(urls, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
            char *url = cm_xasprintf("%s/metrics", u);
            t_resp_t r;
            assert_int_equal(t_get(url, NULL, &r), 0);
            assert_int_equal(r.status, 200);
            cm_buf_puts(&all, r.body);
            services++;
            t_resp_dispose(&r);
            free(url);
        }
        free(urls);
    }
    assert_true(services >= 4);
    return cm_buf_steal(&all);
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

static bool exported(const char *metrics, const char *name)
{
    char *type = cm_xasprintf("# TYPE %s ", name);
    bool ok = strstr(metrics, type) != NULL;
    free(type);
    return ok;
}

/* Checks every metric name in file; returns how many names it found. */
static int check_file(const char *metrics, const char *rel)
{
    char *path = cm_xasprintf("%s/%s", t_repo(), rel);
    char *text = NULL;
    assert_int_equal(cm_read_file(path, 1 << 20, &text, NULL), 0);
    int found = 0, missing = 0;
    for (const char *p = text; *p; p++) {
        bool start = (strncmp(p, "linktr_", 7) == 0 || strncmp(p, "process_", 8) == 0) &&
                     (p == text || !(name_char(p[-1]) || p[-1] == ':'));
        if (!start)
            continue;
        size_t n = 0;
        while (name_char(p[n]))
            n++;
        char *name = cm_xstrndup(p, n);
        static const char *const suffixes[] = {"_bucket", "_count", "_sum"};
        for (size_t s = 0; s < 3 && !exported(metrics, name); s++) {
            size_t len = strlen(name), sl = strlen(suffixes[s]);
            if (len > sl && strcmp(name + len - sl, suffixes[s]) == 0)
                name[len - sl] = '\0';
        }
        if (!exported(metrics, name)) {
            fprintf(stderr, "%s names %s, which no service exports\n", rel, name);
            missing++;
        }
        found++;
        free(name);
        p += n - 1;
    }
    free(text);
    free(path);
    assert_int_equal(missing, 0);
    return found;
}

static void every_metric_the_alerts_and_the_dashboard_use_is_exported(void **state)
{
    (void)state;
    char *metrics = all_metrics();
    assert_true(check_file(metrics, "deploy/k8s/monitoring/prometheusrule.yaml") >= 6);
    assert_true(check_file(metrics, "deploy/k8s/monitoring/dashboard.json") >= 20);
    free(metrics);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_metric_the_alerts_and_the_dashboard_use_is_exported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

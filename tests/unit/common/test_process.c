/* Tests for common/src/process.c: the process's figures, the metrics every service exports and
 * the CPUs it may use. */
#define _GNU_SOURCE /* sched_setaffinity, CPU_SET */
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm/process.h"
#include "cm/util.h"

static void the_figures_of_this_process_are_read_from_proc(void **state)
{
    (void)state;
    cm_process_stats_t a, b;
    assert_true(cm_process_stats(&a));
    assert_true(a.resident_bytes > 1024 * 1024);
    assert_true(a.open_fds >= 3); /* stdin, stdout, stderr */
    double now = (double)time(NULL);
    assert_true(a.start_time_unix > now - 3600 && a.start_time_unix <= now + 1);
    /* Opening a file is seen as one more descriptor; burning CPU as more CPU time. */
    int fd = open("/dev/null", O_RDONLY);
    assert_true(fd >= 0);
    volatile unsigned long x = 0;
    for (unsigned long i = 0; i < 200000000UL; i++)
        x += i;
    assert_true(cm_process_stats(&b));
    assert_true(b.open_fds == a.open_fds + 1);
    assert_true(b.cpu_seconds > a.cpu_seconds);
    close(fd);
}

static void build_info_and_process_metrics_are_rendered(void **state)
{
    (void)state;
    cm_metrics_t *m = cm_metrics_new();
    cm_process_metrics_register(m, "auth", "1.2.3");
    cm_buf_t out;
    cm_buf_init(&out);
    cm_metrics_render(m, &out);
    assert_non_null(strstr(out.data, "linktr_build_info{service=\"auth\",version=\"1.2.3\"} 1"));
    assert_non_null(strstr(out.data, "\nprocess_cpu_seconds_total "));
    assert_non_null(strstr(out.data, "\nprocess_resident_memory_bytes "));
    assert_non_null(strstr(out.data, "\nprocess_open_fds "));
    assert_non_null(strstr(out.data, "\nprocess_start_time_seconds "));
    /* The pool's series are the database part's (test_service_db.c). */
    assert_null(strstr(out.data, "linktr_db_pool"));
    cm_buf_dispose(&out);
    cm_metrics_free(m);
}

/* A cgroup tree in a directory of its own: files written as the kernel shows them. */
typedef struct cgtree {
    char root[64];
} cgtree_t;

static void put(cgtree_t *t, const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", t->root, rel);
    /* Make every directory on the way. */
    for (char *p = path + strlen(t->root) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Writes text to rel, then reads the quota that self (a /proc/self/cgroup) has under the tree. */
static int quota_with(cgtree_t *t, const char *rel, const char *text, const char *self)
{
    put(t, rel, text);
    return cm_cpu_quota(t->root, self);
}

static int tree_setup(void **state)
{
    cgtree_t *t = calloc(1, sizeof *t);
    snprintf(t->root, sizeof t->root, "/tmp/linktr-cgroup-XXXXXX");
    if (!mkdtemp(t->root)) {
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static int tree_teardown(void **state)
{
    cgtree_t *t = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->root);
    int rc = system(cmd);
    free(t);
    return rc == 0 ? 0 : -1;
}

static void a_cgroup_v2_limit_counts_as_whole_cpus_and_a_parent_limit_binds(void **state)
{
    cgtree_t *t = *state;
    /* A container's own namespace: its group is the root of what it sees. */
    assert_int_equal(quota_with(t, "cpu.max", "200000 100000\n", "0::/\n"), 2);
    /* 1.5 CPUs are two workers' worth, rounded up; no limit is 0. */
    assert_int_equal(quota_with(t, "cpu.max", "150000 100000\n", "0::/\n"), 2);
    assert_int_equal(quota_with(t, "cpu.max", "max 100000\n", "0::/\n"), 0);
    /* A pod's limit above its container's unlimited group still binds. */
    put(t, "kubepods/pod1/cpu.max", "300000 100000\n");
    assert_int_equal(
        quota_with(t, "kubepods/pod1/c1/cpu.max", "max 100000\n", "0::/kubepods/pod1/c1\n"), 3);
    /* The tightest one along the way wins, whichever level it is on. */
    assert_int_equal(
        quota_with(t, "kubepods/pod1/c1/cpu.max", "50000 100000\n", "0::/kubepods/pod1/c1\n"), 1);
    /* Garbage or a group that is not there: no limit, never a crash. */
    assert_int_equal(quota_with(t, "kubepods/pod1/c1/cpu.max", "lots\n", "0::/kubepods/pod1/c1\n"),
                     3);
    assert_int_equal(cm_cpu_quota(t->root, "0::/nowhere/at/all\n"), 0);
    assert_int_equal(cm_cpu_quota(t->root, ""), 0);
    assert_int_equal(cm_cpu_quota(t->root, "no colons here\n0:\n"), 0);
}

static void a_cgroup_v1_quota_is_read_from_the_cpu_hierarchy(void **state)
{
    cgtree_t *t = *state;
    const char *self = "12:memory:/kube/x\n4:cpu,cpuacct:/kube/x\n1:name=systemd:/kube/x\n";
    put(t, "cpu,cpuacct/kube/x/cpu.cfs_quota_us", "-1\n");
    assert_int_equal(quota_with(t, "cpu,cpuacct/kube/x/cpu.cfs_period_us", "100000\n", self), 0);
    assert_int_equal(quota_with(t, "cpu,cpuacct/kube/x/cpu.cfs_quota_us", "250000\n", self), 3);
    /* Another hierarchy's files are not the CPU's: memory has no say. */
    put(t, "memory/kube/x/cpu.cfs_quota_us", "100000\n");
    assert_int_equal(quota_with(t, "memory/kube/x/cpu.cfs_period_us", "100000\n", self), 3);
    /* No cgroup namespace: the host's path is listed, the container's group is the mount. */
    put(t, "cpu,cpuacct/cpu.cfs_quota_us", "100000\n");
    assert_int_equal(quota_with(t, "cpu,cpuacct/cpu.cfs_period_us", "100000\n",
                                "4:cpu,cpuacct:/host/only/path\n"),
                     1);
    /* A controller whose name only starts with cpu is not the cpu controller. */
    assert_int_equal(cm_cpu_quota(t->root, "3:cpuset:/kube/x\n"), 0);
}

static void the_cpu_count_follows_the_affinity_mask(void **state)
{
    (void)state;
    cpu_set_t all, one;
    assert_int_equal(sched_getaffinity(0, sizeof all, &all), 0);
    int n = cm_cpu_count();
    assert_true(n >= 1 && n <= CPU_COUNT(&all));
    /* The calling thread pinned to its first allowed CPU, as taskset -c would: one CPU. */
    int first = 0;
    while (!CPU_ISSET(first, &all))
        first++;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    int pinned = cm_cpu_count();
    assert_int_equal(sched_setaffinity(0, sizeof all, &all), 0);
    assert_int_equal(pinned, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_figures_of_this_process_are_read_from_proc),
        cmocka_unit_test(build_info_and_process_metrics_are_rendered),
        cmocka_unit_test_setup_teardown(
            a_cgroup_v2_limit_counts_as_whole_cpus_and_a_parent_limit_binds, tree_setup,
            tree_teardown),
        cmocka_unit_test_setup_teardown(a_cgroup_v1_quota_is_read_from_the_cpu_hierarchy,
                                        tree_setup, tree_teardown),
        cmocka_unit_test(the_cpu_count_follows_the_affinity_mask),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

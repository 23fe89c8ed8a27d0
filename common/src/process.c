/* process.c — the process's metrics, read at render time, and the CPUs it may use (see
 * cm/process.h). */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "cm/process.h"

#include <dirent.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cm/util.h"

/* Reads a small /proc file whole into buf (NUL-terminated); false when it cannot be read. */
static bool read_proc(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

/* Field `want` (1-based, as proc(5) numbers them) of a space-separated list whose first
 * field is number `first`; -1 when it is missing or not a whole number. */
static long long field(const char *s, int first, int want)
{
    for (int i = first; *s && i < want; i++) {
        s = strchr(s, ' ');
        if (!s)
            return -1;
        s++;
    }
    char num[32];
    size_t n = strcspn(s, " \n");
    if (n == 0 || n >= sizeof num)
        return -1;
    memcpy(num, s, n);
    num[n] = '\0';
    long long v = -1;
    return cm_strtonum(num, 0, LLONG_MAX, &v) == 0 ? v : -1;
}

/* Field 14 (utime), 15 (stime) and 22 (starttime) of /proc/self/stat, in clock ticks. */
static bool read_stat(double *cpu_ticks, double *start_ticks)
{
    char buf[1024];
    if (!read_proc("/proc/self/stat", buf, sizeof buf))
        return false;
    /* The command name may hold spaces and parentheses: field 3 starts after the last ')'. */
    const char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return false;
    long long utime = field(p + 2, 3, 14), stime = field(p + 2, 3, 15);
    long long start = field(p + 2, 3, 22);
    if (utime < 0 || stime < 0 || start < 0)
        return false;
    *cpu_ticks = (double)utime + (double)stime;
    *start_ticks = (double)start;
    return true;
}

/* Seconds since the epoch at which the machine booted (/proc/stat btime). */
static double boot_time(void)
{
    char line[512];
    long long v = -1;
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    /* Line by line: the per-CPU lines before btime grow with the machine. */
    while (v < 0 && fgets(line, sizeof line, f))
        if (strncmp(line, "btime ", 6) == 0)
            v = field(line + 6, 1, 1);
    fclose(f);
    return (double)v;
}

static double resident_bytes(void)
{
    char buf[256];
    long long pages = read_proc("/proc/self/statm", buf, sizeof buf) ? field(buf, 1, 2) : -1;
    return pages >= 0 ? (double)pages * (double)sysconf(_SC_PAGESIZE) : -1;
}

static double open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    double n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

bool cm_process_stats(cm_process_stats_t *out)
{
    double ticks = (double)sysconf(_SC_CLK_TCK), cpu = 0, start = 0, btime = boot_time();
    bool stat_ok = ticks > 0 && read_stat(&cpu, &start);
    out->cpu_seconds = stat_ok ? cpu / ticks : -1;
    out->start_time_unix = stat_ok && btime >= 0 ? btime + start / ticks : -1;
    out->resident_bytes = resident_bytes();
    out->open_fds = open_fds();
    return stat_ok && btime >= 0 && out->resident_bytes >= 0 && out->open_fds >= 0;
}

static double cpu_seconds(void *ctx)
{
    (void)ctx;
    cm_process_stats_t s;
    cm_process_stats(&s);
    return s.cpu_seconds;
}

static double rss(void *ctx)
{
    (void)ctx;
    return resident_bytes();
}

static double fds(void *ctx)
{
    (void)ctx;
    return open_fds();
}

void cm_process_metrics_register(cm_metrics_t *m, const char *service, const char *version)
{
    cm_process_stats_t s;
    cm_process_stats(&s);
    cm_metrics_gauge_fn(m, "process_cpu_seconds_total", "User and system CPU time spent.",
                        cpu_seconds, NULL);
    cm_metrics_gauge_fn(m, "process_resident_memory_bytes", "Resident memory size.", rss, NULL);
    cm_metrics_gauge_fn(m, "process_open_fds", "Open file descriptors.", fds, NULL);
    cm_family_t *start = cm_metrics_gauge(m, "process_start_time_seconds",
                                          "Start time of the process since the epoch.", NULL);
    cm_metric_set(start, NULL, s.start_time_unix);
    cm_family_t *info =
        cm_metrics_gauge(m, "linktr_build_info", "The running build: always 1.", "service,version");
    cm_metric_set(info, (const char *const[]){service, version}, 1);
}

/* ---- the CPUs this process may use ------------------------------------------ */

/* A quota of `quota` microseconds every `period` as whole CPUs, rounded up; 0 for none. */
static int quota_cpus(long long quota, long long period)
{
    if (quota <= 0 || period <= 0)
        return 0;
    long long n = quota / period + (quota % period != 0);
    return n > INT_MAX ? INT_MAX : (int)n;
}

/* The smaller of two quotas in CPUs, 0 meaning none. */
static int tighter(int a, int b)
{
    return a == 0 ? b : b == 0 ? a : a < b ? a : b;
}

/* The whole number at the start of s ("max", an empty file: -1). */
static long long leading_number(const char *s)
{
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    return end != s && (*end == ' ' || *end == '\n' || *end == '\0') ? v : -1;
}

/* The quota set on the cgroup v2 directory dir: cpu.max is "max PERIOD" or "QUOTA PERIOD". */
static int v2_dir_quota(const char *dir)
{
    char path[PATH_MAX], buf[64];
    if (snprintf(path, sizeof path, "%s/cpu.max", dir) >= (int)sizeof path ||
        !read_proc(path, buf, sizeof buf))
        return 0;
    const char *period = strchr(buf, ' ');
    return period ? quota_cpus(leading_number(buf), leading_number(period + 1)) : 0;
}

/* The quota set on the cgroup v1 directory dir: cpu.cfs_quota_us (-1: none) over
 * cpu.cfs_period_us. */
static int v1_dir_quota(const char *dir)
{
    char path[PATH_MAX], quota[32], period[32];
    if (snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir) >= (int)sizeof path ||
        !read_proc(path, quota, sizeof quota))
        return 0;
    snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
    if (!read_proc(path, period, sizeof period))
        return 0;
    return quota_cpus(leading_number(quota), leading_number(period));
}

/* The tightest quota of base + cg and each of its ancestors down to base itself: a limit set
 * on a parent (a pod's, above its container's) binds the child too. */
static int walk_quota(const char *base, const char *cg, int (*dir_quota)(const char *))
{
    char dir[PATH_MAX];
    size_t blen = strlen(base);
    if (snprintf(dir, sizeof dir, "%s%s", base, cg) >= (int)sizeof dir)
        return 0;
    int q = 0;
    for (;;) {
        size_t len = strlen(dir);
        while (len > blen && dir[len - 1] == '/')
            dir[--len] = '\0';
        q = tighter(q, dir_quota(dir));
        char *slash = strrchr(dir + blen, '/');
        if (len <= blen || !slash)
            return q;
        *slash = '\0';
    }
}

/* True when the comma-separated list [s, s + n) holds the word "cpu". */
static bool lists_cpu(const char *s, size_t n)
{
    for (const char *end = s + n; s < end;) {
        size_t w = strcspn(s, ",:");
        if (w == 3 && memcmp(s, "cpu", 3) == 0)
            return true;
        s += w + 1;
    }
    return false;
}

/* A cgroup v1 hierarchy's own directory: where the line's controllers are mounted. */
static int v1_quota(const char *root, const char *controllers, size_t n, const char *cg)
{
    char base[PATH_MAX];
    if (snprintf(base, sizeof base, "%s/%.*s", root, (int)n, controllers) >= (int)sizeof base)
        return 0;
    char probe[PATH_MAX];
    /* Without a cgroup namespace a container sees its host path in /proc/self/cgroup but its
     * own group mounted at the hierarchy's root: look there when the path is not below it. */
    if (snprintf(probe, sizeof probe, "%s%s", base, cg) >= (int)sizeof probe ||
        access(probe, F_OK) != 0)
        cg = "";
    return walk_quota(base, cg, v1_dir_quota);
}

int cm_cpu_quota(const char *root, const char *self_cgroup)
{
    int q = 0;
    /* One line per hierarchy: "ID:CONTROLLERS:PATH"; v2's is "0::PATH". */
    for (const char *line = self_cgroup; line && *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        const char *c1 = memchr(line, ':', len);
        const char *c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - line)) : NULL;
        char cg[PATH_MAX];
        size_t plen = c2 ? len - (size_t)(c2 + 1 - line) : 0;
        if (c2 && plen < sizeof cg && c2[1] == '/') {
            memcpy(cg, c2 + 1, plen);
            cg[plen] = '\0';
            size_t clen = (size_t)(c2 - c1 - 1);
            if (clen == 0)
                q = tighter(q, walk_quota(root, cg, v2_dir_quota));
            else if (lists_cpu(c1 + 1, clen))
                q = tighter(q, v1_quota(root, c1 + 1, clen, cg));
        }
        line = eol ? eol + 1 : NULL;
    }
    return q;
}

int cm_cpu_count(void)
{
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    if (n < 1) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n = online < 1 ? 1 : online > INT_MAX ? INT_MAX : (int)online;
    }
    char self[4096];
    int q = read_proc("/proc/self/cgroup", self, sizeof self) ? cm_cpu_quota("/sys/fs/cgroup", self)
                                                              : 0;
    return q > 0 && q < n ? q : n;
}

/* process.c — the process's metrics, read at render time (see cm/process.h). */
#include "cm/process.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
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

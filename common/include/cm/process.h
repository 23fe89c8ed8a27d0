/*
 * cm/process.h — the process's own metrics, which every service exports
 * (Prometheus's process_* names, linktr_build_info), read from /proc at
 * render time so nothing polls, and the CPUs it may use. The database
 * pool's metrics are cm/service.h's.
 */
#ifndef CM_PROCESS_H
#define CM_PROCESS_H

#include <stdbool.h>

#include "cm/metrics.h"

/** What /proc says about this process; -1 for a value that could not be read. */
typedef struct cm_process_stats {
    double cpu_seconds;     /* user + system time since start */
    double resident_bytes;  /* resident set size */
    double open_fds;        /* entries of /proc/self/fd */
    double start_time_unix; /* when the process started, seconds since the epoch */
} cm_process_stats_t;

/** Reads the current figures. Returns true when every one of them could be read. */
bool cm_process_stats(cm_process_stats_t *out);

/**
 * Registers in m: process_cpu_seconds_total, process_resident_memory_bytes,
 * process_open_fds, process_start_time_seconds and linktr_build_info{service,
 * version} = 1.
 */
void cm_process_metrics_register(cm_metrics_t *m, const char *service, const char *version);

/**
 * The CPUs this process may use: the CPUs of its affinity mask (taskset, a
 * cpuset: Kubernetes' static CPU manager) lowered to its CPU quota, the
 * tightest along its cgroup and the cgroup's ancestors (cgroup v2 cpu.max,
 * v1 cpu.cfs_quota_us ÷ cpu.cfs_period_us; a container's CPU limit),
 * rounded up. At least 1. What a pool of CPU-bound workers is sized by:
 * sysconf(_SC_NPROCESSORS_ONLN) counts the node's cores, so auth in a pod
 * limited to 2 CPUs on a 64-core node would hash 64 passwords at once —
 * 19 MiB each, every one slowed to a thirty-second of a CPU by the quota.
 */
int cm_cpu_count(void);

/**
 * The CPU quota, in whole CPUs rounded up, of the cgroups that self_cgroup
 * (the text of /proc/self/cgroup) names in the cgroup filesystem mounted at
 * root ("/sys/fs/cgroup"); 0 when no quota is set or none can be read.
 */
int cm_cpu_quota(const char *root, const char *self_cgroup);

#endif

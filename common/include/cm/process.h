/*
 * cm/process.h — the process's own metrics, which every service exports
 * (Prometheus's process_* names, linktr_build_info), read from /proc at
 * render time so nothing polls. The database pool's are cm/service.h's.
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

#endif

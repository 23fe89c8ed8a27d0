/*
 * partition_spec.h — partition counts per topic, shared by the embedded
 * broker (deploy/local/kafka_mock.c) and the real one's topic creator
 * (deploy/kafka/topics.c). Header-only: both must build on their own.
 *
 * A spec is "N" (every topic), or a comma list of "topic=N" entries with at
 * most one bare "N" for the topics it does not name, e.g.
 * "12,mail.dead=1" or "user.registered=12,user.verified=12". Each N is
 * 1..max; a topic without an entry gets the bare N, else the caller's default.
 */
#ifndef LINKTR_PARTITION_SPEC_H
#define LINKTR_PARTITION_SPEC_H

#include <stdlib.h>
#include <string.h>

/* The count in s[0..len) (decimal, 1..max), or -1. */
static inline int partition_count(const char *s, size_t len, int max)
{
    char buf[8];
    if (len == 0 || len >= sizeof buf || strspn(s, "0123456789") < len)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    long v = strtol(buf, NULL, 10);
    return v >= 1 && v <= max ? (int)v : -1;
}

/*
 * The partitions spec gives topic (NUL-terminated), def when it names
 * neither the topic nor a bare count; -1 when the spec is malformed (an
 * empty entry, a count outside 1..max, two bare counts, an entry without
 * a topic name).
 */
static inline int partition_spec_for(const char *spec, const char *topic, int def, int max)
{
    int bare = -1, named = -1;
    for (const char *p = spec;;) {
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        if (!eq) {
            if (bare != -1 || (bare = partition_count(p, len, max)) < 0)
                return -1;
        } else {
            int n = partition_count(eq + 1, len - (size_t)(eq - p) - 1, max);
            if (n < 0 || eq == p)
                return -1;
            if ((size_t)(eq - p) == strlen(topic) && strncmp(p, topic, (size_t)(eq - p)) == 0)
                named = n;
        }
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    return named > 0 ? named : bare > 0 ? bare : def;
}

#endif

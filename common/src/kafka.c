/*
 * What the producer, the outbox relay and the consumer share at the
 * librdkafka boundary (see kafka_int.h): configuration, logging and topic
 * names. librdkafka errors are converted to CM_E* codes by cm__kafka_err()
 * in kafka_int.h and nowhere else.
 */
#include "kafka_int.h"

#include <string.h>

#include "cm/log.h"

/* librdkafka's own log lines go through ours (they never carry payloads). */
void cm__kafka_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    cm_log_level_t lvl = level <= 4 ? CM_LOG_WARN : CM_LOG_DEBUG;
    CM_LOG(lvl, NULL, "kafka %s %s: %s", rd_kafka_name(rk), fac, buf);
}

/* Sets each key/value pair; returns 0 or CM_EINVAL (and logs the offending key). */
int cm__kafka_conf_set_all(rd_kafka_conf_t *conf, const char *const kv[][2])
{
    char errstr[256];
    for (size_t i = 0; kv[i][0]; i++) {
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK) {
            CM_ERROR(NULL, "kafka config %s: %s", kv[i][0], errstr);
            return CM_EINVAL;
        }
    }
    return 0;
}

/* A topic name Kafka accepts and that is not a subscription regex ("^…"). */
bool cm__kafka_valid_topic(const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len > 249)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

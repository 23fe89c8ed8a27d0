/* config.c — the referral service's environment (see config.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "cm/config.h"
#include "cm/http.h"
#include "cm/crypto.h"

static void load_log_level(cm_cfg_t *c, ref_config_t *cfg)
{
    char *level = cm_cfg_str(c, "LOG_LEVEL", "info");
    if (cm_log_parse_level(level, &cfg->log_level) != 0)
        cm_cfg_error(c, "LOG_LEVEL", "expected debug, info, warn or error");
    free(level);
}

/* PUBLIC_BASE_URL without trailing slashes, so links join with one "/". */
static void trim_slashes(char *url)
{
    size_t n = url ? strlen(url) : 0;
    while (n > 0 && url[n - 1] == '/')
        url[--n] = '\0';
}

/* Largest rules or domain-list file read. */
#define LIST_FILE_MAX (1024 * 1024)

static void load_rules(cm_cfg_t *c, ref_config_t *cfg)
{
    ref_rules_defaults(&cfg->rules);
    char *path = cm_cfg_str(c, "REFERRAL_RULES_FILE", NULL);
    char *text = NULL;
    size_t len = 0;
    char why[128] = "";
    if (!path)
        return;
    if (cm_read_file(path, LIST_FILE_MAX, &text, &len) != 0)
        cm_cfg_error(c, "REFERRAL_RULES_FILE", "cannot read the file");
    else if (ref_rules_parse(text, len, &cfg->rules, why, sizeof why) != 0)
        cm_cfg_error(c, "REFERRAL_RULES_FILE", "%s", why);
    free(text);
    free(path);
}

static void load_disposable(cm_cfg_t *c, ref_config_t *cfg)
{
    char *path = cm_cfg_str(c, "REFERRAL_DISPOSABLE_DOMAINS_FILE", NULL);
    char *text = NULL;
    size_t len = 0;
    if (path && cm_read_file(path, LIST_FILE_MAX, &text, &len) != 0)
        cm_cfg_error(c, "REFERRAL_DISPOSABLE_DOMAINS_FILE", "cannot read the file");
    else if (ref_domains_parse(text ? text : ref_default_disposable, &cfg->disposable) != 0)
        cm_cfg_error(c, "REFERRAL_DISPOSABLE_DOMAINS_FILE", "a line is not a domain");
    free(text);
    free(path);
}

int ref_config_load(ref_config_t *cfg)
{
    static const char *const http[] = {"http", "https", NULL};
    static const char *const pg[] = {"postgresql", "postgres", NULL};
    memset(cfg, 0, sizeof *cfg);
    cm_cfg_t c;
    cm_cfg_init(&c, "referral");
    cfg->port = (int)cm_cfg_int(&c, "PORT", 8002, 1, 65535);
    cfg->bind = cm_cfg_str(&c, "BIND_ADDRESS", "127.0.0.1");
    cfg->db_url = cm_cfg_url(&c, "DATABASE_URL", NULL, pg);
    if (!cfg->db_url)
        cm_cfg_error(&c, "DATABASE_URL", "required (postgresql://referral@host/db)");
    cfg->kafka = cm_cfg_str_required(&c, "KAFKA_BOOTSTRAP");
    cfg->public_base_url = cm_cfg_url(&c, "PUBLIC_BASE_URL", "http://127.0.0.1:8000", http);
    trim_slashes(cfg->public_base_url);
    load_log_level(&c, cfg);
    cfg->db_pool_size = (int)cm_cfg_int(&c, "DB_POOL_SIZE", 8, 1, 256);
    cfg->http_threads = (int)cm_cfg_int(&c, "HTTP_THREADS", 8, 1, 256);
    cfg->request_timeout_ms =
        (int)cm_cfg_int(&c, "REQUEST_TIMEOUT_MS", CM_HTTP_REQUEST_TIMEOUT_MS, 100, 600000);
    cfg->keepalive_timeout_ms = (int)cm_cfg_int(&c, "KEEPALIVE_TIMEOUT_MS", 500, 1, 3600000);
    cfg->jwt_public_keys = cm_cfg_str_required(&c, "JWT_PUBLIC_KEYS");
    cfg->jwt_issuer = cm_cfg_str(&c, "JWT_ISSUER", "linktr");
    cfg->jwt_audience = cm_cfg_str(&c, "JWT_AUDIENCE", "linktr");
    cfg->ttl_days = (int)cm_cfg_int(&c, "REFERRAL_TTL_DAYS", 30, 1, 3650);
    cfg->daily_cap = (int)cm_cfg_int(&c, "REFERRAL_DAILY_CAP", 50, 1, 1000000);
    cfg->sweep_interval_s = (int)cm_cfg_int(&c, "REFERRAL_SWEEP_INTERVAL_S", 60, 1, 86400);
    load_rules(&c, cfg);
    load_disposable(&c, cfg);
    if (cm_cfg_finish(&c) != 0) {
        ref_config_dispose(cfg);
        return CM_EINVAL;
    }
    return 0;
}

void ref_config_dispose(ref_config_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->bind);
    free(cfg->db_url);
    free(cfg->kafka);
    free(cfg->public_base_url);
    free(cfg->jwt_public_keys);
    free(cfg->jwt_issuer);
    free(cfg->jwt_audience);
    ref_domains_dispose(&cfg->disposable);
    memset(cfg, 0, sizeof *cfg);
}

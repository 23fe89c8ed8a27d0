/* config.c — the referral service's environment (see config.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "cm/config.h"
#include "cm/util.h"

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
    static const cm_service_defaults_t defaults = {
        .port = 8002, .http_threads = 8, .db_pool_size = 8, .kafka = true};
    memset(cfg, 0, sizeof *cfg);
    cm_cfg_t c;
    cm_cfg_init(&c, "referral");
    cm_cfg_service(&c, &defaults, &cfg->svc);
    cm_cfg_jwt(&c, true, &cfg->jwt);
    cfg->ttl_days = (int)cm_cfg_int(&c, "REFERRAL_TTL_DAYS", 30, 1, 3650);
    cfg->daily_cap = (int)cm_cfg_int(&c, "REFERRAL_DAILY_CAP", 50, 1, 1000000);
    cfg->sweep_interval_s = (int)cm_cfg_int(&c, "REFERRAL_SWEEP_INTERVAL_S", 60, 1, 86400);
    cfg->board_refresh_s = (int)cm_cfg_int(&c, "REFERRAL_LEADERBOARD_REFRESH_S", 30, 1, 3600);
    cfg->board_size = (int)cm_cfg_int(&c, "REFERRAL_LEADERBOARD_SIZE", 20, 1, 100);
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
    cm_service_config_dispose(&cfg->svc);
    cm_jwt_config_dispose(&cfg->jwt);
    ref_domains_dispose(&cfg->disposable);
    memset(cfg, 0, sizeof *cfg);
}

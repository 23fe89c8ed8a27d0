/* linktr-auth's environment (see config.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cm/config.h"
#include "cm/crypto.h"
#include "cm/util.h"

static void load_seal_key(cm_cfg_t *c, auth_config_t *cfg)
{
    char *b64 = cm_cfg_str_required(c, "MAILER_SEAL_PUBLIC_KEY");
    if (b64 && cm_key_decode(b64, strlen(b64), cfg->mailer_seal_pk) != 0)
        cm_cfg_error(c, "MAILER_SEAL_PUBLIC_KEY", "not standard base64 of 32 bytes");
    free(b64);
}

static void load_jwt(cm_cfg_t *c, auth_config_t *cfg)
{
    cfg->jwt_private_key_file = cm_cfg_str_required(c, "JWT_PRIVATE_KEY_FILE");
    cfg->jwt_key_id = cm_cfg_str(c, "JWT_KEY_ID", "dev-1");
    cm_cfg_jwt(c, false, &cfg->jwt);
    cfg->access_ttl_s = (int)cm_cfg_int(c, "ACCESS_TTL_S", 900, 30, 86400);
    cfg->refresh_ttl_days = (int)cm_cfg_int(c, "REFRESH_TTL_DAYS", 30, 1, 365);
    cfg->refresh_grace_s = (int)cm_cfg_int(c, "REFRESH_GRACE_S", 10, 0, 300);
}

static void load_hashing(cm_cfg_t *c, auth_config_t *cfg)
{
    cfg->argon2_opslimit =
        (unsigned long long)cm_cfg_int(c, "ARGON2_OPSLIMIT", 2, crypto_pwhash_OPSLIMIT_MIN, 64);
    long long kib = cm_cfg_int(c, "ARGON2_MEMLIMIT_KIB", 19456, 8, 4 * 1024 * 1024);
    cfg->argon2_memlimit = (size_t)kib * 1024u;
    cfg->hash_workers = (int)cm_cfg_int(c, "HASH_WORKERS", 0, 0, 256);
    cfg->hash_queue = (int)cm_cfg_int(c, "HASH_QUEUE", 64, 1, 100000);
}

/* One entry "addr" or "addr/prefix" (len bytes, trimmed), checked by the common parser. */
static int parse_net(const char *s, size_t len, auth_net_t *net)
{
    if (len == 0 || len >= sizeof net->cidr)
        return CM_EINVAL;
    memcpy(net->cidr, s, len);
    net->cidr[len] = '\0';
    return cm_cidr_check(net->cidr) == 0 ? 0 : CM_EINVAL;
}

int auth_nets_parse(const char *list, auth_net_t *out, int cap, int *n)
{
    *n = 0;
    const char *p = list;
    while (p && *p) {
        p += strspn(p, " \t");
        size_t len = strcspn(p, ",");
        size_t trimmed = len;
        while (trimmed > 0 && (p[trimmed - 1] == ' ' || p[trimmed - 1] == '\t'))
            trimmed--;
        if (*n >= cap || parse_net(p, trimmed, &out[*n]) != 0)
            return CM_EINVAL;
        (*n)++;
        p += len;
        if (*p == ',')
            p++;
    }
    return *n > 0 ? 0 : CM_EINVAL;
}

bool auth_nets_contain(const auth_net_t *nets, int n, const char *ip)
{
    for (int i = 0; i < n; i++)
        if (cm_cidr_match(ip, nets[i].cidr))
            return true;
    return false;
}

static void load_gateway_nets(cm_cfg_t *c, auth_config_t *cfg)
{
    char *list = cm_cfg_str(c, "GATEWAY_ADDRESSES", "127.0.0.1/32,::1/128");
    if (auth_nets_parse(list, cfg->gateway_nets, AUTH_GATEWAY_NETS_MAX, &cfg->gateway_nets_count) !=
        0)
        cm_cfg_error(c, "GATEWAY_ADDRESSES",
                     "a comma-separated list of 1 to %d addresses or CIDR blocks",
                     AUTH_GATEWAY_NETS_MAX);
    free(list);
}

/* How long the confirm and cancel links of an email change work: 10 minutes to 7 days. */
static void load_email_change(cm_cfg_t *c, auth_config_t *cfg)
{
    cfg->email_change_ttl_s = (int)cm_cfg_int(c, "EMAIL_CHANGE_TTL_S", 86400, 600, 7 * 86400);
}

int auth_config_load(auth_config_t *cfg)
{
    static const cm_service_defaults_t defaults = {
        .port = 8001, .http_threads = 16, .db_pool_size = 10, .kafka = true};
    memset(cfg, 0, sizeof *cfg);
    cm_cfg_t c;
    cm_cfg_init(&c, "auth");
    cm_cfg_service(&c, &defaults, &cfg->svc);
    load_jwt(&c, cfg);
    load_seal_key(&c, cfg);
    load_hashing(&c, cfg);
    load_gateway_nets(&c, cfg);
    load_email_change(&c, cfg);
    if (cm_cfg_finish(&c) != 0) {
        auth_config_dispose(cfg);
        return CM_EINVAL;
    }
    return 0;
}

void auth_config_dispose(auth_config_t *cfg)
{
    if (!cfg)
        return;
    cm_service_config_dispose(&cfg->svc);
    cm_jwt_config_dispose(&cfg->jwt);
    char **strings[] = {&cfg->jwt_private_key_file, &cfg->jwt_key_id};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        free(*strings[i]);
        *strings[i] = NULL;
    }
}

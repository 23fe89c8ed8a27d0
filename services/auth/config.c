/* linktr-auth's environment (see config.h). */
#include "config.h"

#include <arpa/inet.h>
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

static void load_log_level(cm_cfg_t *c, auth_config_t *cfg)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    cfg->log_level = (cm_log_level_t)cm_cfg_choice(c, "LOG_LEVEL", "info", levels);
}

/* A base URL is used as a prefix: drop one trailing slash. */
static void trim_slash(char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n > 0 && s[n - 1] == '/')
        s[n - 1] = '\0';
}

static void load_jwt(cm_cfg_t *c, auth_config_t *cfg)
{
    cfg->jwt_private_key_file = cm_cfg_str_required(c, "JWT_PRIVATE_KEY_FILE");
    cfg->jwt_key_id = cm_cfg_str(c, "JWT_KEY_ID", "dev-1");
    cfg->jwt_issuer = cm_cfg_str(c, "JWT_ISSUER", "linktr");
    cfg->jwt_audience = cm_cfg_str(c, "JWT_AUDIENCE", "linktr");
    cfg->jwt_public_keys = cm_cfg_str(c, "JWT_PUBLIC_KEYS", NULL);
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

/* One entry "addr" or "addr/prefix" (len bytes, trimmed). */
static int parse_net(const char *s, size_t len, auth_net_t *net)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return CM_EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    memset(net, 0, sizeof *net);
    if (inet_pton(AF_INET, buf, net->addr) == 1)
        net->family = AF_INET;
    else if (inet_pton(AF_INET6, buf, net->addr) == 1)
        net->family = AF_INET6;
    else
        return CM_EINVAL;
    long long max = net->family == AF_INET ? 32 : 128, bits = max;
    if (slash && cm_strtonum(slash + 1, 0, max, &bits) != 0)
        return CM_EINVAL;
    net->prefix = (int)bits;
    return 0;
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

static bool prefix_match(const uint8_t *a, const uint8_t *b, int bits)
{
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

bool auth_nets_contain(const auth_net_t *nets, int n, const char *ip)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    uint8_t a[16];
    int family = AF_INET;
    if (!ip)
        return false;
    if (inet_pton(AF_INET, ip, a) != 1) {
        if (inet_pton(AF_INET6, ip, a) != 1)
            return false;
        family = AF_INET6;
        if (memcmp(a, mapped, sizeof mapped) == 0) { /* ::ffff:a.b.c.d is a.b.c.d */
            memmove(a, a + 12, 4);
            family = AF_INET;
        }
    }
    for (int i = 0; i < n; i++)
        if (nets[i].family == family && prefix_match(a, nets[i].addr, nets[i].prefix))
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

int auth_config_load(auth_config_t *cfg)
{
    static const char *const http_schemes[] = {"http", "https", NULL};
    static const char *const pg_schemes[] = {"postgresql", "postgres", NULL};
    memset(cfg, 0, sizeof *cfg);
    cm_cfg_t c;
    cm_cfg_init(&c, "auth");
    cfg->port = (int)cm_cfg_int(&c, "PORT", 8001, 1, 65535);
    cfg->bind = cm_cfg_str(&c, "BIND_ADDRESS", "127.0.0.1");
    cfg->database_url = cm_cfg_url(&c, "DATABASE_URL", NULL, pg_schemes);
    if (!cfg->database_url)
        cm_cfg_error(&c, "DATABASE_URL", "required");
    cfg->kafka_bootstrap = cm_cfg_str_required(&c, "KAFKA_BOOTSTRAP");
    cfg->public_base_url = cm_cfg_url(&c, "PUBLIC_BASE_URL", "http://127.0.0.1:8000", http_schemes);
    trim_slash(cfg->public_base_url);
    load_jwt(&c, cfg);
    load_seal_key(&c, cfg);
    load_hashing(&c, cfg);
    cfg->http_threads = (int)cm_cfg_int(&c, "HTTP_THREADS", 16, 1, 1024);
    cfg->db_pool_size = (int)cm_cfg_int(&c, "DB_POOL_SIZE", 10, 1, 256);
    load_log_level(&c, cfg);
    load_gateway_nets(&c, cfg);
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
    char **strings[] = {&cfg->bind,
                        &cfg->database_url,
                        &cfg->kafka_bootstrap,
                        &cfg->public_base_url,
                        &cfg->jwt_private_key_file,
                        &cfg->jwt_key_id,
                        &cfg->jwt_issuer,
                        &cfg->jwt_audience,
                        &cfg->jwt_public_keys};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        free(*strings[i]);
        *strings[i] = NULL;
    }
}

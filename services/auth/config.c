/* linktr-auth's environment (see config.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cm/config.h"
#include "cm/http.h"
#include "cm/crypto.h"

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
    cfg->request_timeout_ms =
        (int)cm_cfg_int(&c, "REQUEST_TIMEOUT_MS", CM_HTTP_REQUEST_TIMEOUT_MS, 100, 600000);
    cfg->keepalive_timeout_ms = (int)cm_cfg_int(&c, "KEEPALIVE_TIMEOUT_MS", 500, 1, 3600000);
    cfg->db_pool_size = (int)cm_cfg_int(&c, "DB_POOL_SIZE", 10, 1, 256);
    load_log_level(&c, cfg);
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

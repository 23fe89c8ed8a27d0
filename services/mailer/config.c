/* config.c — the mailer's environment (see config.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cm/config.h"
#include "cm/http.h"
#include "cm/crypto.h"

/* A secret key file is one line of base64; anything bigger is not one. */
#define KEY_FILE_MAX 256

static void load_seal_key(cm_cfg_t *c, mail_config_t *cfg)
{
    char *path = cm_cfg_str_required(c, "MAILER_SEAL_SECRET_KEY_FILE");
    if (!path)
        return;
    char *text = NULL;
    size_t len = 0;
    if (cm_read_file(path, KEY_FILE_MAX, &text, &len) != 0)
        cm_cfg_error(c, "MAILER_SEAL_SECRET_KEY_FILE", "cannot read the key file");
    else if (cm_key_decode(text, len, cfg->seal_sk) != 0)
        cm_cfg_error(c, "MAILER_SEAL_SECRET_KEY_FILE", "not a base64 32-byte key");
    else
        crypto_scalarmult_base(cfg->seal_pk, cfg->seal_sk);
    if (text) {
        sodium_memzero(text, len);
        free(text);
    }
    free(path);
}

static void load_log_level(cm_cfg_t *c, mail_config_t *cfg)
{
    char *level = cm_cfg_str(c, "LOG_LEVEL", "info");
    if (cm_log_parse_level(level, &cfg->log_level) != 0)
        cm_cfg_error(c, "LOG_LEVEL", "expected debug, info, warn or error");
    free(level);
}

/* PUBLIC_BASE_URL without its trailing slashes, so links join with one "/". */
static void trim_slashes(char *url)
{
    size_t n = url ? strlen(url) : 0;
    while (n > 0 && url[n - 1] == '/')
        url[--n] = '\0';
}

int mail_config_load(mail_config_t *cfg)
{
    static const char *const http[] = {"http", "https", NULL};
    static const char *const pg[] = {"postgresql", "postgres", NULL};
    static const char *const smtp[] = {"smtp", "smtps", NULL};
    memset(cfg, 0, sizeof *cfg);
    cm_cfg_t c;
    cm_cfg_init(&c, "mailer");
    cfg->port = (int)cm_cfg_int(&c, "PORT", 8003, 1, 65535);
    cfg->bind = cm_cfg_str(&c, "BIND_ADDRESS", "127.0.0.1");
    cfg->db_url = cm_cfg_url(&c, "DATABASE_URL", NULL, pg);
    if (!cfg->db_url)
        cm_cfg_error(&c, "DATABASE_URL", "required (postgresql://mailer@host/db)");
    cfg->kafka = cm_cfg_str_required(&c, "KAFKA_BOOTSTRAP");
    cfg->public_base_url = cm_cfg_url(&c, "PUBLIC_BASE_URL", "http://127.0.0.1:8000", http);
    trim_slashes(cfg->public_base_url);
    load_log_level(&c, cfg);
    cfg->db_pool_size = (int)cm_cfg_int(&c, "DB_POOL_SIZE", 4, 1, 256);
    cfg->http_threads = (int)cm_cfg_int(&c, "HTTP_THREADS", 4, 1, 256);
    cfg->request_timeout_ms =
        (int)cm_cfg_int(&c, "REQUEST_TIMEOUT_MS", CM_HTTP_REQUEST_TIMEOUT_MS, 100, 600000);
    cfg->keepalive_timeout_ms = (int)cm_cfg_int(&c, "KEEPALIVE_TIMEOUT_MS", 500, 1, 3600000);
    cfg->mail_dir = cm_cfg_str(&c, "MAIL_DIR", ".run/mail");
    cfg->smtp_url = cm_cfg_url(&c, "SMTP_URL", NULL, smtp);
    cfg->smtp_starttls = cm_cfg_bool(&c, "SMTP_STARTTLS", false);
    cfg->smtp_user = cm_cfg_str(&c, "SMTP_USER", NULL);
    cfg->smtp_password = cm_cfg_str(&c, "SMTP_PASSWORD", NULL);
    cfg->max_attempts = (int)cm_cfg_int(&c, "MAIL_MAX_ATTEMPTS", 5, 1, 100);
    cfg->retry_base_ms = (int)cm_cfg_int(&c, "MAIL_RETRY_BASE_MS", 500, 1, 600000);
    cfg->retry_cap_ms = (int)cm_cfg_int(&c, "MAIL_RETRY_CAP_MS", 8000, 1, 3600000);
    cfg->mail_from = cm_cfg_str(&c, "MAIL_FROM", "linktr <no-reply@linktr.local>");
    if (cfg->mail_from && strpbrk(cfg->mail_from, "\r\n"))
        cm_cfg_error(&c, "MAIL_FROM", "must be one line");
    load_seal_key(&c, cfg);
    if (cm_cfg_finish(&c) != 0) {
        mail_config_dispose(cfg);
        return CM_EINVAL;
    }
    return 0;
}

void mail_config_dispose(mail_config_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->bind);
    free(cfg->db_url);
    free(cfg->kafka);
    free(cfg->public_base_url);
    free(cfg->mail_dir);
    free(cfg->smtp_url);
    free(cfg->smtp_user);
    if (cfg->smtp_password) {
        sodium_memzero(cfg->smtp_password, strlen(cfg->smtp_password));
        free(cfg->smtp_password);
    }
    free(cfg->mail_from);
    sodium_memzero(cfg, sizeof *cfg);
}

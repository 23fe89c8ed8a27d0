/* config.c — the mailer's environment (see config.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cm/config.h"
#include "cm/crypto.h"
#include "cm/util.h"

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

/* Read once at start-up: an override that cannot work stops the start, not every mail. */
static void load_templates(cm_cfg_t *c, mail_config_t *cfg)
{
    char *dir = cm_cfg_str(c, "MAIL_TEMPLATES_DIR", NULL);
    char why[256] = "";
    int err = 0;
    cfg->templates = mail_templates_load(dir, why, sizeof why, &err);
    if (!cfg->templates)
        cm_cfg_error(c, "MAIL_TEMPLATES_DIR", "%s", why);
    free(dir);
}

int mail_config_load(mail_config_t *cfg)
{
    static const cm_service_defaults_t defaults = {
        .port = 8003, .http_threads = 4, .db_pool_size = 4, .kafka = true};
    static const char *const smtp[] = {"smtp", "smtps", NULL};
    memset(cfg, 0, sizeof *cfg);
    cm_cfg_t c;
    cm_cfg_init(&c, "mailer");
    cm_cfg_service(&c, &defaults, &cfg->svc);
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
    load_templates(&c, cfg);
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
    cm_service_config_dispose(&cfg->svc);
    free(cfg->mail_dir);
    free(cfg->smtp_url);
    free(cfg->smtp_user);
    if (cfg->smtp_password) {
        sodium_memzero(cfg->smtp_password, strlen(cfg->smtp_password));
        free(cfg->smtp_password);
    }
    free(cfg->mail_from);
    mail_templates_free(cfg->templates);
    sodium_memzero(cfg, sizeof *cfg);
}

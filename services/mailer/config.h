/*
 * config.h — the mailer's configuration, read once from the environment.
 */
#ifndef MAIL_CONFIG_H
#define MAIL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "cm/config.h"
#include "cm/error.h"
#include "render.h"

/** Everything the mailer reads from its environment; strings owned by the struct. */
typedef struct mail_config {
    cm_service_config_t svc; /* PORT 8003, HTTP_THREADS 4, DB_POOL_SIZE 4, KAFKA_BOOTSTRAP, ... */
    char *mail_dir;          /* MAIL_DIR, .run/mail */
    char *smtp_url;          /* SMTP_URL, NULL → Maildir */
    bool smtp_starttls;      /* SMTP_STARTTLS, off: require STARTTLS on smtp:// */
    char *smtp_user;         /* SMTP_USER, NULL → none or from the URL */
    char *smtp_password;     /* SMTP_PASSWORD, wiped by dispose */
    int max_attempts;        /* MAIL_MAX_ATTEMPTS, 5: tries before mail.dead */
    int retry_base_ms;       /* MAIL_RETRY_BASE_MS, 500: first backoff */
    int retry_cap_ms;        /* MAIL_RETRY_CAP_MS, 8000: longest backoff */
    char *mail_from;         /* MAIL_FROM */
    /* MAIL_TEMPLATES_DIR, unset: the built-in templates; files there replace them */
    mail_templates_t *templates;
    uint8_t seal_pk[32]; /* derived from the secret key */
    uint8_t seal_sk[32]; /* MAILER_SEAL_SECRET_KEY_FILE, wiped by dispose */
} mail_config_t;

/**
 * Fills cfg from the environment. Every bad variable is reported on
 * stderr, named. Returns 0 or CM_EINVAL (then cfg holds nothing to
 * dispose).
 */
CM_MUST_CHECK int mail_config_load(mail_config_t *cfg);

/** Frees the strings and wipes the secret key. NULL-safe. */
void mail_config_dispose(mail_config_t *cfg);

#endif

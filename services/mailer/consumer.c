/* consumer.c — events to mails, exactly once per event id (see consumer.h). */
#include "consumer.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "cm/crypto.h"
#include "cm/events.h"
#include "cm/log.h"
#include "cm/util.h"
#include "maildir.h"
#include "render.h"
#include "smtp.h"
#include "store.h"

const char *const mail_topics[] = {CM_EV_USER_REGISTERED,
                                   CM_EV_VERIFY_REQUESTED,
                                   CM_EV_RESET_REQUESTED,
                                   CM_EV_PASSWORD_CHANGED,
                                   CM_EV_REWARD_GRANTED,
                                   CM_EV_EMAIL_CHANGE_REQUESTED,
                                   CM_EV_EMAIL_CHANGE_NOTICE,
                                   CM_EV_USER_EMAIL_CHANGED,
                                   CM_EV_SIGNIN_NEW,
                                   CM_EV_USER_DELETED,
                                   NULL};

/* Limits on the values that go into a mail. */
#define MAX_TEXT 256
#define MAX_SEALED 4096
#define MAX_FIELDS 6

/* One mail to send for one event. Strings are borrowed from the event's
 * JSON unless listed under "owned". */
typedef struct job {
    const char *event_id;
    const char *template_name;
    const char *user_id;
    bool put_contact;  /* user.registered: keep the contacts row */
    bool need_contact; /* address and name from contacts */
    bool duplicate;    /* the ledger already had this event */
    bool parked;       /* no contact yet: parked until the registration */
    bool forget;       /* user.deleted: forget the contact once the goodbye is sent */
    bool gone;         /* the user was deleted: nothing to send */
    const char *bytes; /* the envelope as received (for parking) */
    size_t len;
    int attempt;             /* 1 for the first try */
    int transport_rc;        /* what the transport said on this try */
    const char *dead_reason; /* set when burying */
    const char *email;
    const char *username;
    mail_field_t fields[MAX_FIELDS];
    size_t nfields;
    mail_ctx_t *ctx;
    const char *event_type;
    const char *correlation_id; /* the event's, or NULL (borrowed from the parsed event) */
    /* owned */
    char *token; /* opened one-time token; wiped */
    char *link;  /* contains the token; wiped */
    char *amount;
    char *contact_email;
    char *contact_username;
} job_t;

static void job_dispose(job_t *j)
{
    if (j->token) {
        sodium_memzero(j->token, strlen(j->token));
        free(j->token);
    }
    if (j->link) {
        sodium_memzero(j->link, strlen(j->link));
        free(j->link);
    }
    free(j->amount);
    free(j->contact_email);
    free(j->contact_username);
}

/* An address that can go into To: and RCPT TO: as is. */
static const char *get_email(json_t *data, const char *key)
{
    const char *s = cm_event_text(data, key, CM_EV_EMAIL_MAX);
    if (!s || strpbrk(s, " <>,;\"()[]\\") || !strchr(s, '@') || s[0] == '@')
        return NULL;
    return s;
}

static void add_field(job_t *j, const char *name, const char *value)
{
    if (j->nfields < MAX_FIELDS)
        j->fields[j->nfields++] = (mail_field_t){name, value};
}

/* Opens data[key] (sealed for us) into j->token and checks it is base64url. */
static int open_token(job_t *j, json_t *data, const char *key)
{
    const char *sealed = cm_event_text(data, key, MAX_SEALED);
    if (!sealed)
        return CM_EPARSE;
    const mail_config_t *cfg = j->ctx->cfg;
    if (cm_unseal(cfg->seal_pk, cfg->seal_sk, sealed, strlen(sealed), &j->token) != 0)
        return CM_EPARSE;
    size_t n = strlen(j->token);
    if (n < 16 || n > 256 ||
        strspn(j->token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != n)
        return CM_EPARSE;
    return 0;
}

/* The link PUBLIC_BASE_URL/<page>?token=<token> into j->link. */
static void make_link(job_t *j, const char *page)
{
    cm_buf_t b;
    cm_buf_init(&b);
    cm_buf_puts(&b, j->ctx->cfg->svc.public_base_url);
    cm_buf_puts(&b, page);
    cm_buf_puts(&b, "?token=");
    cm_buf_puts(&b, j->token);
    j->link = cm_buf_steal(&b);
}

/* user.registered (which also makes the contact) and verify.requested (a resend). */
static int plan_verify(job_t *j, json_t *data, bool registered)
{
    j->user_id = cm_event_uuid(data, "user_id");
    j->email = get_email(data, "email");
    j->username = cm_event_text(data, "username", CM_EV_USERNAME_MAX);
    if (!j->user_id || !j->email || !j->username || open_token(j, data, "verify_token_sealed"))
        return CM_EPARSE;
    make_link(j, "/verify-email");
    j->template_name = "verify_email";
    j->put_contact = registered;
    add_field(j, "email", j->email);
    add_field(j, "verify_url", j->link);
    return 0;
}

static int plan_reset(job_t *j, json_t *data)
{
    j->user_id = cm_event_uuid(data, "user_id");
    j->email = get_email(data, "email");
    j->username = cm_event_text(data, "username", CM_EV_USERNAME_MAX);
    if (!j->user_id || !j->email || !j->username || open_token(j, data, "reset_token_sealed"))
        return CM_EPARSE;
    make_link(j, "/reset-password");
    j->template_name = "reset_password";
    add_field(j, "email", j->email);
    add_field(j, "reset_url", j->link);
    return 0;
}

static int plan_password_changed(job_t *j, json_t *data)
{
    j->user_id = cm_event_uuid(data, "user_id");
    j->email = get_email(data, "email");
    const char *at = cm_event_text(data, "changed_at", 64);
    if (!j->user_id || !j->email || !at)
        return CM_EPARSE;
    j->template_name = "password_changed";
    j->need_contact = true; /* for the name; the address is the event's */
    add_field(j, "email", j->email);
    add_field(j, "changed_at", at);
    return 0;
}

/* Only what auth produces: a class from its fixed table, an address in text form. */
static bool printable_ascii(const char *s)
{
    for (; s && *s; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return s != NULL;
}

static int plan_new_signin(job_t *j, json_t *data)
{
    j->user_id = cm_event_uuid(data, "user_id");
    j->email = get_email(data, "email");
    const char *at = cm_event_text(data, "signed_in_at", 64);
    const char *ua = cm_event_text(data, "user_agent", 64);
    const char *ip = cm_event_text(data, "ip", 45);
    json_t *ipv = json_object_get(data, "ip"); /* borrowed */
    if (!j->user_id || !j->email || !at || !printable_ascii(ua) ||
        (!json_is_null(ipv) && !printable_ascii(ip)))
        return CM_EPARSE;
    j->template_name = "new_signin";
    j->need_contact = true; /* for the name; the address is the event's */
    add_field(j, "email", j->email);
    add_field(j, "signed_in_at", at);
    add_field(j, "user_agent", ua);
    add_field(j, "ip", ip ? ip : "unknown");
    return 0;
}

static int plan_reward(job_t *j, json_t *data)
{
    j->user_id = cm_event_uuid(data, "user_id");
    const char *kind = cm_event_text(data, "kind", 32);
    const char *reason = cm_event_text(data, "reason", MAX_TEXT);
    json_t *amount = json_object_get(data, "amount"); /* borrowed */
    if (!j->user_id || !kind || !reason || !json_is_integer(amount))
        return CM_EPARSE;
    j->amount = cm_xasprintf("%lld", (long long)json_integer_value(amount));
    j->template_name = "reward_granted";
    j->need_contact = true;
    add_field(j, "kind", kind);
    add_field(j, "reason", reason);
    add_field(j, "amount", j->amount);
    return 0;
}

/* email.change.requested: the confirm link, to the new address (the event's "email"). */
static int plan_email_confirm(job_t *j, json_t *data)
{
    j->user_id = cm_event_uuid(data, "user_id");
    j->email = get_email(data, "email");
    j->username = cm_event_text(data, "username", CM_EV_USERNAME_MAX);
    const char *expires = cm_event_text(data, "expires_at", 40);
    if (!j->user_id || !j->email || !j->username || !expires ||
        open_token(j, data, "confirm_token_sealed"))
        return CM_EPARSE;
    make_link(j, "/confirm-email");
    j->template_name = "email_change_confirm";
    add_field(j, "email", j->email);
    add_field(j, "confirm_url", j->link);
    add_field(j, "expires_at", expires);
    return 0;
}

/* email.change.notice: the cancel link, to the old address (the event's "email"). */
static int plan_email_notice(job_t *j, json_t *data)
{
    j->user_id = cm_event_uuid(data, "user_id");
    j->email = get_email(data, "email");
    j->username = cm_event_text(data, "username", CM_EV_USERNAME_MAX);
    const char *new_email = get_email(data, "new_email");
    const char *expires = cm_event_text(data, "expires_at", 40);
    if (!j->user_id || !j->email || !j->username || !new_email || !expires ||
        open_token(j, data, "cancel_token_sealed"))
        return CM_EPARSE;
    make_link(j, "/cancel-email-change");
    j->template_name = "email_change_notice";
    add_field(j, "email", j->email);
    add_field(j, "new_email", new_email);
    add_field(j, "cancel_url", j->link);
    add_field(j, "expires_at", expires);
    return 0;
}

/* user.deleted: one goodbye to the address of the contact, which is then forgotten. */
static int plan_deleted(job_t *j, json_t *data)
{
    j->user_id = cm_event_uuid(data, "user_id");
    const char *at = cm_event_text(data, "deleted_at", 64);
    if (!j->user_id || !at)
        return CM_EPARSE;
    j->template_name = "goodbye";
    j->need_contact = true;
    j->forget = true;
    add_field(j, "deleted_at", at);
    return 0;
}

/* Fills the job from a parsed event; 1 when the mailer has nothing to send for its type. */
static int plan(job_t *j, const cm_event_t *ev)
{
    j->event_id = ev->id;
    j->event_type = ev->type;
    if (strcmp(ev->type, CM_EV_USER_REGISTERED) == 0)
        return plan_verify(j, ev->data, true);
    if (strcmp(ev->type, CM_EV_VERIFY_REQUESTED) == 0)
        return plan_verify(j, ev->data, false);
    if (strcmp(ev->type, CM_EV_RESET_REQUESTED) == 0)
        return plan_reset(j, ev->data);
    if (strcmp(ev->type, CM_EV_PASSWORD_CHANGED) == 0)
        return plan_password_changed(j, ev->data);
    if (strcmp(ev->type, CM_EV_REWARD_GRANTED) == 0)
        return plan_reward(j, ev->data);
    if (strcmp(ev->type, CM_EV_USER_DELETED) == 0)
        return plan_deleted(j, ev->data);
    if (strcmp(ev->type, CM_EV_EMAIL_CHANGE_REQUESTED) == 0)
        return plan_email_confirm(j, ev->data);
    if (strcmp(ev->type, CM_EV_EMAIL_CHANGE_NOTICE) == 0)
        return plan_email_notice(j, ev->data);
    if (strcmp(ev->type, CM_EV_SIGNIN_NEW) == 0)
        return plan_new_signin(j, ev->data);
    return 1;
}

/* Takes the address and name from contacts when the event lacks them. */
static int load_contact(cm_db_t *db, job_t *j)
{
    free(j->contact_email);
    free(j->contact_username);
    j->contact_email = j->contact_username = NULL;
    int rc = mail_store_contact_get(db, j->user_id, &j->contact_email, &j->contact_username);
    if (rc == CM_ENOTFOUND) {
        /* Deleted (the goodbye went out, or a late event about them): never mailed again. */
        int d = mail_store_deleted(db, j->user_id);
        if (d != 0 && d != CM_ENOTFOUND)
            return d;
        j->gone = d == 0;
        if (j->gone)
            return 0;
    }
    if (rc == CM_ENOTFOUND && j->email) {
        j->username = j->email; /* the address alone still makes a correct greeting */
        return 0;
    }
    if (rc == CM_ENOTFOUND) {
        /* Waiting here would block every topic behind this one message. */
        char *text = cm_xstrndup(j->bytes, j->len);
        rc = mail_store_park(db, j->event_id, j->user_id, text);
        free(text);
        j->parked = rc == 0;
        return rc;
    }
    if (rc != 0)
        return rc;
    if (!j->email)
        j->email = j->contact_email;
    j->username = j->contact_username;
    return 0;
}

static int deliver_once(const mail_ctx_t *ctx, const char *to, const cm_buf_t *msg)
{
    const mail_config_t *cfg = ctx->cfg;
    if (!cfg->smtp_url)
        return mail_maildir_deliver(cfg->mail_dir, msg->data, msg->len, NULL);
    mail_smtp_t s = {.url = cfg->smtp_url,
                     .user = cfg->smtp_user,
                     .password = cfg->smtp_password,
                     .starttls = cfg->smtp_starttls,
                     .timeout_ms = 30000};
    return mail_smtp_send(&s, cfg->mail_from, to, msg->data, msg->len);
}

/* One delivery, timed: a slow mail server shows before it times out. */
static int deliver(const mail_ctx_t *ctx, const char *to, const cm_buf_t *msg)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = deliver_once(ctx, to, msg);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (ctx->send_duration) {
        const char *labels[2] = {ctx->cfg->smtp_url ? "smtp" : "maildir", rc == 0 ? "ok" : "error"};
        double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        cm_metric_observe(ctx->send_duration, labels, secs);
    }
    return rc;
}

/* The transaction: contact, ledger claim, render, deliver; commit follows. */
static int send_tx(cm_db_t *db, void *arg)
{
    job_t *j = arg;
    int rc = 0;
    if (j->put_contact)
        rc = mail_store_contact_put(db, j->user_id, j->email, j->username);
    if (rc == CM_ESTATE) { /* a registration redelivered after the deletion */
        j->gone = true;
        return 0;
    }
    if (rc == 0 && j->need_contact)
        rc = load_contact(db, j);
    if (rc != 0 || j->parked || j->gone)
        return rc;
    rc = mail_store_claim_for(db, j->event_id, j->user_id, j->email, j->template_name, j->attempt);
    j->duplicate = rc == CM_ECONFLICT;
    if (j->duplicate)
        return 0; /* already sent: keep the contact update, send nothing */
    if (rc != 0)
        return rc;
    /* The name is known only now (it may come from contacts). */
    mail_field_t fields[MAX_FIELDS + 2];
    memcpy(fields, j->fields, j->nfields * sizeof fields[0]);
    size_t nfields = j->nfields;
    fields[nfields++] = (mail_field_t){"username", j->username};
    if (j->forget) /* the goodbye names the address it is the last mail to */
        fields[nfields++] = (mail_field_t){"email", j->email};
    mail_compose_t c = {.template_name = j->template_name,
                        .from = j->ctx->cfg->mail_from,
                        .to = j->email,
                        .fields = fields,
                        .nfields = nfields,
                        .date_us = cm_now_us(),
                        .message_id = j->event_id,
                        .templates = j->ctx->cfg->templates,
                        .correlation_id = j->correlation_id};
    cm_buf_t msg;
    cm_buf_init(&msg);
    rc = mail_render(&c, &msg);
    if (rc != 0)
        rc = CM_EPARSE; /* the data cannot make a message; retrying will not help */
    else
        rc = j->transport_rc = deliver(j->ctx, j->email, &msg);
    sodium_memzero(msg.data, msg.len);
    cm_buf_dispose(&msg);
    /* Commits with the ledger row: the goodbye is sent once and the address forgotten. */
    if (rc == 0 && j->forget)
        rc = mail_store_forget(db, j->user_id, j->email);
    return rc;
}

/* A warning about one event: its id, type and correlation id as fields, not in the text. */
static void warn_event(const char *event_id, const char *type, const char *correlation_id,
                       const char *what, const char *detail)
{
    if (!cm_log_enabled(CM_LOG_WARN))
        return;
    json_t *f = json_pack("{s:s,s:s,s:s?}", "event_id", event_id, "event_type", type ? type : "",
                          "detail", detail);
    cm_log_write(CM_LOG_WARN, correlation_id, f, "mailer: %s", what);
    json_decref(f);
}

static void count(cm_family_t *f, const char *template_name)
{
    if (f) {
        const char *labels[1] = {template_name};
        cm_metric_add(f, labels, 1);
    }
}

/* The dead-letter transaction: a ledger row marked dead, then mail.dead. */
static int bury_tx(cm_db_t *db, void *arg)
{
    job_t *j = arg;
    int rc = mail_store_claim_for(db, j->event_id, j->user_id, j->email ? j->email : "",
                                  j->template_name, j->attempt);
    if (rc == CM_ECONFLICT)
        return 0;
    if (rc == 0)
        rc = mail_store_mark_dead(db, j->event_id, j->dead_reason);
    if (rc == 0 && j->forget) /* no goodbye could be sent: the deletion goes on without it */
        rc = mail_store_forget(db, j->user_id, j->email);
    if (rc != 0)
        return rc;
    if (!j->ctx->dead)
        return CM_ESTATE;
    char at[32];
    cm_format_time(cm_now_us(), at);
    json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s}", "event_id", j->event_id,
                             "event_type", j->event_type, "recipient_user_id", j->user_id, "reason",
                             j->dead_reason, "attempts", j->attempt, "at", at);
    json_t *letter = cm_event_new(CM_EV_MAIL_DEAD, "mailer", data);
    if (letter && cm_event_set_correlation(letter, j->correlation_id) != 0)
        CM_WARN(NULL, "mailer: correlation id of %s not kept", j->event_id);
    char *text = letter ? json_dumps(letter, JSON_COMPACT) : NULL;
    json_decref(letter);
    rc = text ? j->ctx->dead(j->ctx->dead_ctx, j->user_id, text, strlen(text)) : CM_EINVAL;
    free(text);
    return rc;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Tries the send; a temporary refusal is retried with backoff, up to the limit. */
static int send_with_retries(mail_ctx_t *ctx, job_t *j)
{
    const mail_config_t *cfg = ctx->cfg;
    int rc = 0;
    for (j->attempt = 1;; j->attempt++) {
        j->transport_rc = 0;
        rc = cm_db_tx(ctx->pool, send_tx, j);
        if (rc == 0 || !cfg->smtp_url || j->transport_rc != CM_EBUSY ||
            j->attempt >= cfg->max_attempts)
            break;
        sleep_ms(mail_backoff_ms(j->attempt, cfg->retry_base_ms, cfg->retry_cap_ms,
                                 randombytes_random()));
    }
    /* Only a mail server's answer is a verdict on the message; a Maildir
     * that cannot be written is retried like any outage. */
    bool refused = cfg->smtp_url && (j->transport_rc == CM_EBUSY || j->transport_rc == CM_EIO);
    if (rc != 0 && refused) {
        j->dead_reason = j->transport_rc == CM_EIO ? "rejected permanently by the mail server"
                                                   : "refused by the mail server on every try";
        rc = cm_db_tx(ctx->pool, bury_tx, j);
        if (rc == 0) {
            count(ctx->dead_total, j->template_name);
            warn_event(j->event_id, j->event_type, j->correlation_id, "sent to mail.dead",
                       j->dead_reason);
        }
    }
    return rc;
}

/* Sends what waited for user_id's contact. A parked event that fails
 * stays parked and fails this call, so the registration is retried. */
static int release_parked(mail_ctx_t *ctx, const char *user_id)
{
    cm_db_t *db = NULL;
    mail_parked_list_t parked = {0};
    int rc = cm_db_acquire(ctx->pool, &db);
    if (rc == 0)
        rc = mail_store_parked(db, user_id, &parked);
    cm_db_release(db);
    for (size_t i = 0; rc == 0 && i < parked.n; i++) {
        const char *payload = parked.rows[i].payload;
        rc = mail_handle_event(ctx, payload, strlen(payload));
        if (rc == CM_EPARSE)
            rc = 0;
        if (rc == 0 && (rc = cm_db_acquire(ctx->pool, &db)) == 0) {
            rc = mail_store_unpark(db, parked.rows[i].event_id);
            cm_db_release(db);
        }
    }
    mail_parked_list_dispose(&parked);
    return rc;
}

/* An RFC 3339 UTC time as auth writes it ("2026-12-06T10:00:00.123Z"); PostgreSQL parses it. */
static bool plain_time(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    size_t n = s ? strlen(s) : 0;
    if (n < sizeof shape || n > 32 || s[n - 1] != 'Z')
        return false;
    for (size_t i = 0; i + 1 < sizeof shape; i++)
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return false;
    return strspn(s + sizeof shape - 1, "0123456789.") == n - sizeof shape;
}

/*
 * user.email.changed: no mail, the contact follows the new address. Idempotent without
 * the ledger: the change's own time orders it (mail_store_contact_email), so a
 * redelivery, or an older change arriving late, writes nothing.
 */
static int handle_email_changed(mail_ctx_t *ctx, const cm_event_t *ev)
{
    const char *user_id = cm_event_uuid(ev->data, "user_id");
    const char *email = get_email(ev->data, "new_email");
    const char *username = cm_event_text(ev->data, "username", CM_EV_USERNAME_MAX);
    const char *at = cm_event_text(ev->data, "changed_at", 40);
    const char *cid = ev->correlation_id[0] ? ev->correlation_id : NULL;
    if (!user_id || !email || !username || !plain_time(at)) {
        warn_event(ev->id, ev->type, cid, "event cannot be applied", "bad data");
        return CM_EPARSE;
    }
    cm_db_t *db = NULL;
    int rc = cm_db_acquire(ctx->pool, &db);
    if (rc == 0)
        rc = mail_store_contact_email(db, user_id, email, username, at);
    cm_db_release(db);
    if (rc != 0)
        warn_event(ev->id, ev->type, cid, "event not handled", cm_strerror(rc));
    return rc;
}

int mail_handle_event(mail_ctx_t *ctx, const char *bytes, size_t len)
{
    cm_event_t ev;
    if (cm_event_parse(bytes, len, &ev) != 0)
        return CM_EPARSE;
    if (strcmp(ev.type, CM_EV_USER_EMAIL_CHANGED) == 0) {
        int rc = handle_email_changed(ctx, &ev);
        cm_event_dispose(&ev);
        return rc;
    }
    job_t j = {.ctx = ctx,
               .bytes = bytes,
               .len = len,
               .correlation_id = ev.correlation_id[0] ? ev.correlation_id : NULL};
    int rc = plan(&j, &ev);
    if (rc == 1) {
        rc = 0; /* not a mail event */
        goto out;
    }
    if (rc != 0) {
        warn_event(ev.id, ev.type, j.correlation_id, "event cannot be mailed", cm_strerror(rc));
        goto out;
    }
    rc = send_with_retries(ctx, &j);
    if (rc == 0 && j.put_contact)
        rc = release_parked(ctx, j.user_id);
    if (rc == 0 && !j.duplicate && !j.dead_reason && !j.parked && !j.gone)
        count(ctx->sent, j.template_name);
    else if (rc != 0 && rc != CM_EPARSE)
        count(ctx->failed, j.template_name);
    if (rc != 0)
        warn_event(ev.id, ev.type, j.correlation_id, "event not handled", cm_strerror(rc));
out:
    job_dispose(&j);
    cm_event_dispose(&ev);
    return rc;
}

int mail_consume(const cm_kmsg_t *msg, void *ctx)
{
    return mail_handle_event(ctx, msg->value, msg->len);
}

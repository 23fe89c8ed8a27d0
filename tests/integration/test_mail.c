/*
 * The mailer end to end, against the running stack (Maildir transport):
 * every event about a person becomes one correct mail in MAIL_DIR/new.
 * The SMTP transport and its failure cases (server down, 4xx, 5xx →
 * mail.dead) are covered against a real aiosmtpd in
 * tests/unit/mailer/test_smtp.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "cm/crypto.h"
#include "cm/events.h"
#include "cm/producer.h"
#include "cm/util.h"
#include "http_client.h"
#include "testenv.h"

#define ENV "LINKTR_STACK_ENV"
#define DEADLINE_MS 30000
#define PASSWORD "correct horse battery staple 42"

/* POSTs body to auth; retries while its hash pool says 503; returns the status. */
static long post_auth(const char *path, json_t *body, t_resp_t *r)
{
    char *u = t_url("GATEWAY_URL", path);
    for (int tries = 0;; tries++) {
        assert_int_equal(t_post_json(u, body, NULL, r), 0);
        if ((r->status != 503 && r->status != 429) || tries > 100)
            break;
        t_resp_dispose(r);
        t_sleep_ms(100);
    }
    free(u);
    return r->status;
}

/* Registers a user with the given email; returns the new user id (caller frees). */
static char *register_user(const char *username, const char *email)
{
    json_t *body =
        json_pack("{s:s, s:s, s:s}", "username", username, "email", email, "password", PASSWORD);
    t_resp_t r;
    assert_int_equal(post_auth("/api/register/", body, &r), 201);
    char *id = cm_xstrdup(json_string_value(json_object_get(r.json, "id")));
    t_resp_dispose(&r);
    json_decref(body);
    return id;
}

/* Mails in MAIL_DIR/new containing every needle, polled until count reaches want. */
static char *mail_with(const char *needle1, const char *needle2, int want, int *count)
{
    char *dir = t_env(ENV, "MAIL_DIR");
    char *newdir = cm_xasprintf("%s/new", dir);
    char *found = NULL;
    int64_t deadline = cm_now_mono_ms() + DEADLINE_MS;
    do {
        free(found);
        found = NULL;
        *count = 0;
        DIR *d = opendir(newdir);
        for (struct dirent *e; d && (e = readdir(d));) {
            if (e->d_name[0] == '.')
                continue;
            char *path = cm_xasprintf("%s/%s", newdir, e->d_name);
            char *text = NULL;
            size_t len = 0;
            if (cm_read_file(path, 1 << 20, &text, &len) == 0 && strstr(text, needle1) &&
                (!needle2 || strstr(text, needle2))) {
                (*count)++;
                free(found);
                found = text;
                text = NULL;
            }
            free(text);
            free(path);
        }
        if (d)
            closedir(d);
        if (*count < want)
            t_sleep_ms(100);
    } while (*count < want && cm_now_mono_ms() < deadline);
    free(newdir);
    free(dir);
    return found;
}

/* The value after "<page>?token=" in a mail. Caller frees. */
static char *token_in(const char *mail, const char *page)
{
    char *key = cm_xasprintf("%s?token=", page);
    const char *at = strstr(mail, key);
    assert_non_null(at);
    at += strlen(key);
    free(key);
    return cm_xstrndup(at, strspn(at, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789-_"));
}

static void the_verify_mail_reaches_the_user_with_escaped_fields_and_a_working_link(void **state)
{
    (void)state;
    char name[48], email[96];
    snprintf(name, sizeof name, "mv_%s", t_unique());
    snprintf(email, sizeof email, "o'brien&co.%s@example.com", t_unique());
    char *id = register_user(name, email);
    int n = 0;
    char *mail = mail_with(email, "verify-email?token=", 1, &n);
    assert_int_equal(n, 1);
    char *to = cm_xasprintf("\r\nTo: %s\r\n", email);
    assert_non_null(strstr(mail, to));
    assert_non_null(strstr(mail, "Subject: =?UTF-8?B?")); /* the subject has an em dash */
    assert_non_null(strstr(mail, "\r\nMIME-Version: 1.0\r\n"));
    assert_non_null(strstr(mail, "multipart/alternative"));
    char *escaped = cm_xasprintf("o&#39;brien&amp;co.%s@example.com", t_unique());
    assert_non_null(strstr(mail, escaped));
    char *base = t_env(ENV, "PUBLIC_BASE_URL");
    char *link = cm_xasprintf("%s/verify-email?token=", base);
    assert_non_null(strstr(mail, link));
    /* The link's token is the real one: auth accepts it. */
    char *token = token_in(mail, "verify-email");
    json_t *body = json_pack("{s:s}", "token", token);
    t_resp_t r;
    assert_int_equal(post_auth("/api/verify-email/", body, &r), 200);
    assert_true(json_is_true(json_object_get(r.json, "email_verified")));
    t_resp_dispose(&r);
    json_decref(body);
    free(token);
    free(link);
    free(base);
    free(escaped);
    free(to);
    free(mail);
    free(id);
}

/* Every verify token mailed to email, in no particular order (at most 8). */
static int verify_tokens(const char *email, char *tokens[8])
{
    char *dir = t_env(ENV, "MAIL_DIR");
    char *newdir = cm_xasprintf("%s/new", dir);
    int n = 0;
    DIR *d = opendir(newdir);
    for (struct dirent *e; d && n < 8 && (e = readdir(d));) {
        char *path = cm_xasprintf("%s/%s", newdir, e->d_name);
        char *text = NULL;
        size_t len = 0;
        if (e->d_name[0] != '.' && cm_read_file(path, 1 << 20, &text, &len) == 0 &&
            strstr(text, email) && strstr(text, "verify-email?token="))
            tokens[n++] = token_in(text, "verify-email");
        free(text);
        free(path);
    }
    if (d)
        closedir(d);
    free(newdir);
    free(dir);
    return n;
}

static void resend_verification_mails_a_new_link_that_replaces_the_first(void **state)
{
    (void)state;
    char name[48], email[96];
    snprintf(name, sizeof name, "mq_%s", t_unique());
    snprintf(email, sizeof email, "%s@example.com", name);
    char *id = register_user(name, email);
    int n = 0;
    free(mail_with(email, "verify-email?token=", 1, &n));
    assert_int_equal(n, 1);

    json_t *login = json_pack("{s:s, s:s}", "username_or_email", name, "password", PASSWORD);
    t_resp_t r;
    assert_int_equal(post_auth("/api/login/", login, &r), 200);
    char *access = cm_xstrdup(json_string_value(json_object_get(r.json, "access")));
    t_resp_dispose(&r);
    char *u = t_url("GATEWAY_URL", "/api/resend-verification/");
    json_t *empty = json_object();
    assert_int_equal(t_post_json(u, empty, access, &r), 0);
    assert_int_equal(r.status, 202);
    t_resp_dispose(&r);

    free(mail_with(email, "verify-email?token=", 2, &n));
    assert_int_equal(n, 2);
    char *tokens[8];
    assert_int_equal(verify_tokens(email, tokens), 2);
    long answers[2];
    for (int i = 0; i < 2; i++) {
        json_t *body = json_pack("{s:s}", "token", tokens[i]);
        answers[i] = post_auth("/api/verify-email/", body, &r);
        t_resp_dispose(&r);
        json_decref(body);
        free(tokens[i]);
    }
    /* The resent link verifies; the first one was replaced by it. */
    assert_true((answers[0] == 200 && answers[1] == 400) ||
                (answers[0] == 400 && answers[1] == 200));

    json_decref(empty);
    free(u);
    free(access);
    json_decref(login);
    free(id);
}

static void forgot_and_reset_send_the_reset_mail_then_the_password_changed_mail(void **state)
{
    (void)state;
    char name[48], email[96];
    snprintf(name, sizeof name, "mr_%s", t_unique());
    snprintf(email, sizeof email, "%s@example.com", name);
    char *id = register_user(name, email);
    json_t *body = json_pack("{s:s}", "email", email);
    t_resp_t r;
    assert_int_equal(post_auth("/api/forgot-password/", body, &r), 202);
    t_resp_dispose(&r);
    json_decref(body);
    int n = 0;
    char *mail = mail_with(email, "reset-password?token=", 1, &n);
    assert_int_equal(n, 1);
    assert_non_null(strstr(mail, "Subject: Reset your linktr password\r\n"));
    assert_non_null(strstr(mail, "30 minutes"));
    char *token = token_in(mail, "reset-password");
    body = json_pack("{s:s, s:s}", "token", token, "password", "another fine passphrase 77");
    assert_int_equal(post_auth("/api/reset-password/", body, &r), 204);
    t_resp_dispose(&r);
    json_decref(body);
    free(mail);
    mail = mail_with(email, "Subject: Your linktr password was changed", 1, &n);
    assert_int_equal(n, 1);
    assert_null(strstr(mail, "?token=")); /* nothing to act on in this one */
    char *hi = cm_xasprintf("Hi %s,", name);
    assert_non_null(strstr(mail, hi));
    free(hi);
    free(token);
    free(mail);
    free(id);
}

static void a_reward_event_mails_the_user_found_in_contacts(void **state)
{
    (void)state;
    char name[48], email[96];
    snprintf(name, sizeof name, "mw_%s", t_unique());
    snprintf(email, sizeof email, "%s@example.com", name);
    char *id = register_user(name, email);
    int n = 0;
    free(mail_with(email, "verify-email?token=", 1, &n)); /* the contact exists now */
    assert_int_equal(n, 1);
    char rid[37], refid[37], at[32];
    cm_uuid_v4(rid);
    cm_uuid_v4(refid);
    cm_format_time(cm_now_us(), at);
    json_t *data = json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:s}", "reward_id", rid, "user_id", id,
                             "kind", "credit", "amount", 10, "reason",
                             "Your friend <joined> & verified", "referral_id", refid, "at", at);
    json_t *ev = cm_event_new(CM_EV_REWARD_GRANTED, "referral", data);
    char *bootstrap = t_env(ENV, "KAFKA_BOOTSTRAP");
    int err = 0;
    cm_producer_t *p = cm_producer_new(bootstrap, "integration-mail", &err);
    assert_non_null(p);
    char *text = json_dumps(ev, JSON_COMPACT);
    assert_int_equal(cm_producer_send(p, CM_EV_REWARD_GRANTED, id, text, strlen(text), 10000), 0);
    assert_int_equal(cm_producer_send(p, CM_EV_REWARD_GRANTED, id, text, strlen(text), 10000), 0);
    char *mail = mail_with(email, "You earned a linktr reward: 10 credits", 1, &n);
    assert_non_null(mail);
    assert_non_null(strstr(mail, "Your friend &lt;joined&gt; &amp; verified"));
    /* Delivered twice, mailed once: wait for a later mail on the same partition. */
    free(mail);
    json_t *data2 = json_pack("{s:s, s:s, s:s, s:i, s:s, s:n, s:s}", "reward_id", rid, "user_id",
                              id, "kind", "milestone", "amount", 25, "reason",
                              "Five friends joined", "referral_id", "at", at);
    json_t *ev2 = cm_event_new(CM_EV_REWARD_GRANTED, "referral", data2);
    char *text2 = json_dumps(ev2, JSON_COMPACT);
    assert_int_equal(cm_producer_send(p, CM_EV_REWARD_GRANTED, id, text2, strlen(text2), 10000), 0);
    free(mail_with(email, "You earned a linktr reward: 25 credits", 1, &n));
    assert_int_equal(n, 1);
    free(mail_with(email, "You earned a linktr reward: 10 credits", 1, &n));
    assert_int_equal(n, 1);
    free(text2);
    json_decref(ev2);
    free(text);
    cm_producer_free(p);
    free(bootstrap);
    json_decref(ev);
    free(id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_verify_mail_reaches_the_user_with_escaped_fields_and_a_working_link),
        cmocka_unit_test(resend_verification_mails_a_new_link_that_replaces_the_first),
        cmocka_unit_test(forgot_and_reset_send_the_reset_mail_then_the_password_changed_mail),
        cmocka_unit_test(a_reward_event_mails_the_user_found_in_contacts),
    };
    if (cm_crypto_init() != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Tests for services/mailer/render.c: templates, escaping, headers, MIME structure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "render.h"

#define FROM "linktr <no-reply@linktr.local>"
/* 2026-11-27T10:00:00Z, a Friday. */
#define DATE_US 1795773600000000LL

/* Renders template_name for a user and returns the message (caller frees). */
static char *render(const char *template_name, const char *username, const char *to)
{
    mail_field_t fields[] = {
        {"username", username},
        {"email", to},
        {"verify_url", "http://127.0.0.1:8000/verify-email?token=abc_DEF-123"},
        {"reset_url", "http://127.0.0.1:8000/reset-password?token=xyz"},
        {"changed_at", "2026-11-27T10:00:00Z"},
        {"amount", "10"},
        {"kind", "credit"},
        {"reason", "Bob & <Alice> joined"},
        {"confirm_url", "http://127.0.0.1:8000/confirm-email?token=cnf_123"},
        {"cancel_url", "http://127.0.0.1:8000/cancel-email-change?token=cxl_456"},
        {"new_email", "o'neil&co@example.com"},
        {"expires_at", "2026-11-28T10:00:00.000Z"},
    };
    mail_compose_t c = {.template_name = template_name,
                        .from = FROM,
                        .to = to,
                        .fields = fields,
                        .nfields = sizeof fields / sizeof fields[0],
                        .date_us = DATE_US};
    cm_buf_t out;
    cm_buf_init(&out);
    assert_int_equal(mail_render(&c, &out), 0);
    return cm_buf_steal(&out);
}

/* A fresh folder for template overrides; caller removes it with rm_dir. */
static char *mk_dir(void)
{
    char tmpl[] = "/tmp/linktr-templates-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    return strdup(tmpl);
}

static void put(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void rm_dir(char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(dir);
}

/* The part of msg between the first occurrence of from and the next "\r\n--". */
static char *part(const char *msg, const char *content_type)
{
    const char *p = strstr(msg, content_type);
    assert_non_null(p);
    p = strstr(p, "\r\n\r\n");
    assert_non_null(p);
    p += 4;
    const char *end = strstr(p, "\r\n--");
    assert_non_null(end);
    return strndup(p, (size_t)(end - p));
}

static void html_part_escapes_a_script_username_and_text_part_keeps_it(void **state)
{
    (void)state;
    char *msg = render("verify_email", "<script>alert('x')</script>&co", "ada@example.com");
    char *html = part(msg, "Content-Type: text/html");
    char *text = part(msg, "Content-Type: text/plain");
    assert_null(strstr(html, "<script>"));
    assert_non_null(strstr(html, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;co"));
    assert_non_null(strstr(text, "Hi <script>alert('x')</script>&co,"));
    free(text);
    free(html);
    free(msg);
}

static void verify_mail_has_both_parts_with_the_link(void **state)
{
    (void)state;
    char *msg = render("verify_email", "ada", "ada@example.com");
    assert_non_null(strstr(msg, "Content-Type: multipart/alternative; boundary=\""));
    char *text = part(msg, "Content-Type: text/plain; charset=UTF-8");
    char *html = part(msg, "Content-Type: text/html; charset=UTF-8");
    const char *link = "http://127.0.0.1:8000/verify-email?token=abc_DEF-123";
    assert_non_null(strstr(text, link));
    assert_non_null(
        strstr(html, "<a href=\"http://127.0.0.1:8000/verify-email?token=abc_DEF-123\">"));
    /* The text part comes first: clients show the last part they understand. */
    assert_true(strstr(msg, "text/plain") < strstr(msg, "text/html"));
    /* The closing boundary ends the message. */
    const char *b = strstr(msg, "boundary=\"") + strlen("boundary=\"");
    char boundary[128];
    size_t n = strcspn(b, "\"");
    snprintf(boundary, sizeof boundary, "\r\n--%.*s--\r\n", (int)n, b);
    size_t blen = strlen(boundary), mlen = strlen(msg);
    assert_true(mlen > blen);
    assert_string_equal(msg + mlen - blen, boundary);
    free(text);
    free(html);
    free(msg);
}

static void headers_name_sender_recipient_date_id_and_mime_version(void **state)
{
    (void)state;
    char *msg = render("reset_password", "ada", "ada@example.com");
    const char *end = strstr(msg, "\r\n\r\n");
    assert_non_null(end);
    char *headers = strndup(msg, (size_t)(end - msg));
    assert_true(strncmp(headers, "From: " FROM "\r\n", strlen("From: " FROM "\r\n")) == 0);
    assert_non_null(strstr(headers, "\r\nTo: ada@example.com\r\n"));
    assert_non_null(strstr(headers, "\r\nSubject: Reset your linktr password\r\n"));
    assert_non_null(strstr(headers, "\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n"));
    assert_non_null(strstr(headers, "\r\nMessage-ID: <"));
    assert_non_null(strstr(headers, "@linktr.local>\r\n"));
    assert_non_null(strstr(headers, "\r\nMIME-Version: 1.0\r\n"));
    /* Every line of the message ends in CRLF. */
    for (const char *p = msg; (p = strchr(p, '\n')) != NULL; p++)
        assert_int_equal(p[-1], '\r');
    free(headers);
    free(msg);
}

static void reset_mail_says_it_expires_in_30_minutes(void **state)
{
    (void)state;
    char *msg = render("reset_password", "ada", "ada@example.com");
    assert_non_null(strstr(msg, "http://127.0.0.1:8000/reset-password?token=xyz"));
    assert_non_null(strstr(msg, "30 minutes"));
    free(msg);
}

static void email_change_mails_carry_their_link_the_expiry_and_the_new_address(void **state)
{
    (void)state;
    char *msg = render("email_change_confirm", "ada", "new@example.com");
    assert_non_null(strstr(msg, "http://127.0.0.1:8000/confirm-email?token=cnf_123"));
    assert_non_null(strstr(msg, "2026-11-28T10:00:00.000Z"));
    assert_null(strstr(msg, "cancel-email-change"));
    free(msg);
    msg = render("email_change_notice", "ada", "old@example.com");
    char *html = part(msg, "Content-Type: text/html");
    char *text = part(msg, "Content-Type: text/plain");
    assert_non_null(strstr(text, "http://127.0.0.1:8000/cancel-email-change?token=cxl_456"));
    assert_non_null(strstr(text, "to o'neil&co@example.com."));
    assert_non_null(strstr(html, "o&#39;neil&amp;co@example.com"));
    assert_null(strstr(msg, "confirm-email?token="));
    free(text);
    free(html);
    free(msg);
}

static void reward_mail_escapes_the_reason_in_html(void **state)
{
    (void)state;
    char *msg = render("reward_granted", "ada", "ada@example.com");
    char *html = part(msg, "Content-Type: text/html");
    assert_non_null(strstr(html, "Bob &amp; &lt;Alice&gt; joined"));
    assert_non_null(strstr(msg, "Subject: You earned a linktr reward: 10 credits\r\n"));
    free(html);
    free(msg);
}

static void non_ascii_subject_is_rfc2047_encoded_and_decodes_back(void **state)
{
    (void)state;
    char *msg = render("verify_email", "Zoë", "zoe@example.com");
    const char *s = strstr(msg, "\r\nSubject: ");
    assert_non_null(s);
    s += strlen("\r\nSubject: ");
    /* Decode every encoded word and compare with the expected UTF-8 text. */
    char decoded[512] = "";
    while (strncmp(s, "=?UTF-8?B?", 10) == 0) {
        s += 10;
        const char *e = strstr(s, "?=");
        assert_non_null(e);
        unsigned char bin[128];
        size_t n = 0;
        assert_int_equal(sodium_base642bin(bin, sizeof bin, s, (size_t)(e - s), NULL, &n, NULL,
                                           sodium_base64_VARIANT_ORIGINAL),
                         0);
        strncat(decoded, (const char *)bin, n);
        s = e + 2;
        if (strncmp(s, "\r\n ", 3) == 0)
            s += 3;
    }
    assert_true(strncmp(s, "\r\n", 2) == 0);
    assert_string_equal(decoded, "Welcome to linktr, Zoë — please verify your email");
    free(msg);
}

static void header_encoding_refuses_line_breaks(void **state)
{
    (void)state;
    cm_buf_t b;
    cm_buf_init(&b);
    assert_int_equal(mail_header_encode("hi\r\nBcc: evil@example.com", &b), CM_EPARSE);
    assert_int_equal(mail_header_encode("plain ascii", &b), 0);
    assert_string_equal(b.data, "plain ascii");
    cm_buf_dispose(&b);
}

static void a_username_with_a_line_break_cannot_inject_a_header(void **state)
{
    (void)state;
    mail_field_t fields[] = {{"username", "x\r\nBcc: evil@example.com"},
                             {"email", "a@b.c"},
                             {"verify_url", "http://x/"}};
    mail_compose_t c = {.template_name = "verify_email",
                        .from = FROM,
                        .to = "a@b.c",
                        .fields = fields,
                        .nfields = 3,
                        .date_us = DATE_US};
    cm_buf_t out;
    cm_buf_init(&out);
    assert_int_equal(mail_render(&c, &out), CM_EPARSE);
    cm_buf_dispose(&out);
    c.to = "a@b.c\r\nBcc: evil@example.com";
    fields[0].value = "ada";
    cm_buf_init(&out);
    assert_int_equal(mail_render(&c, &out), CM_EINVAL);
    cm_buf_dispose(&out);
}

static void missing_template_or_field_is_an_error(void **state)
{
    (void)state;
    mail_field_t fields[] = {{"username", "ada"}};
    mail_compose_t c = {.template_name = "no_such_template",
                        .from = FROM,
                        .to = "a@b.c",
                        .fields = fields,
                        .nfields = 1,
                        .date_us = DATE_US};
    cm_buf_t out;
    cm_buf_init(&out);
    assert_int_equal(mail_render(&c, &out), CM_ENOTFOUND);
    c.template_name = "verify_email"; /* needs email and verify_url too */
    assert_int_equal(mail_render(&c, &out), CM_ENOTFOUND);
    cm_buf_dispose(&out);
    cm_buf_init(&out);
    assert_int_equal(mail_expand("Hi {{username", fields, 1, false, &out), CM_EPARSE);
    cm_buf_dispose(&out);
}

/* MAIL_TEMPLATES_DIR: files there replace the built-ins of the same name, the rest stay. */
static void a_templates_folder_replaces_only_the_files_it_holds(void **state)
{
    (void)state;
    char *dir = mk_dir();
    put(dir, "verify_email.subject", "Confirm, {{username}}!\n");
    put(dir, "verify_email.txt", "Custom text for {{username}}: {{verify_url}}\n");
    put(dir, ".hidden", "skipped");
    char why[256] = "";
    int err = -1;
    mail_templates_t *t = mail_templates_load(dir, why, sizeof why, &err);
    assert_non_null(t);
    assert_int_equal(err, 0);
    assert_int_equal(mail_templates_overridden(t), 2);
    mail_field_t fields[] = {{"username", "ada"},
                             {"email", "ada@example.com"},
                             {"verify_url", "http://x/verify-email?token=t1"}};
    mail_compose_t c = {.template_name = "verify_email",
                        .from = FROM,
                        .to = "ada@example.com",
                        .fields = fields,
                        .nfields = 3,
                        .date_us = DATE_US,
                        .templates = t};
    cm_buf_t out;
    cm_buf_init(&out);
    assert_int_equal(mail_render(&c, &out), 0);
    assert_non_null(strstr(out.data, "Subject: Confirm, ada!\r\n"));
    assert_non_null(strstr(out.data, "Custom text for ada: http://x/verify-email?token=t1"));
    /* The HTML part was not overridden: the built-in one. */
    assert_non_null(strstr(out.data, "<a href=\"http://x/verify-email?token=t1\">"));
    cm_buf_dispose(&out);
    /* Other templates are the built-ins; NULL is the built-ins too. */
    assert_string_equal(mail_templates_get(t, "reset_password.txt"),
                        mail_template_get("reset_password.txt"));
    assert_string_equal(mail_templates_get(NULL, "verify_email.txt"),
                        mail_template_get("verify_email.txt"));
    assert_null(mail_templates_get(t, "nope.txt"));
    mail_templates_free(t);
    t = mail_templates_load(NULL, why, sizeof why, &err);
    assert_non_null(t);
    assert_int_equal(mail_templates_overridden(t), 0);
    mail_templates_free(t);
    rm_dir(dir);
}

/* A bad override stops the start, naming the file, instead of failing every mail later. */
static void a_bad_template_file_is_refused_naming_it(void **state)
{
    (void)state;
    static const struct {
        const char *name, *text, *says;
    } cases[] = {
        {"verify_email.txt", "Hi {{usrname}}\n",
         "verify_email.txt: unknown placeholder {{usrname}}"},
        {"verify_email.html", "<p>{{verify_url</p>", "verify_email.html: a \"{{\" is never closed"},
        {"verify_email.subject", "one\ntwo\n", "verify_email.subject: a subject is one line"},
        {"verify_mail.txt", "typo in the name", "verify_mail.txt: not the name of a template"},
        /* reset_url is a field, but not one the verify mail gets. */
        {"verify_email.txt", "{{reset_url}}", "unknown placeholder {{reset_url}}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *dir = mk_dir();
        put(dir, cases[i].name, cases[i].text);
        char why[256] = "";
        int err = 0;
        assert_null(mail_templates_load(dir, why, sizeof why, &err));
        assert_int_equal(err, CM_EINVAL);
        if (!strstr(why, cases[i].says))
            fail_msg("case %zu: %s", i, why);
        rm_dir(dir);
    }
    char why[256] = "";
    int err = 0;
    assert_null(mail_templates_load("/nonexistent/linktr-templates", why, sizeof why, &err));
    assert_int_equal(err, CM_EIO);
    assert_non_null(strstr(why, "cannot open"));
    /* Too large. */
    char *dir = mk_dir();
    char *big = malloc(MAIL_MAX_TEMPLATE_FILE + 2);
    memset(big, 'x', MAIL_MAX_TEMPLATE_FILE + 1);
    big[MAIL_MAX_TEMPLATE_FILE + 1] = '\0';
    put(dir, "reset_password.html", big);
    free(big);
    assert_null(mail_templates_load(dir, why, sizeof why, &err));
    assert_non_null(strstr(why, "larger than 64 KiB"));
    rm_dir(dir);
}

/* The event's correlation id goes out as X-Request-Id; an odd one is left out. */
static void the_correlation_id_becomes_the_x_request_id_header(void **state)
{
    (void)state;
    mail_field_t fields[] = {{"username", "ada"},
                             {"email", "ada@example.com"},
                             {"verify_url", "http://x/verify-email?token=t1"}};
    const char *ids[] = {"req-7f3c.trace_1", "evil\r\nBcc: x@example.com", NULL};
    for (int i = 0; i < 3; i++) {
        mail_compose_t c = {.template_name = "verify_email",
                            .from = FROM,
                            .to = "ada@example.com",
                            .fields = fields,
                            .nfields = 3,
                            .date_us = DATE_US,
                            .correlation_id = ids[i]};
        cm_buf_t out;
        cm_buf_init(&out);
        assert_int_equal(mail_render(&c, &out), 0);
        const char *head_end = strstr(out.data, "\r\n\r\n");
        const char *h = strstr(out.data, "\r\nX-Request-Id: ");
        if (i == 0) {
            assert_non_null(h);
            assert_true(h < head_end);
            assert_non_null(strstr(out.data, "\r\nX-Request-Id: req-7f3c.trace_1\r\n"));
        } else {
            assert_null(h);
            assert_null(strstr(out.data, "Bcc:"));
        }
        cm_buf_dispose(&out);
    }
}

static void every_template_has_subject_text_and_html(void **state)
{
    (void)state;
    const char *names[] = {"verify_email",   "reset_password",       "password_changed",
                           "reward_granted", "email_change_confirm", "email_change_notice"};
    const char *exts[] = {"subject", "txt", "html"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        for (size_t k = 0; k < 3; k++) {
            char name[64];
            snprintf(name, sizeof name, "%s.%s", names[i], exts[k]);
            assert_non_null(mail_template_get(name));
        }
}

static char *render_with_id(const char *message_id)
{
    const mail_field_t fields[] = {
        {"username", "ada"}, {"email", "ada@example.com"}, {"changed_at", "2026-11-27T10:00:00Z"}};
    mail_compose_t c = {.template_name = "password_changed",
                        .from = FROM,
                        .to = "ada@example.com",
                        .fields = fields,
                        .nfields = sizeof fields / sizeof fields[0],
                        .date_us = DATE_US,
                        .message_id = message_id};
    cm_buf_t out;
    cm_buf_init(&out);
    assert_int_equal(mail_render(&c, &out), 0);
    return cm_buf_steal(&out);
}

static void message_id_is_the_event_id_so_a_resend_can_be_recognised(void **state)
{
    (void)state;
    char *a = render_with_id("5b0e6c8e-3f1a-4c2b-9d7e-0a1b2c3d4e5f");
    char *b = render_with_id("5b0e6c8e-3f1a-4c2b-9d7e-0a1b2c3d4e5f");
    assert_non_null(
        strstr(a, "\r\nMessage-ID: <5b0e6c8e-3f1a-4c2b-9d7e-0a1b2c3d4e5f@linktr.local>\r\n"));
    assert_non_null(
        strstr(b, "\r\nMessage-ID: <5b0e6c8e-3f1a-4c2b-9d7e-0a1b2c3d4e5f@linktr.local>\r\n"));
    /* Not a UUID (or none): a fresh random one, never the raw text. */
    char *c = render_with_id("<evil>\r\nBcc: x@y");
    assert_null(strstr(c, "evil"));
    assert_non_null(strstr(c, "\r\nMessage-ID: <"));
    free(a);
    free(b);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(html_part_escapes_a_script_username_and_text_part_keeps_it),
        cmocka_unit_test(verify_mail_has_both_parts_with_the_link),
        cmocka_unit_test(headers_name_sender_recipient_date_id_and_mime_version),
        cmocka_unit_test(message_id_is_the_event_id_so_a_resend_can_be_recognised),
        cmocka_unit_test(reset_mail_says_it_expires_in_30_minutes),
        cmocka_unit_test(reward_mail_escapes_the_reason_in_html),
        cmocka_unit_test(email_change_mails_carry_their_link_the_expiry_and_the_new_address),
        cmocka_unit_test(non_ascii_subject_is_rfc2047_encoded_and_decodes_back),
        cmocka_unit_test(header_encoding_refuses_line_breaks),
        cmocka_unit_test(a_username_with_a_line_break_cannot_inject_a_header),
        cmocka_unit_test(missing_template_or_field_is_an_error),
        cmocka_unit_test(every_template_has_subject_text_and_html),
        cmocka_unit_test(a_templates_folder_replaces_only_the_files_it_holds),
        cmocka_unit_test(the_correlation_id_becomes_the_x_request_id_header),
        cmocka_unit_test(a_bad_template_file_is_refused_naming_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

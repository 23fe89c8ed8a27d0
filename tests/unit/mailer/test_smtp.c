/*
 * Tests for services/mailer/smtp.c and the mailer's SMTP failure handling
 * (consumer.c): a real SMTP server (Debian's python3-aiosmtpd) that
 * stores into a Maildir, refuses for now (451) or refuses for good (550).
 * LINKTR_TEST_NEEDS: postgres
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#include "cm/crypto.h"
#include "cm/db.h"
#include "cm/util.h"
#include "config.h"
#include "consumer.h"
#include "smtp.h"
#include "store.h"
#include "testenv.h"
#include "pg.h"

extern const cm_migration_t mailer_migrations[];
extern const size_t mailer_migrations_count;

/* mode "ok" stores into the Maildir argv[3]; any other mode is the reply to RCPT TO. */
static const char server_py[] =
    "import sys, signal\n"
    "from aiosmtpd.controller import Controller\n"
    "from aiosmtpd.handlers import Mailbox\n"
    "port, mode, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]\n"
    "class Refuse:\n"
    "    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):\n"
    "        return mode\n"
    "c = Controller(Mailbox(path) if mode == 'ok' else Refuse(), hostname='127.0.0.1', "
    "port=port)\n"
    "c.start()\n"
    "print('ready', flush=True)\n"
    "signal.sigwait({signal.SIGTERM, signal.SIGINT})\n"
    "c.stop()\n";

typedef struct server {
    pid_t pid;
    int port;
    int out; /* the server's stdout, open until it stops (else it dies of SIGPIPE) */
} server_t;

/* Starts the SMTP server and waits (at most 15 s) until it says it is ready. */
static void server_start(server_t *s, int port, const char *mode, const char *maildir)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%d", port);
    s->port = port;
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execl("/usr/bin/python3", "python3", "-c", server_py, portbuf, mode, maildir, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    struct pollfd p = {.fd = fds[0], .events = POLLIN};
    char buf[16] = "";
    assert_int_equal(poll(&p, 1, 15000), 1);
    assert_true(read(fds[0], buf, sizeof buf - 1) > 0);
    assert_non_null(strstr(buf, "ready"));
    s->out = fds[0];
}

static void server_stop(server_t *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        close(s->out);
        s->pid = 0;
    }
}

typedef struct fixture {
    mail_config_t cfg;
    cm_db_pool_t *pool;
    mail_ctx_t ctx;
    char dir[64];
    char *inbox; /* the server's Maildir */
    int dead_calls;
    char *dead_value;      /* the last dead letter */
    cm_metrics_t *metrics; /* linktr_mails_dead_total, linktr_mail_send_duration_seconds */
} fixture_t;

/* True when a line of the rendered registry starts with line. */
static bool has_sample(fixture_t *f, const char *line)
{
    cm_buf_t text;
    cm_buf_init(&text);
    cm_metrics_render(f->metrics, &text);
    char *needle = cm_xasprintf("\n%s", line);
    bool found = text.data && strstr(text.data, needle) != NULL;
    free(needle);
    cm_buf_dispose(&text);
    return found;
}

static int capture_dead(void *ctx, const char *key, const char *value, size_t len)
{
    fixture_t *f = ctx;
    (void)key;
    f->dead_calls++;
    free(f->dead_value);
    f->dead_value = cm_xstrndup(value, len);
    return 0;
}

static int setup(void **state)
{
    assert_int_equal(cm_crypto_init(), 0);
    assert_int_equal(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    fixture_t *f = cm_xcalloc(1, sizeof *f);
    f->pool = t_pg_pool("MAILER_DATABASE_URL", 2, mailer_migrations, mailer_migrations_count);
    crypto_box_keypair(f->cfg.seal_pk, f->cfg.seal_sk);
    snprintf(f->dir, sizeof f->dir, "/tmp/linktr-smtptest-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->inbox = cm_xasprintf("%s/inbox", f->dir);
    f->cfg.svc.public_base_url = cm_xstrdup("http://127.0.0.1:8000");
    f->cfg.mail_from = cm_xstrdup("linktr <no-reply@linktr.local>");
    f->cfg.max_attempts = 3;
    f->cfg.retry_base_ms = 10;
    f->cfg.retry_cap_ms = 40;
    f->metrics = cm_metrics_new();
    f->ctx = (mail_ctx_t){
        .cfg = &f->cfg,
        .pool = f->pool,
        .dead = capture_dead,
        .dead_ctx = f,
        .dead_total =
            cm_metrics_counter(f->metrics, "linktr_mails_dead_total", "Dead.", "template"),
        .send_duration = cm_metrics_histogram(f->metrics, "linktr_mail_send_duration_seconds",
                                              "Send time.", "transport,result", NULL, 0)};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    cm_db_pool_free(f->pool);
    char *cmd = cm_xasprintf("rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(f->inbox);
    free(f->dead_value);
    cm_metrics_free(f->metrics);
    mail_config_dispose(&f->cfg);
    free(f);
    curl_global_cleanup();
    return 0;
}

static void use_server(fixture_t *f, int port)
{
    free(f->cfg.smtp_url);
    f->cfg.smtp_url = cm_xasprintf("smtp://127.0.0.1:%d", port);
}

/* Messages in the server's Maildir that contain needle. */
static int inbox_count(fixture_t *f, const char *needle)
{
    char *newdir = cm_xasprintf("%s/new", f->inbox);
    DIR *d = opendir(newdir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char *path = cm_xasprintf("%s/%s", newdir, e->d_name);
        char *text = NULL;
        size_t len = 0;
        if (cm_read_file(path, 1 << 20, &text, &len) == 0 && strstr(text, needle))
            n++;
        free(text);
        free(path);
    }
    if (d)
        closedir(d);
    free(newdir);
    return n;
}

/* A user.registered envelope for a fresh user; email receives the address. */
static char *registration(fixture_t *f, char email[80], char ev[37])
{
    char id[37];
    cm_uuid_v4(id);
    cm_uuid_v4(ev);
    snprintf(email, 80, "s%.8s@example.com", id);
    char *sealed = NULL;
    const char *token = "tok_smtp_0123456789abcdefghijkl";
    assert_int_equal(cm_seal(f->cfg.seal_pk, token, strlen(token), &sealed), 0);
    json_t *env = json_pack("{s:s, s:s, s:i, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s}}", "id", ev,
                            "type", "user.registered", "version", 1, "occurred_at",
                            "2026-11-27T10:00:00Z", "source", "auth", "data", "user_id", id,
                            "username", "smtp_user", "email", email, "referral_code", "7KQ2M9XD",
                            "verify_token_sealed", sealed, "registered_at", "2026-11-27T10:00:00Z");
    free(sealed);
    char *s = json_dumps(env, JSON_COMPACT);
    json_decref(env);
    return s;
}

static int handle(fixture_t *f, const char *bytes)
{
    return mail_handle_event(&f->ctx, bytes, strlen(bytes));
}

static char *ledger(fixture_t *f, const char *ev)
{
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(f->pool, &db), 0);
    PGresult *res = NULL;
    const char *p[1] = {ev};
    assert_int_equal(cm_db_exec(db,
                                "SELECT outcome || ',' || attempts FROM sent "
                                "WHERE event_id = $1::uuid",
                                1, p, &res),
                     0);
    char *v = cm_xstrdup(PQntuples(res) ? PQgetvalue(res, 0, 0) : "none");
    PQclear(res);
    cm_db_release(db);
    return v;
}

static void assert_ledger(fixture_t *f, const char *ev, const char *want)
{
    char *got = ledger(f, ev);
    assert_string_equal(got, want);
    free(got);
}

static void backoff_doubles_with_jitter_up_to_the_cap(void **state)
{
    (void)state;
    assert_int_equal(mail_backoff_ms(1, 500, 8000, 0), 250);
    assert_int_equal(mail_backoff_ms(1, 500, 8000, UINT32_MAX), 250 + (UINT32_MAX % 251));
    assert_int_equal(mail_backoff_ms(2, 500, 8000, 0), 500);
    assert_int_equal(mail_backoff_ms(3, 500, 8000, 0), 1000);
    assert_int_equal(mail_backoff_ms(30, 500, 8000, 0), 4000);
    for (int a = 1; a < 12; a++)
        for (uint32_t r = 0; r < 5000; r += 97) {
            int64_t d = mail_backoff_ms(a, 500, 8000, r);
            int64_t full = 500LL << (a - 1) > 8000 ? 8000 : 500LL << (a - 1);
            assert_true(d >= full / 2 && d <= full);
        }
}

static void a_message_reaches_the_smtp_server_whole(void **state)
{
    fixture_t *f = *state;
    server_t s;
    server_start(&s, t_free_port(), "ok", f->inbox);
    mail_smtp_t cfg = {.url = NULL, .timeout_ms = 10000};
    char *url = cm_xasprintf("smtp://127.0.0.1:%d", s.port);
    cfg.url = url;
    const char msg[] = "From: a@example.com\r\nTo: b@example.com\r\nSubject: unit-hello\r\n\r\n"
                       "line one\r\n.leading dot survives\r\n";
    assert_int_equal(mail_smtp_send(&cfg, "linktr <no-reply@linktr.local>", "b@example.com", msg,
                                    sizeof msg - 1),
                     0);
    server_stop(&s);
    assert_int_equal(inbox_count(f, "Subject: unit-hello"), 1);
    assert_int_equal(inbox_count(f, ".leading dot survives"), 1);
    free(url);
}

static void refusals_and_outages_are_told_apart(void **state)
{
    (void)state;
    mail_smtp_t cfg = {.timeout_ms = 10000};
    int port = t_free_port();
    char *url = cm_xasprintf("smtp://127.0.0.1:%d", port);
    cfg.url = url;
    assert_int_equal(mail_smtp_send(&cfg, "a@x.y", "b@x.y", "x\r\n", 3), CM_EUNAVAIL);
    server_t s;
    server_start(&s, port, "550 5.1.1 no such user", "/nonexistent");
    assert_int_equal(mail_smtp_send(&cfg, "a@x.y", "b@x.y", "x\r\n", 3), CM_EIO);
    server_stop(&s);
    server_start(&s, port, "451 4.3.0 try again later", "/nonexistent");
    assert_int_equal(mail_smtp_send(&cfg, "a@x.y", "b@x.y", "x\r\n", 3), CM_EBUSY);
    server_stop(&s);
    assert_int_equal(mail_smtp_send(&cfg, "bad <unclosed", "b@x.y", "x\r\n", 3), CM_EINVAL);
    free(url);
}

static void server_down_then_up_delivers_the_mail_once(void **state)
{
    fixture_t *f = *state;
    int port = t_free_port();
    use_server(f, port);
    char email[80], ev[37];
    char *bytes = registration(f, email, ev);
    assert_int_equal(handle(f, bytes), CM_EUNAVAIL); /* retried later by the consumer */
    assert_ledger(f, ev, "none");
    assert_int_equal(f->dead_calls, 0);
    server_t s;
    server_start(&s, port, "ok", f->inbox);
    assert_int_equal(handle(f, bytes), 0);
    assert_int_equal(handle(f, bytes), 0); /* redelivered: nothing */
    server_stop(&s);
    assert_int_equal(inbox_count(f, email), 1);
    assert_int_equal(inbox_count(f, "verify-email?token=tok_smtp_0123456789abcdefghijkl"), 1);
    assert_ledger(f, ev, "sent,1");
    free(bytes);
}

static void a_permanent_refusal_goes_to_mail_dead_at_once_and_only_once(void **state)
{
    fixture_t *f = *state;
    server_t s;
    server_start(&s, t_free_port(), "550 5.1.1 no such user", "/nonexistent");
    use_server(f, s.port);
    f->dead_calls = 0;
    char email[80], ev[37];
    char *bytes = registration(f, email, ev);
    assert_int_equal(handle(f, bytes), 0);
    assert_int_equal(handle(f, bytes), 0);
    server_stop(&s);
    assert_int_equal(f->dead_calls, 1);
    assert_ledger(f, ev, "dead,1");
    /* Counted once, and the refused attempt was timed as an SMTP error. */
    assert_true(has_sample(f, "linktr_mails_dead_total{template=\"verify_email\"} 1\n"));
    assert_true(has_sample(
        f, "linktr_mail_send_duration_seconds_count{transport=\"smtp\",result=\"error\"} "));
    json_t *letter = json_loads(f->dead_value, 0, NULL);
    assert_non_null(letter);
    assert_string_equal(json_string_value(json_object_get(letter, "type")), "mail.dead");
    assert_string_equal(json_string_value(json_object_get(letter, "source")), "mailer");
    json_t *data = json_object_get(letter, "data");
    assert_string_equal(json_string_value(json_object_get(data, "event_id")), ev);
    assert_string_equal(json_string_value(json_object_get(data, "event_type")), "user.registered");
    assert_non_null(json_string_value(json_object_get(data, "recipient_user_id")));
    assert_non_null(strstr(json_string_value(json_object_get(data, "reason")), "permanent"));
    assert_int_equal(json_integer_value(json_object_get(data, "attempts")), 1);
    assert_non_null(json_string_value(json_object_get(data, "at")));
    json_decref(letter);
    free(bytes);
}

static void a_temporary_refusal_is_retried_then_buried(void **state)
{
    fixture_t *f = *state;
    server_t s;
    server_start(&s, t_free_port(), "451 4.3.0 try again later", "/nonexistent");
    use_server(f, s.port);
    f->dead_calls = 0;
    char email[80], ev[37];
    char *bytes = registration(f, email, ev);
    assert_int_equal(handle(f, bytes), 0);
    server_stop(&s);
    assert_int_equal(f->dead_calls, 1);
    assert_ledger(f, ev, "dead,3"); /* MAIL_MAX_ATTEMPTS = 3 tries */
    free(bytes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backoff_doubles_with_jitter_up_to_the_cap),
        cmocka_unit_test(a_message_reaches_the_smtp_server_whole),
        cmocka_unit_test(refusals_and_outages_are_told_apart),
        cmocka_unit_test(server_down_then_up_delivers_the_mail_once),
        cmocka_unit_test(a_permanent_refusal_goes_to_mail_dead_at_once_and_only_once),
        cmocka_unit_test(a_temporary_refusal_is_retried_then_buried),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

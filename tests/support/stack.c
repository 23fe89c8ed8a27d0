#include "stack.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <libpq-fe.h>

#include "cm/crypto.h"
#include "cm/util.h"
#include "http_client.h"
#include "testenv.h"

char *t_stack(const char *key)
{
    return t_env(T_STACK_ENV, key);
}

char *t_gw(const char *path)
{
    char *base = t_stack("GATEWAY_URL");
    char *u = cm_xasprintf("%s%s", base, path);
    free(base);
    return u;
}

json_t *t_user_body(const char *tag, const char *referral_code)
{
    static int seq;
    char name[31], email[96];
    snprintf(name, sizeof name, "%.6s%s_%d", tag, t_unique(),
             __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST));
    snprintf(email, sizeof email, "%s@example.com", name);
    json_t *body = json_pack("{s:s, s:s, s:s}", "username", name, "email", email, "password",
                             "correct horse battery staple 42");
    if (referral_code)
        json_object_set_new(body, "referral_code", json_string(referral_code));
    return body;
}

json_t *t_register(json_t *body)
{
    char *u = t_gw("/api/register/");
    t_resp_t r;
    assert_int_equal(t_post_json(u, body, NULL, &r), 0);
    if (r.status != 201)
        fprintf(stderr, "register: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 201);
    json_t *user = json_incref(r.json);
    t_resp_dispose(&r);
    free(u);
    return user;
}

char *t_login_access(const char *username, const char *password)
{
    char *u = t_gw("/api/login/");
    json_t *body = json_pack("{s:s, s:s}", "username_or_email", username, "password", password);
    t_resp_t r;
    assert_int_equal(t_post_json(u, body, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    char *access = cm_xstrdup(json_string_value(json_object_get(r.json, "access")));
    assert_non_null(access);
    t_resp_dispose(&r);
    json_decref(body);
    free(u);
    return access;
}

static PGresult *admin_query(PGconn **c, const char *sql, const char *p0, const char *p1)
{
    char *dsn = t_stack("ADMIN_DATABASE_URL");
    *c = PQconnectdb(dsn);
    free(dsn);
    if (PQstatus(*c) != CONNECTION_OK)
        return NULL;
    const char *params[2] = {p0, p1};
    int n = p1 ? 2 : p0 ? 1 : 0;
    return PQexecParams(*c, sql, n, NULL, params, NULL, NULL, 0);
}

int t_db_count(const char *sql, const char *p0, const char *p1)
{
    PGconn *c = NULL;
    PGresult *r = admin_query(&c, sql, p0, p1);
    int n = r && PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) : -1;
    if (n < 0 && r)
        fprintf(stderr, "t_db_count: %s", PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    return n;
}

char *t_db_value(const char *sql, const char *p0)
{
    PGconn *c = NULL;
    PGresult *r = admin_query(&c, sql, p0, NULL);
    char *v = NULL;
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = cm_xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return v;
}

/* Calls fn(text, arg) for every message in MAIL_DIR/new; stops when it returns true. */
static void each_mail(bool (*fn)(const char *text, void *arg), void *arg)
{
    char *dir = t_stack("MAIL_DIR");
    char *newdir = cm_xasprintf("%s/new", dir);
    DIR *d = opendir(newdir);
    bool stop = false;
    for (struct dirent *e; d && !stop && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char *path = cm_xasprintf("%s/%s", newdir, e->d_name);
        FILE *f = fopen(path, "r");
        if (f) {
            static __thread char buf[256 * 1024];
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = '\0';
            fclose(f);
            stop = fn(buf, arg);
        }
        free(path);
    }
    if (d)
        closedir(d);
    free(newdir);
    free(dir);
}

struct mail_query {
    const char *needle, *needle2, *path;
    int count;
    char *token;
};

static bool count_one(const char *text, void *arg)
{
    struct mail_query *q = arg;
    if (strstr(text, q->needle) && (!q->needle2 || strstr(text, q->needle2)))
        q->count++;
    return false;
}

int t_mail_count(const char *needle)
{
    struct mail_query q = {.needle = needle};
    each_mail(count_one, &q);
    return q.count;
}

int t_mails_with(const char *a, const char *b)
{
    struct mail_query q = {.needle = a, .needle2 = b};
    each_mail(count_one, &q);
    return q.count;
}

static bool find_token(const char *text, void *arg)
{
    struct mail_query *q = arg;
    if (!strstr(text, q->needle))
        return false;
    char *key = cm_xasprintf("%s?token=", q->path);
    const char *at = strstr(text, key);
    if (at) {
        at += strlen(key);
        size_t n = strspn(at, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
        q->token = cm_xstrndup(at, n);
    }
    free(key);
    return q->token != NULL;
}

char *t_mail_token(const char *needle, const char *path)
{
    struct mail_query q = {.needle = needle, .path = path};
    each_mail(find_token, &q);
    return q.token;
}

bool t_wait(bool (*cond)(void *arg), void *arg, int ms)
{
    int64_t deadline = cm_now_mono_ms() + ms;
    bool ok = cond(arg);
    while (!ok && cm_now_mono_ms() < deadline) {
        t_sleep_ms(100);
        ok = cond(arg);
    }
    return ok;
}

int t_sh(const char *cmdline)
{
    fflush(stdout);
    int rc = system(cmdline);
    return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

const char *t_repo(void)
{
    static char root[4096];
    if (!root[0]) {
        /* This file is tests/support/stack.c under the repository root. */
        snprintf(root, sizeof root, "%s", __FILE__);
        for (int i = 0; i < 3; i++) {
            char *slash = strrchr(root, '/');
            if (slash)
                *slash = '\0';
        }
    }
    return root;
}

int t_stack_cmd(const char *args)
{
    char *run = t_stack("RUN_DIR");
    char *build = t_stack("BUILD_DIR");
    char *cmd = cm_xasprintf("LINKTR_RUN_DIR='%s' LINKTR_BUILD_DIR='%s' '%s/deploy/local/stack' %s",
                             run, build, t_repo(), args);
    int rc = t_sh(cmd);
    free(cmd);
    free(build);
    free(run);
    return rc;
}

int t_stack_heal(const char *const *names)
{
    int rc = 0;
    for (size_t i = 0; names[i]; i++) {
        char *args = cm_xasprintf("respawn --if-stopped %s", names[i]);
        if (t_stack_cmd(args) != 0)
            rc = -1;
        free(args);
    }
    return rc;
}

/* ---- waves ---------------------------------------------------------------------- */

#define WAVE_DEADLINE_MS 180000
#define WAVE_PASSWORD "correct horse battery staple 42"

typedef struct wave_job {
    t_wave_t *w;
    int from, step;
    const char *code;
    char **tokens;
    int *answered; /* verifications answered so far (atomic) */
} wave_job_t;

/* POSTs body through the gateway, retrying while the answer is 503 or 429. */
static long post_retrying(const char *path, json_t *body, t_resp_t *r)
{
    char *u = t_gw(path);
    long status = 0;
    for (int tries = 0; tries < 200; tries++) {
        if (t_post_json(u, body, NULL, r) != 0)
            status = 0;
        else
            status = r->status;
        if (status != 503 && status != 429 && status != 0)
            break;
        t_resp_dispose(r);
        t_sleep_ms(100);
    }
    free(u);
    return status;
}

static void *register_some(void *arg)
{
    wave_job_t *j = arg;
    for (int i = j->from; i < j->w->n; i += j->step) {
        json_t *body = t_user_body("w", j->code);
        t_resp_t r;
        long status = post_retrying("/api/register/", body, &r);
        if (status == 201) {
            j->w->ids[i] = cm_xstrdup(json_string_value(json_object_get(r.json, "id")));
            j->w->emails[i] = cm_xstrdup(json_string_value(json_object_get(body, "email")));
        } else {
            fprintf(stderr, "wave: register answered %ld: %s\n", status, r.body ? r.body : "");
        }
        t_resp_dispose(&r);
        json_decref(body);
    }
    return NULL;
}

static void run_threads(wave_job_t *jobs, int threads, void *(*fn)(void *))
{
    pthread_t tid[64];
    for (int t = 0; t < threads; t++)
        assert_int_equal(pthread_create(&tid[t], NULL, fn, &jobs[t]), 0);
    for (int t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
}

t_wave_t *t_wave_register(const char *tag, int n, int threads)
{
    assert_true(threads >= 1 && threads <= 64);
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread makes a handle */
    t_wave_t *w = cm_xcalloc(1, sizeof *w);
    w->n = n;
    w->ids = cm_xcalloc((size_t)n, sizeof *w->ids);
    w->emails = cm_xcalloc((size_t)n, sizeof *w->emails);
    json_t *body = t_user_body(tag, NULL);
    w->referrer = t_register(body);
    w->referrer_id = json_string_value(json_object_get(w->referrer, "id"));
    w->referrer_access =
        t_login_access(json_string_value(json_object_get(body, "username")), WAVE_PASSWORD);
    json_decref(body);
    const char *code = json_string_value(json_object_get(w->referrer, "referral_code"));
    wave_job_t jobs[64];
    for (int t = 0; t < threads; t++)
        jobs[t] = (wave_job_t){.w = w, .from = t, .step = threads, .code = code};
    run_threads(jobs, threads, register_some);
    for (int i = 0; i < n; i++)
        assert_non_null(w->ids[i]);
    return w;
}

/* One pass over the Maildir: the verify token of every user that has one. */
static bool fill_tokens(t_wave_t *w, char **tokens)
{
    char *dir = t_stack("MAIL_DIR");
    char *newdir = cm_xasprintf("%s/new", dir);
    DIR *d = opendir(newdir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char *path = cm_xasprintf("%s/%s", newdir, e->d_name);
        char *text = NULL;
        size_t len = 0;
        const char *link = NULL;
        if (cm_read_file(path, 1 << 20, &text, &len) == 0 &&
            (link = strstr(text, "verify-email?token="))) {
            link += strlen("verify-email?token=");
            for (int i = 0; i < w->n; i++) {
                if (!tokens[i] && strstr(text, w->emails[i]))
                    tokens[i] =
                        cm_xstrndup(link, strspn(link, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                       "abcdefghijklmnopqrstuvwxyz0123456789-_"));
            }
        }
        free(text);
        free(path);
    }
    if (d)
        closedir(d);
    free(newdir);
    free(dir);
    for (int i = 0; i < w->n; i++)
        if (!tokens[i])
            return false;
    return true;
}

static void *verify_some(void *arg)
{
    wave_job_t *j = arg;
    for (int i = j->from; i < j->w->n; i += j->step) {
        json_t *body = json_pack("{s:s}", "token", j->tokens[i]);
        t_resp_t r;
        long status = post_retrying("/api/verify-email/", body, &r);
        if (status != 200)
            fprintf(stderr, "wave: verify answered %ld: %s\n", status, r.body ? r.body : "");
        t_resp_dispose(&r);
        json_decref(body);
        __atomic_add_fetch(j->answered, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

struct midway {
    int *answered;
    int half;
    void (*fn)(void *);
    void *arg;
};

static void *call_midway(void *arg)
{
    struct midway *m = arg;
    while (__atomic_load_n(m->answered, __ATOMIC_SEQ_CST) < m->half)
        t_sleep_ms(5);
    m->fn(m->arg);
    return NULL;
}

void t_wave_verify(t_wave_t *w, int threads, void (*midway)(void *arg), void *arg)
{
    char **tokens = cm_xcalloc((size_t)w->n, sizeof *tokens);
    int64_t deadline = cm_now_mono_ms() + WAVE_DEADLINE_MS;
    while (!fill_tokens(w, tokens) && cm_now_mono_ms() < deadline)
        t_sleep_ms(250);
    for (int i = 0; i < w->n; i++)
        assert_non_null(tokens[i]);
    int answered = 0;
    struct midway m = {&answered, w->n / 2, midway, arg};
    pthread_t mid;
    if (midway)
        assert_int_equal(pthread_create(&mid, NULL, call_midway, &m), 0);
    wave_job_t jobs[64];
    for (int t = 0; t < threads; t++)
        jobs[t] = (wave_job_t){
            .w = w, .from = t, .step = threads, .tokens = tokens, .answered = &answered};
    run_threads(jobs, threads, verify_some);
    if (midway)
        pthread_join(mid, NULL);
    for (int i = 0; i < w->n; i++)
        free(tokens[i]);
    free(tokens);
}

static bool all_counted(void *arg)
{
    t_wave_t *w = arg;
    char *v =
        t_db_value("SELECT successful FROM referral.referral_counters WHERE user_id = $1::uuid",
                   w->referrer_id);
    long long n = 0;
    bool done = v && cm_strtonum(v, 0, 1LL << 40, &n) == 0 && n >= w->n;
    free(v);
    return done;
}

/* Counts one message for every user it names, once per Message-ID. */
static void count_message(t_wave_t *w, const char *text, int *counts, char **seen, int *copies)
{
    /* "\n", not "\r\n": the SMTP catcher stores messages with bare LF line ends. */
    static const char header[] = "\nMessage-ID: <";
    const char *mid = strstr(text, header);
    const char *id = mid ? mid + sizeof header - 1 : NULL;
    size_t mlen = id ? strcspn(id, ">\r\n") : 0;
    for (int i = 0; i < w->n; i++) {
        if (!strstr(text, w->emails[i]))
            continue;
        bool dup = false;
        for (int k = 0; k < 4 && seen[i * 4 + k] && id; k++)
            dup = dup || (strlen(seen[i * 4 + k]) == mlen && !strncmp(seen[i * 4 + k], id, mlen));
        if (dup) {
            if (copies)
                (*copies)++;
            continue;
        }
        counts[i]++;
        for (int k = 0; k < 4 && id; k++) {
            if (!seen[i * 4 + k]) {
                seen[i * 4 + k] = cm_xstrndup(id, mlen);
                break;
            }
        }
    }
}

/*
 * One pass over the Maildir: how many distinct messages name each user's
 * address. Copies of one message (the same Message-ID: the mailer uses the
 * event id) count once; *copies (if not NULL) receives how many extra
 * copies there were in all.
 */
static void mail_counts(t_wave_t *w, int *counts, int *copies)
{
    memset(counts, 0, (size_t)w->n * sizeof *counts);
    if (copies)
        *copies = 0;
    char **seen = cm_xcalloc((size_t)w->n * 4, sizeof *seen); /* up to 4 ids per user */
    char *dir = t_stack("MAIL_DIR");
    char *newdir = cm_xasprintf("%s/new", dir);
    DIR *d = opendir(newdir);
    for (struct dirent *e; d && (e = readdir(d));) {
        char *path = cm_xasprintf("%s/%s", newdir, e->d_name);
        char *text = NULL;
        size_t len = 0;
        if (e->d_name[0] != '.' && cm_read_file(path, 1 << 20, &text, &len) == 0)
            count_message(w, text, counts, seen, copies);
        free(text);
        free(path);
    }
    if (d)
        closedir(d);
    for (int i = 0; i < w->n * 4; i++)
        free(seen[i]);
    free(seen);
    free(newdir);
    free(dir);
}

/* True when every user has at least its verify mail and its welcome-credit mail. */
static bool all_mailed(void *arg)
{
    t_wave_t *w = arg;
    int *counts = cm_xcalloc((size_t)w->n, sizeof *counts);
    mail_counts(w, counts, NULL);
    bool done = true;
    for (int i = 0; i < w->n && done; i++)
        done = counts[i] >= 2;
    free(counts);
    return done;
}

static long long db_number(const char *sql, const char *p0)
{
    char *v = t_db_value(sql, p0);
    assert_non_null(v);
    long long n = 0;
    assert_int_equal(cm_strtonum(v, -1, 1LL << 40, &n), 0);
    free(v);
    return n;
}

/* The referrer's own view through the API agrees with the tables. */
static void assert_stats(t_wave_t *w)
{
    char *u = t_gw("/api/referral-stats/");
    t_resp_t r;
    assert_int_equal(t_get(u, w->referrer_access, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "total")), w->n);
    assert_int_equal(json_integer_value(json_object_get(r.json, "successful")), w->n);
    assert_int_equal(json_integer_value(json_object_get(r.json, "pending")), 0);
    t_resp_dispose(&r);
    free(u);
}

void t_wave_assert_exact(t_wave_t *w, int max_copies)
{
    assert_true(t_wait(all_counted, w, WAVE_DEADLINE_MS));
    assert_true(t_wait(all_mailed, w, WAVE_DEADLINE_MS));
    t_sleep_ms(2000); /* anything doubled would arrive by now */
    const char *id = w->referrer_id;
    assert_int_equal(
        db_number("SELECT count(*) FROM referral.referrals WHERE referrer_id = $1::uuid "
                  "AND status = 'successful'",
                  id),
        w->n);
    assert_int_equal(
        db_number("SELECT count(*) FROM referral.referrals WHERE referrer_id = $1::uuid", id),
        w->n);
    assert_int_equal(db_number("SELECT successful FROM referral.referral_counters "
                               "WHERE user_id = $1::uuid",
                               id),
                     w->n);
    /* Defaults: 10 credits per success; milestones 25, 50, 150 at 5, 10, 25. */
    int milestones = (w->n >= 5) + (w->n >= 10) + (w->n >= 25);
    assert_int_equal(db_number("SELECT count(*) FROM referral.rewards WHERE user_id = $1::uuid "
                               "AND kind = 'credit'",
                               id),
                     w->n);
    assert_int_equal(db_number("SELECT count(*) FROM referral.rewards WHERE user_id = $1::uuid "
                               "AND kind = 'milestone'",
                               id),
                     milestones);
    long long credits =
        10LL * w->n + (w->n >= 5 ? 25 : 0) + (w->n >= 10 ? 50 : 0) + (w->n >= 25 ? 150 : 0);
    assert_int_equal(db_number("SELECT credits FROM referral.referral_counters "
                               "WHERE user_id = $1::uuid",
                               id),
                     credits);
    int *counts = cm_xcalloc((size_t)w->n, sizeof *counts);
    int copies = 0;
    mail_counts(w, counts, &copies);
    if (copies)
        fprintf(stderr,
                "wave: %d message(s) delivered again with the same Message-ID "
                "(a send interrupted by SIGKILL is repeated; nothing is lost)\n",
                copies);
    assert_true(copies <= max_copies);
    for (int i = 0; i < w->n; i++) {
        assert_int_equal(
            db_number("SELECT count(*) FROM referral.rewards WHERE user_id = $1::uuid", w->ids[i]),
            1);
        /* The verify mail and the welcome-credit mail, each exactly one message. */
        assert_int_equal(counts[i], 2);
    }
    free(counts);
    assert_stats(w);
}

void t_wave_free(t_wave_t *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->n; i++) {
        free(w->ids[i]);
        free(w->emails[i]);
    }
    free(w->ids);
    free(w->emails);
    free(w->referrer_access);
    json_decref(w->referrer);
    free(w);
}

double t_metric_sum(const char *base, const char *name)
{
    char *u = cm_xasprintf("%s/metrics", base);
    size_t n = strlen(name);
    t_resp_t r;
    double total = 0;
    if (t_get(u, NULL, &r) == 0 && r.status == 200) {
        for (const char *line = r.body; line && *line;) {
            const char *end = strchr(line, '\n');
            if (strncmp(line, name, n) == 0 && (line[n] == '{' || line[n] == ' ')) {
                const char *space = memchr(line, ' ', end ? (size_t)(end - line) : strlen(line));
                if (space)
                    total += strtod(space + 1, NULL);
            }
            line = end ? end + 1 : NULL;
        }
    }
    t_resp_dispose(&r);
    free(u);
    return total;
}

struct assigned_wait {
    char *urls;
    int instances;
};

static bool every_instance_assigned(void *arg)
{
    const struct assigned_wait *w = arg;
    char *urls = cm_xstrdup(w->urls);
    int holding = 0;
    for (char *save = NULL, *u = strtok_r(urls, ",", &save); u; u = strtok_r(NULL, ",", &save))
        holding += t_metric_sum(u, "linktr_consumer_assigned_partitions") > 0;
    free(urls);
    return holding == w->instances;
}

void t_wait_every_instance_assigned(const char *key, int instances)
{
    struct assigned_wait w = {t_stack(key), instances};
    int64_t t0 = cm_now_mono_ms();
    bool ok = t_wait(every_instance_assigned, &w, 60000);
    fprintf(stderr, "%s: every instance holds partitions after %lld ms: %s\n", key,
            (long long)(cm_now_mono_ms() - t0), ok ? "yes" : "no");
    free(w.urls);
    assert_true(ok);
}

void t_assert_every_instance_consumed(const char *key, int instances)
{
    char *urls = t_stack(key);
    int seen = 0;
    double total = 0, least = -1;
    for (char *save = NULL, *u = strtok_r(urls, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
        double n = t_metric_sum(u, "linktr_consumer_messages_total");
        fprintf(stderr, "%s at %s consumed %.0f messages\n", key, u, n);
        assert_true(n > 0);
        total += n;
        least = least < 0 || n < least ? n : least;
        seen++;
    }
    assert_int_equal(seen, instances);
    /* A share of the work, not a token message: each member holds its part of every topic
     * (round-robin assignment), so none handles less than a quarter of an even split. */
    assert_true(least * instances * 4 >= total);
    free(urls);
}

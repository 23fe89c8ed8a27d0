#include "stack.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

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
    snprintf(name, sizeof name, "%.6s%s_%d", tag, t_unique(), __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST));
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
    const char *needle, *path;
    int count;
    char *token;
};

static bool count_one(const char *text, void *arg)
{
    struct mail_query *q = arg;
    if (strstr(text, q->needle))
        q->count++;
    return false;
}

int t_mail_count(const char *needle)
{
    struct mail_query q = {.needle = needle};
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
        usleep(100 * 1000);
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

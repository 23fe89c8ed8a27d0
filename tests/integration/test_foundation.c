/*
 * The first slice, end to end through the public gateway: register and log
 * in over HTTP, the user.registered event travels auth → outbox → Kafka →
 * referral (member row) and mailer (welcome .eml), and hostile bodies get
 * problem+json answers while the gateway keeps serving.
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
#include <libpq-fe.h>

#include "cm/util.h"
#include "http_client.h"
#include "testenv.h"

#define ENV "LINKTR_STACK_ENV"
/* Events cross two consumers; generous, but bounded so a lost event fails the test. */
#define EVENT_DEADLINE_MS 30000

static json_t *new_user(const char *tag)
{
    char name[64], email[96];
    snprintf(name, sizeof name, "u%s_%s", tag, t_unique());
    snprintf(email, sizeof email, "%s@example.com", name);
    return json_pack("{s:s, s:s, s:s}", "username", name, "email", email, "password",
                     "correct horse battery staple 42");
}

/* True if some message in MAIL_DIR/new contains needle. */
static bool mail_contains(const char *needle)
{
    char *dir = t_env(ENV, "MAIL_DIR");
    char *newdir = cm_xasprintf("%s/new", dir);
    bool found = false;
    DIR *d = opendir(newdir);
    for (struct dirent *e; d && !found && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char *path = cm_xasprintf("%s/%s", newdir, e->d_name);
        FILE *f = fopen(path, "r");
        char buf[65536];
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        buf[n] = '\0';
        found = strstr(buf, needle) != NULL;
        if (f)
            fclose(f);
        free(path);
    }
    if (d)
        closedir(d);
    free(newdir);
    free(dir);
    return found;
}

/* Number of rows an admin query returns for one parameter. */
static int count_rows(const char *sql, const char *param)
{
    char *dsn = t_env(ENV, "ADMIN_DATABASE_URL");
    PGconn *c = PQconnectdb(dsn);
    free(dsn);
    int n = -1;
    if (PQstatus(c) == CONNECTION_OK) {
        const char *params[1] = {param};
        PGresult *r = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            n = PQntuples(r);
        PQclear(r);
    }
    PQfinish(c);
    return n;
}

static void assert_problem(const t_resp_t *r, long status)
{
    assert_int_equal(r->status, status);
    assert_non_null(r->content_type);
    assert_non_null(strstr(r->content_type, "application/problem+json"));
    assert_non_null(r->json);
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), status);
    assert_non_null(json_string_value(json_object_get(r->json, "title")));
    assert_non_null(json_string_value(json_object_get(r->json, "request_id")));
}

static void registration_and_login_work_through_the_gateway_and_reach_every_service(void **state)
{
    (void)state;
    json_t *user = new_user("f");
    const char *username = json_string_value(json_object_get(user, "username"));
    const char *email = json_string_value(json_object_get(user, "email"));
    char *reg = t_url("GATEWAY_URL", "/api/register/");
    t_resp_t r;
    assert_int_equal(t_post_json(reg, user, NULL, &r), 0);
    assert_int_equal(r.status, 201);
    const char *id = json_string_value(json_object_get(r.json, "id"));
    assert_non_null(id);
    char *user_id = cm_xstrdup(id);
    assert_string_equal(json_string_value(json_object_get(r.json, "username")), username);
    assert_string_equal(json_string_value(json_object_get(r.json, "email")), email);
    assert_int_equal(strlen(json_string_value(json_object_get(r.json, "referral_code"))), 8);
    assert_true(json_is_false(json_object_get(r.json, "email_verified")));
    t_resp_dispose(&r);

    json_t *login = json_pack("{s:s, s:s}", "username_or_email", username, "password",
                              json_string_value(json_object_get(user, "password")));
    char *lg = t_url("GATEWAY_URL", "/api/login/");
    assert_int_equal(t_post_json(lg, login, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(json_string_value(json_object_get(r.json, "access")));
    assert_non_null(json_string_value(json_object_get(r.json, "refresh")));
    assert_string_equal(json_string_value(json_object_get(r.json, "token_type")), "Bearer");
    t_resp_dispose(&r);

    int64_t deadline = cm_now_mono_ms() + EVENT_DEADLINE_MS;
    bool mailed = false, member = false;
    while (cm_now_mono_ms() < deadline && !(mailed && member)) {
        mailed = mailed || mail_contains(email);
        member = member || count_rows("SELECT 1 FROM referral.members WHERE user_id = $1::uuid",
                                      user_id) == 1;
        if (!(mailed && member))
            t_sleep_ms(200);
    }
    assert_true(mailed);
    assert_true(member);

    free(user_id);
    free(lg);
    free(reg);
    json_decref(login);
    json_decref(user);
}

static void hostile_bodies_get_problem_answers_and_the_gateway_keeps_serving(void **state)
{
    (void)state;
    char *reg = t_url("GATEWAY_URL", "/api/register/");
    t_resp_t r;

    assert_int_equal(t_http("POST", reg, "application/json", "{\"username\": ", 13, NULL, &r), 0);
    assert_problem(&r, 400);
    t_resp_dispose(&r);

    json_t *missing = json_pack("{s:s}", "username", "someone");
    assert_int_equal(t_post_json(reg, missing, NULL, &r), 0);
    assert_problem(&r, 400);
    json_t *errors = json_object_get(r.json, "errors");
    assert_non_null(json_object_get(errors, "email"));
    assert_non_null(json_object_get(errors, "password"));
    t_resp_dispose(&r);
    json_decref(missing);

    size_t big = 100 * 1024;
    char *body = cm_xmalloc(big);
    memset(body, ' ', big);
    body[0] = '{';
    body[big - 1] = '}';
    assert_int_equal(t_http("POST", reg, "application/json", body, big, NULL, &r), 0);
    assert_problem(&r, 413);
    t_resp_dispose(&r);
    free(body);

    assert_int_equal(t_http("POST", reg, "text/plain", "hello", 5, NULL, &r), 0);
    assert_problem(&r, 415);
    t_resp_dispose(&r);

    char *health = t_url("GATEWAY_URL", "/healthz");
    assert_int_equal(t_get(health, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    free(health);
    free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(registration_and_login_work_through_the_gateway_and_reach_every_service),
        cmocka_unit_test(hostile_bodies_get_problem_answers_and_the_gateway_keeps_serving),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Slow clients against the stack's gateway (issue 12, finding 3): more
 * connections than the gateway has worker threads, each trickling a byte
 * every 4 s, half of them in the head and half in the body, cannot keep
 * others from being answered, and are themselves cut off.
 *
 * The figures this depends on are the defaults (the stack sets neither):
 * HTTP_THREADS 128 and REQUEST_TIMEOUT_MS 1000 on the gateway. With a FIFO
 * accept queue, a client behind S slow connections on T workers waits
 * about ceil(S / T) deadlines; 192 slow ones on 128 workers → 2 rounds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "cm/error.h"
#include "cm/util.h"
#include "http_client.h"
#include "raw_client.h"
#include "stack.h"
#include "testenv.h"

#define GATEWAY_THREADS 128
#define DEADLINE_MS 1000
#define SLOW 192 /* 1.5 x the workers */
#define OTHERS 12
#define TRICKLE_MS 4000
/* A slow client holds a worker for at most about two deadlines; two rounds of them. */
#define CUT_OFF_BOUND_MS (2 * 2 * DEADLINE_MS + 1500)

typedef struct slow {
    int port;
    int kind; /* 0: slow head, 1: slow small body, 2: huge Content-Length */
    bool connected;
    t_trickle_t t;
} slow_t;

typedef struct other {
    char *url;
    bool login;
    long status;
    int64_t waited_ms;
} other_t;

static int gateway_port(void)
{
    char *url = t_stack("GATEWAY_URL");
    const char *colon = strrchr(url, ':');
    long long port = 0;
    int rc = colon ? cm_strtonum(colon + 1, 1, 65535, &port) : CM_EINVAL;
    if (rc != 0)
        fail_msg("GATEWAY_URL %s has no port", url);
    free(url);
    return (int)port;
}

static void *run_slow(void *arg)
{
    slow_t *c = arg;
    static const char *const heads[] = {
        "POST /api/login/ HTTP/1.1\r\nHost: gw\r\nX-Slow: ",
        "POST /api/login/ HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        "Content-Length: 2000\r\n\r\n{",
        "POST /api/login/ HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000000\r\n\r\n{",
    };
    int s = t_raw_connect("127.0.0.1", c->port, NULL);
    c->connected = s >= 0 && t_raw_send(s, heads[c->kind], strlen(heads[c->kind]));
    /* Nothing to trickle when the connection failed: the result says so at once. */
    t_raw_trickle(s, "a", TRICKLE_MS, c->connected ? 15000 : 0, &c->t);
    if (s < 0)
        return NULL;
    close(s);
    return NULL;
}

static void *run_other(void *arg)
{
    other_t *o = arg;
    t_resp_t r;
    int64_t t0 = cm_now_mono_ms();
    if (o->login) {
        /* A name of its own: auth's per-account throttle must not answer for the test. */
        char *name = cm_xasprintf("nobody-%s-%p", t_unique(), (void *)o);
        json_t *body = json_pack("{s:s,s:s}", "username_or_email", name, "password", "wrong");
        free(name);
        t_post_json(o->url, body, NULL, &r);
        json_decref(body);
    } else {
        t_get(o->url, NULL, &r);
    }
    o->waited_ms = cm_now_mono_ms() - t0;
    o->status = r.status;
    t_resp_dispose(&r);
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void others_are_answered_within_2s_while_slow_clients_are_cut_off(void **state)
{
    (void)state;
    int port = gateway_port();
    slow_t *slow = cm_xcalloc(SLOW, sizeof *slow);
    pthread_t slow_th[SLOW], other_th[OTHERS];
    for (int i = 0; i < SLOW; i++) {
        slow[i].port = port;
        slow[i].kind = i % 8 == 7 ? 2 : i % 2;
        assert_int_equal(pthread_create(&slow_th[i], NULL, run_slow, &slow[i]), 0);
    }
    /* Every slow connection is in: the others queue behind them. */
    t_sleep_ms(300);
    other_t others[OTHERS];
    for (int i = 0; i < OTHERS; i++) {
        others[i].login = i % 2 == 1;
        others[i].url = t_gw(others[i].login ? "/api/login/" : "/healthz");
        assert_int_equal(pthread_create(&other_th[i], NULL, run_other, &others[i]), 0);
    }
    int64_t waited[OTHERS];
    for (int i = 0; i < OTHERS; i++) {
        pthread_join(other_th[i], NULL);
        waited[i] = others[i].waited_ms;
        free(others[i].url);
    }
    int64_t cut[SLOW];
    for (int i = 0; i < SLOW; i++) {
        pthread_join(slow_th[i], NULL);
        cut[i] = slow[i].t.closed_ms < 0 ? INT64_MAX : slow[i].t.closed_ms;
    }
    qsort(waited, OTHERS, sizeof waited[0], cmp_i64);
    qsort(cut, SLOW, sizeof cut[0], cmp_i64);
    printf("slow-clients: %d slow (threads %d, deadline %d ms); others waited median %lld ms, "
           "max %lld ms; slow ones cut off after median %lld ms, max %lld ms\n",
           SLOW, GATEWAY_THREADS, DEADLINE_MS, (long long)waited[OTHERS / 2],
           (long long)waited[OTHERS - 1], (long long)cut[SLOW / 2], (long long)cut[SLOW - 1]);
    for (int i = 0; i < OTHERS; i++) {
        long want = others[i].login ? 401 : 200;
        if (others[i].status != want)
            fail_msg("%s answered %ld, want %ld", others[i].login ? "login" : "healthz",
                     others[i].status, want);
    }
    if (waited[OTHERS - 1] >= 2000)
        fail_msg("a client waited %lld ms behind the slow ones", (long long)waited[OTHERS - 1]);
    for (int i = 0; i < SLOW; i++) {
        if (!slow[i].connected)
            fail_msg("slow client %d could not connect and send its head", i);
        if (slow[i].t.closed_ms < 0 || slow[i].t.closed_ms > CUT_OFF_BOUND_MS)
            fail_msg("slow client %d (kind %d) still connected after %lld ms", i, slow[i].kind,
                     (long long)slow[i].t.closed_ms);
        /* Cut off, never served: at most an error answer (civetweb's 400 for a head cut short). */
        int status = t_raw_status(slow[i].t.got.data);
        if (status != 0 && status != 400 && status != 408 && status != 413)
            fail_msg("slow client %d got %d", i, status);
        t_trickle_dispose(&slow[i].t);
    }
    free(slow);
    /* And the gateway is still fine. */
    char *url = t_gw("/healthz");
    t_resp_t r;
    t_get(url, NULL, &r);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    free(url);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(others_are_answered_within_2s_while_slow_clients_are_cut_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

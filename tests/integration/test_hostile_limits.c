/*
 * IPv6 clients cannot walk around the rate limiter (issue 12, finding 6):
 * a gateway with login limited to 3 a minute answers login attempts from
 * many addresses of one /64 with 429 after the third, while another /64,
 * an IPv4 client and an IPv4-mapped IPv6 address of another host keep
 * buckets of their own.
 *
 * The addresses arrive the only way IPv6 clients can reach the gateway
 * with the civetweb it is built on: Debian's libcivetweb 1.15 is compiled
 * without IPv6 (mg_check_feature(8) is 0; "[::]:port" is refused), so the
 * services listen on IPv4 only and IPv6 clients come through the proxy in
 * front, named in TRUSTED_PROXIES, which appends the client's address to
 * X-Forwarded-For. The test is that proxy: it talks to the real gateway
 * over loopback, and the gateway decides the client address from the
 * header exactly as in production, then keys the bucket by its /64.
 * (Extra loopback addresses, `ip -6 route add local ... dev lo`, would
 * need an IPv6 listener to be of any use.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm/util.h"
#include "http_client.h"
#include "stack.h"
#include "testenv.h"

static char *gateway_binary(void)
{
    const char *dir = getenv("LINKTR_BIN_DIR");
    if (dir && *dir)
        return cm_xasprintf("%s/linktr-gateway", dir);
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    const char *tries[] = {"bin", "../bin", "../../bin"};
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        char *p = cm_xasprintf("%s/%s/linktr-gateway", self, tries[i]);
        if (access(p, X_OK) == 0)
            return p;
        free(p);
    }
    fail_msg("linktr-gateway not found next to %s (set LINKTR_BIN_DIR)", self);
    return NULL;
}

/* Starts a gateway trusting loopback as its proxy, login limited to 3 a minute; returns its pid. */
static pid_t start_gateway(int port)
{
    char *bin = gateway_binary();
    char *keyfile = t_stack("JWT_PUBLIC_KEY_FILE");
    char *kid = t_stack("JWT_KEY_ID");
    char *keys = cm_xasprintf("%s=%s", kid, keyfile);
    char *auth = t_stack("AUTH_URL");
    char *referral = t_stack("REFERRAL_URL");
    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%d", port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("PORT", portbuf, 1);
        setenv("BIND_ADDRESS", "127.0.0.1", 1);
        setenv("AUTH_URL", auth, 1);
        setenv("REFERRAL_URL", referral, 1);
        setenv("JWT_PUBLIC_KEYS", keys, 1);
        setenv("RATE_LIMITS", "login=3/60", 1);
        setenv("TRUSTED_PROXIES", "127.0.0.1", 1);
        unsetenv("RATE_LIMIT_IPV6_PREFIX");
        setenv("LOG_LEVEL", "warn", 1);
        execl(bin, bin, (char *)NULL);
        _exit(127);
    }
    free(bin);
    free(keyfile);
    free(kid);
    free(keys);
    free(auth);
    free(referral);
    return pid;
}

static void stop_gateway(pid_t pid)
{
    kill(pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 100 && waitpid(pid, &st, WNOHANG) == 0; i++)
        t_sleep_ms(50);
    if (waitpid(pid, &st, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
}

/* One wrong-password login for client address from (NULL: the peer itself); returns the status. */
static long login_from(int port, const char *from)
{
    char *url = cm_xasprintf("http://127.0.0.1:%d/api/login/", port);
    char *xff = from ? cm_xasprintf("X-Forwarded-For: %s", from) : NULL;
    const char *headers[] = {xff, NULL};
    /* A fresh name per call: auth's own per-account throttle must not answer for the gateway. */
    static int n;
    char *body = cm_xasprintf("{\"username_or_email\":\"nobody-%s-%d\",\"password\":\"wrong\"}",
                              t_unique(), __atomic_add_fetch(&n, 1, __ATOMIC_SEQ_CST));
    t_resp_t r;
    t_http("POST", url, "application/json", body, strlen(body), headers, &r);
    long status = r.status;
    t_resp_dispose(&r);
    free(body);
    free(xff);
    free(url);
    return status;
}

static void many_addresses_of_one_64_share_one_login_bucket(void **state)
{
    (void)state;
    int port = t_free_port();
    pid_t pid = start_gateway(port);
    char *healthz = cm_xasprintf("http://127.0.0.1:%d/healthz", port);
    long up = 0;
    for (int64_t deadline = cm_now_mono_ms() + 10000; up != 200 && cm_now_mono_ms() < deadline;) {
        t_resp_t r;
        t_get(healthz, NULL, &r);
        up = r.status;
        t_resp_dispose(&r);
        if (up != 200)
            t_sleep_ms(100);
    }
    free(healthz);
    long statuses[8];
    char from[64];
    for (int i = 0; i < 8; i++) {
        /* Eight addresses of 2001:db8:1::/64, none seen before. */
        snprintf(from, sizeof from, "2001:db8:1:0:%x:%x::%x", 0x100 + i, i * 31, i + 1);
        statuses[i] = login_from(port, from);
    }
    long other64 = login_from(port, "2001:db8:1:1::1");
    long v4 = login_from(port, "192.0.2.10");
    long mapped_other = login_from(port, "::ffff:192.0.2.11");
    long peer = login_from(port, NULL);
    stop_gateway(pid);
    assert_int_equal(up, 200);
    for (int i = 0; i < 8; i++)
        if (statuses[i] != (i < 3 ? 401 : 429))
            fail_msg("login %d from a fresh address of the /64: %ld, want %d", i + 1, statuses[i],
                     i < 3 ? 401 : 429);
    assert_int_equal(other64, 401);
    assert_int_equal(v4, 401);
    assert_int_equal(mapped_other, 401);
    assert_int_equal(peer, 401);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(many_addresses_of_one_64_share_one_login_bucket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

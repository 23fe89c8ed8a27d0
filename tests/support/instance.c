#include "instance.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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

/* Path of the linktr-auth built next to this test (build/bin or ../bin). */
static char *auth_binary(void)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    const char *rel[] = {"bin/linktr-auth", "../bin/linktr-auth"};
    for (int i = 0; i < 2; i++) {
        char *p = cm_xasprintf("%s/%s", self, rel[i]);
        if (access(p, X_OK) == 0)
            return p;
        free(p);
    }
    fail_msg("linktr-auth not found next to %s", self);
    return NULL;
}

/* The stack's settings auth needs, as VAR=VALUE strings the caller frees. */
static void stack_vars(char *vars[8], int port)
{
    char *pub = t_env(T_STACK_ENV, "MAILER_SEAL_PUBLIC_KEY_FILE"), *seal = NULL;
    size_t len = 0;
    assert_int_equal(cm_read_file(pub, 4096, &seal, &len), 0);
    seal[strcspn(seal, "\r\n")] = '\0';
    const char *keys[] = {"AUTH_DATABASE_URL", "KAFKA_BOOTSTRAP", "JWT_PRIVATE_KEY_FILE",
                          "JWT_KEY_ID"};
    const char *names[] = {"DATABASE_URL", "KAFKA_BOOTSTRAP", "JWT_PRIVATE_KEY_FILE", "JWT_KEY_ID"};
    for (int i = 0; i < 4; i++) {
        char *v = t_env(T_STACK_ENV, keys[i]);
        vars[i] = cm_xasprintf("%s=%s", names[i], v);
        free(v);
    }
    vars[4] = cm_xasprintf("PORT=%d", port);
    vars[5] = cm_xasprintf("MAILER_SEAL_PUBLIC_KEY=%s", seal);
    vars[6] = cm_xstrdup("LOG_LEVEL=warn");
    vars[7] = cm_xasprintf("ADMIN_PORT=%d", t_free_port());
    free(seal);
    free(pub);
}

static void wait_healthy(t_instance_t *in)
{
    char *health = cm_xasprintf("%s/healthz", in->base);
    int64_t deadline = cm_now_mono_ms() + 20000;
    t_resp_t r;
    while (t_get(health, NULL, &r) != 0 || r.status != 200) {
        t_resp_dispose(&r);
        if (cm_now_mono_ms() > deadline || waitpid(in->pid, NULL, WNOHANG) == in->pid)
            fail_msg("private linktr-auth did not start");
        t_sleep_ms(100);
    }
    t_resp_dispose(&r);
    free(health);
}

void t_auth_start(t_instance_t *in, const char *const *overrides)
{
    char *bin = auth_binary();
    int port = t_free_port();
    snprintf(in->base, sizeof in->base, "http://127.0.0.1:%d", port);
    char *vars[8];
    stack_vars(vars, port);
    in->pid = fork();
    assert_true(in->pid >= 0);
    if (in->pid == 0) {
        for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
            putenv(vars[i]);
        for (size_t i = 0; overrides && overrides[i]; i++)
            putenv((char *)(uintptr_t)overrides[i]);
        unsetenv("JWT_PUBLIC_KEYS");
        execl(bin, bin, (char *)NULL);
        _exit(127);
    }
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        free(vars[i]);
    free(bin);
    wait_healthy(in);
}

void t_instance_stop(t_instance_t *in)
{
    int status = 0;
    kill(in->pid, SIGTERM);
    assert_int_equal(waitpid(in->pid, &status, 0), in->pid);
    in->pid = 0;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

void t_instance_kill(t_instance_t *in)
{
    if (in && in->pid > 0) {
        kill(in->pid, SIGKILL);
        waitpid(in->pid, NULL, 0);
        in->pid = 0;
    }
}

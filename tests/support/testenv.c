#include "testenv.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "cm/util.h"

char *t_env_opt(const char *file_var, const char *key)
{
    const char *path = getenv(file_var);
    if (!path) {
        fprintf(stderr, "test setup: %s is not set (run through ctest)\n", file_var);
        exit(2);
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "test setup: cannot open %s (did the fixture start?)\n", path);
        exit(2);
    }
    char line[4096];
    size_t klen = strlen(key);
    char *value = NULL;
    while (!value && fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0 && line[klen] == '=') {
            line[strcspn(line, "\r\n")] = '\0';
            value = cm_xstrdup(line + klen + 1);
        }
    }
    fclose(f);
    return value;
}

char *t_env(const char *file_var, const char *key)
{
    char *v = t_env_opt(file_var, key);
    if (!v) {
        fprintf(stderr, "test setup: %s has no %s\n", getenv(file_var), key);
        exit(2);
    }
    return v;
}

const char *t_unique(void)
{
    static char buf[48];
    if (!buf[0])
        snprintf(buf, sizeof buf, "%ld%lld", (long)getpid() % 100000,
                 (long long)(cm_now_us() % 1000000000));
    return buf;
}

void t_sleep_ms(int ms)
{
    if (ms <= 0)
        return;
    struct timespec left = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        continue;
}

int t_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

#include "raw_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fill_addr(const char *addr, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof *a4;
        return AF_INET;
    }
    if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
        return AF_INET6;
    }
    return -1;
}

int t_raw_connect(const char *addr, int port, const char *local)
{
    struct sockaddr_storage peer, me;
    socklen_t plen = 0, mlen = 0;
    int family = fill_addr(addr, port, &peer, &plen);
    if (family < 0)
        return -1;
    int s = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    if (local &&
        (fill_addr(local, 0, &me, &mlen) != family || bind(s, (struct sockaddr *)&me, mlen) != 0)) {
        close(s);
        return -1;
    }
    if (connect(s, (struct sockaddr *)&peer, plen) != 0) {
        close(s);
        return -1;
    }
    return s;
}

bool t_raw_send(int s, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = send(s, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Reads what is there for up to wait_ms. Returns false once the server closed. */
static bool read_some(int s, int wait_ms, cm_buf_t *got)
{
    struct pollfd p = {.fd = s, .events = POLLIN};
    int r = poll(&p, 1, wait_ms < 0 ? 0 : wait_ms);
    if (r <= 0)
        return true;
    char chunk[4096];
    ssize_t n = recv(s, chunk, sizeof chunk, 0);
    if (n <= 0)
        return n < 0 && errno == EINTR;
    if (got)
        cm_buf_append(got, chunk, (size_t)n);
    return true;
}

void t_raw_trickle(int s, const char *bytes, int interval_ms, int max_ms, t_trickle_t *out)
{
    cm_buf_init(&out->got);
    cm_buf_puts(&out->got, "");
    out->closed_ms = -1;
    out->sent = 0;
    size_t n = strlen(bytes), i = 0;
    int64_t t0 = cm_now_mono_ms(), next = t0;
    while (cm_now_mono_ms() - t0 < max_ms) {
        int64_t now = cm_now_mono_ms();
        if (n && now >= next) {
            /* A send that fails means the server is gone; the read below sees it. */
            if (t_raw_send(s, &bytes[i++ % n], 1))
                out->sent++;
            next = now + interval_ms;
        }
        int wait = (int)(next - cm_now_mono_ms());
        if (!read_some(s, wait > 50 ? 50 : wait, &out->got)) {
            out->closed_ms = cm_now_mono_ms() - t0;
            return;
        }
    }
}

void t_trickle_dispose(t_trickle_t *t)
{
    cm_buf_dispose(&t->got);
}

int64_t t_raw_wait_close(int s, int timeout_ms, cm_buf_t *got)
{
    int64_t t0 = cm_now_mono_ms();
    while (cm_now_mono_ms() - t0 < timeout_ms) {
        if (!read_some(s, 50, got))
            return cm_now_mono_ms() - t0;
    }
    return -1;
}

int t_raw_status(const char *text)
{
    if (!text || (strncmp(text, "HTTP/1.1 ", 9) != 0 && strncmp(text, "HTTP/1.0 ", 9) != 0))
        return 0;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (text[i] < '0' || text[i] > '9')
            return 0;
        status = status * 10 + (text[i] - '0');
    }
    return status;
}

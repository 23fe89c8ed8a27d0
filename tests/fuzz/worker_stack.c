/*
 * worker_stack.c — checks that the stack the fuzz harnesses run on
 * (FUZZ_CIVETWEB_STACK, fuzz.h) is the stack civetweb's worker threads
 * really get from the library this tree links.
 *
 * civetweb 1.15 (Debian's libcivetweb) creates its workers with
 * pthread_attr_setstacksize(0x19000) and offers no option to change it.
 * If a new library changes that, the harnesses would test the wrong
 * context, so this program fails: it starts a civetweb server on a free
 * loopback port, asks it one request, and compares the handler thread's
 * stack (pthread_getattr_np) with that of a thread made with
 * FUZZ_CIVETWEB_STACK the way fuzz_on_worker_stack makes its threads, and
 * checks that the stack civetweb has used by the time our handler runs
 * fits FUZZ_CIVETWEB_USED, which the harnesses set aside. Exit 0 when both
 * hold, 1 otherwise (the sizes are printed).
 */
/* pthread_getattr_np */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <civetweb.h>

#include "fuzz.h"

/* The stack size of the calling thread as glibc reports it, or 0; *used is how much of it
 * lies above the caller's frame (the stack grows down from addr + size). */
static size_t own_stack_size(size_t *used)
{
    pthread_attr_t attr;
    size_t size = 0;
    void *addr = NULL;
    uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
    if (pthread_getattr_np(pthread_self(), &attr) != 0)
        return 0;
    if (pthread_attr_getstack(&attr, &addr, &size) != 0)
        size = 0;
    pthread_attr_destroy(&attr);
    if (used)
        *used = (size_t)((uintptr_t)addr + size - frame);
    return size;
}

typedef struct seen {
    size_t size;
    size_t used;
} seen_t;

static int on_any(struct mg_connection *conn, void *cbdata)
{
    seen_t *seen = cbdata;
    seen->size = own_stack_size(&seen->used);
    mg_printf(conn, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    return 204;
}

static void *measure(void *arg)
{
    seen_t *seen = arg;
    seen->size = own_stack_size(&seen->used);
    return NULL;
}

/* What a thread made like fuzz_on_worker_stack's (unscaled) reports. */
static seen_t harness_thread_stack(void)
{
    seen_t seen = {0, 0};
    pthread_attr_t attr;
    pthread_t t;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, FUZZ_CIVETWEB_STACK);
    if (pthread_create(&t, &attr, measure, &seen) == 0)
        pthread_join(t, NULL);
    pthread_attr_destroy(&attr);
    return seen;
}

/* Sends one GET to 127.0.0.1:port and reads the answer to its end. */
static int ask(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    static const char req[] = "GET /stack HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    ssize_t w = write(fd, req, sizeof req - 1);
    char buf[512];
    while (w > 0 && read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
    return w == (ssize_t)(sizeof req - 1) ? 0 : -1;
}

int main(void)
{
    seen_t seen = {0, 0};
    const char *options[] = {"listening_ports", "127.0.0.1:0", "num_threads", "1", NULL};
    mg_init_library(0);
    struct mg_context *ctx = mg_start(NULL, NULL, options);
    struct mg_server_port port;
    if (!ctx || mg_get_server_ports(ctx, 1, &port) != 1 || port.port <= 0) {
        fprintf(stderr, "worker_stack: civetweb did not start on a free port\n");
        return 1;
    }
    mg_set_request_handler(ctx, "/", on_any, &seen);
    int rc = ask(port.port);
    mg_stop(ctx);
    mg_exit_library();
    seen_t ours = harness_thread_stack();
    /* Both counts include glibc's thread block and TLS at the top; the difference is civetweb's. */
    size_t civetweb_used = seen.used > ours.used ? seen.used - ours.used : 0;
    printf("worker_stack: civetweb handler thread %zu bytes, %zu in use when the handler runs "
           "(%zu of it civetweb's); a thread made with %#x: %zu bytes; fuzz.h reserves %d\n",
           seen.size, seen.used, civetweb_used, FUZZ_CIVETWEB_STACK, ours.size, FUZZ_CIVETWEB_USED);
    if (rc != 0 || seen.size == 0 || seen.size != ours.size) {
        fprintf(stderr, "worker_stack: the civetweb worker stack is not FUZZ_CIVETWEB_STACK; "
                        "update fuzz.h (and cm/jsonscan.h's reasoning) to the library's size\n");
        return 1;
    }
    if (civetweb_used > FUZZ_CIVETWEB_USED) {
        fprintf(stderr, "worker_stack: civetweb uses more stack before the handler than "
                        "FUZZ_CIVETWEB_USED; raise it in fuzz.h\n");
        return 1;
    }
    return 0;
}

/*
 * fuzz_upstream.c — the gateway's parser of an upstream's answer head
 * (proxy.c: gw_resp_head_end, gw_resp_head_parse), the bytes a broken or
 * hostile upstream controls.
 *
 * The input is the start of an answer. The head found by gw_resp_head_end
 * is copied into a buffer of exactly its size (so ASan sees any read past
 * it) and parsed. Invariants: the end is the first CRLF CRLF; an accepted
 * head has a final status 200-599, a body no longer than GW_MAX_RESPONSE
 * (none on 204/304) and relayed values that are NUL-terminated inside
 * their fields with no CR or LF; a refused one leaves status 0, and only
 * CM_ETOOBIG sets too_big.
 * Every input runs on a thread with a civetweb worker's stack (fuzz.h).
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "proxy.h"

static void check_value(const char *v, size_t cap)
{
    size_t n = strnlen(v, cap);
    FUZZ_CHECK(n < cap);
    FUZZ_CHECK(!memchr(v, '\r', n) && !memchr(v, '\n', n));
}

static int fuzz_one(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    size_t end = gw_resp_head_end(in, size);
    if (end == 0) {
        for (size_t i = 3; i < size; i++)
            FUZZ_CHECK(memcmp(in + i - 3, "\r\n\r\n", 4) != 0);
        return 0;
    }
    FUZZ_CHECK(end >= 4 && end <= size && memcmp(in + end - 4, "\r\n\r\n", 4) == 0);
    for (size_t i = 3; i + 1 < end; i++)
        FUZZ_CHECK(memcmp(in + i - 3, "\r\n\r\n", 4) != 0);
    char *head = malloc(end);
    FUZZ_CHECK(head != NULL);
    memcpy(head, in, end);
    gw_fwd_response_t r;
    memset(&r, 0x5a, sizeof r); /* the parser must set what it reports */
    r.too_big = false;
    gw_resp_framing_t f;
    int rc = gw_resp_head_parse(head, end, &r, &f);
    if (rc == 0) {
        FUZZ_CHECK(r.status >= 200 && r.status <= 599);
        FUZZ_CHECK(f.head_len == end);
        FUZZ_CHECK(f.content_length <= GW_MAX_RESPONSE);
        if (r.status == 204 || r.status == 304)
            FUZZ_CHECK(f.content_length == 0);
        check_value(r.content_type, sizeof r.content_type);
        check_value(r.retry_after, sizeof r.retry_after);
        check_value(r.www_authenticate, sizeof r.www_authenticate);
        check_value(r.cache_control, sizeof r.cache_control);
        FUZZ_CHECK(!r.too_big);
    } else {
        FUZZ_CHECK(rc == CM_EPARSE || rc == CM_ETOOBIG);
        FUZZ_CHECK(r.status == 0);
        FUZZ_CHECK(r.too_big == (rc == CM_ETOOBIG));
    }
    /* A head cut short is never complete. */
    FUZZ_CHECK(gw_resp_head_end(head, end - 1) == 0);
    free(head);
    return 0;
}

FUZZ_ENTRY(fuzz_one)

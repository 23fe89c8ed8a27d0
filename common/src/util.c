#include "cm/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

static void die_oom(void)
{
    fputs("{\"level\":\"fatal\",\"msg\":\"out of memory\"}\n", stderr);
    abort();
}

void *cm_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        die_oom();
    return p;
}

void *cm_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        die_oom();
    return p;
}

void *cm_xreallocarray(void *p, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        die_oom();
    size_t bytes = n * size;
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q)
        die_oom();
    return q;
}

char *cm_xstrdup(const char *s)
{
    return s ? cm_xstrndup(s, strlen(s)) : NULL;
}

char *cm_xstrndup(const char *s, size_t len)
{
    if (len == SIZE_MAX)
        die_oom();
    char *p = cm_xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *cm_xasprintf(const char *fmt, ...)
{
    cm_buf_t b;
    cm_buf_init(&b);
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        die_oom();
    if ((size_t)n < sizeof tmp)
        return cm_xstrndup(tmp, (size_t)n);
    char *p = cm_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

/* ---- arena ---------------------------------------------------------------- */

/* A list of chunks; small requests share a chunk, large ones get their own. */
struct cm_arena_chunk {
    struct cm_arena_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

struct cm_arena {
    struct cm_arena_chunk *head;
};

enum { ARENA_CHUNK = 8192 };

cm_arena_t *cm_arena_new(void)
{
    return cm_xcalloc(1, sizeof(cm_arena_t));
}

void cm_arena_free(cm_arena_t *a)
{
    if (!a)
        return;
    struct cm_arena_chunk *c = a->head;
    while (c) {
        struct cm_arena_chunk *next = c->next;
        /* Request bodies live here, passwords included: wipe before reuse by malloc. */
        sodium_memzero(c->data, c->used);
        free(c);
        c = next;
    }
    free(a);
}

void *cm_arena_alloc(cm_arena_t *a, size_t size)
{
    const size_t align = _Alignof(max_align_t);
    if (size > SIZE_MAX - align)
        die_oom();
    size = (size + align - 1) / align * align;
    struct cm_arena_chunk *c = a->head;
    if (!c || c->cap - c->used < size) {
        size_t cap = size > ARENA_CHUNK ? size : ARENA_CHUNK;
        if (cap > SIZE_MAX - sizeof *c)
            die_oom();
        c = cm_xmalloc(sizeof *c + cap);
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += size;
    memset(p, 0, size);
    return p;
}

char *cm_arena_strndup(cm_arena_t *a, const char *s, size_t len)
{
    if (len == SIZE_MAX)
        die_oom();
    char *p = cm_arena_alloc(a, len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* ---- slices and buffers --------------------------------------------------- */

bool cm_slice_eq(cm_slice_t s, const char *str)
{
    size_t n = strlen(str);
    return s.len == n && (n == 0 || memcmp(s.ptr, str, n) == 0);
}

void cm_buf_init(cm_buf_t *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void cm_buf_dispose(cm_buf_t *b)
{
    free(b->data);
    cm_buf_init(b);
}

static void buf_reserve(cm_buf_t *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1)
        die_oom();
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    b->data = cm_xreallocarray(b->data, cap, 1);
    b->cap = cap;
}

void cm_buf_reserve(cm_buf_t *b, size_t extra)
{
    buf_reserve(b, extra);
}

void cm_buf_put_uint(cm_buf_t *b, unsigned long long v)
{
    char digits[24];
    size_t n = sizeof digits;
    do {
        digits[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    cm_buf_append(b, digits + n, sizeof digits - n);
}

void cm_buf_append(cm_buf_t *b, const void *data, size_t len)
{
    buf_reserve(b, len);
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void cm_buf_puts(cm_buf_t *b, const char *s)
{
    cm_buf_append(b, s, strlen(s));
}

void cm_buf_printf(cm_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *cm_buf_steal(cm_buf_t *b)
{
    char *p = b->data ? b->data : cm_xstrdup("");
    cm_buf_init(b);
    return p;
}

/* ---- numbers and time ------------------------------------------------------ */

int cm_strtonum(const char *s, long long min, long long max, long long *out)
{
    if (!s || !*s || !out || min > max)
        return CM_EPARSE;
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    if (*p < '0' || *p > '9')
        return CM_EPARSE;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (*end != '\0')
        return CM_EPARSE;
    if (errno == ERANGE || v < min || v > max)
        return CM_ERANGE;
    *out = v;
    return 0;
}

int64_t cm_now_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cm_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void cm_format_time(int64_t epoch_us, char out[32])
{
    time_t secs = (time_t)(epoch_us / 1000000);
    int ms = (int)((epoch_us % 1000000) / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", ms < 0 ? 0 : ms % 1000);
}

/* ---- ids ---------------------------------------------------------------------- */

void cm_hex_encode(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

/*
 * UUIDs name requests and rows, and every answered request makes one: a
 * getrandom() call each (libsodium's default source on Linux) would be a
 * system call per request. Each thread draws from its own block of the
 * same CSPRNG output instead, refilled every 32 UUIDs. UUIDs are public,
 * so the block holds nothing secret; the services never fork after start.
 */
enum { UUID_BYTES = 16, UUID_BLOCK = 32 * UUID_BYTES };
static _Thread_local uint8_t uuid_block[UUID_BLOCK];
static _Thread_local size_t uuid_left;

void cm_uuid_v4(char out[37])
{
    static const char hex[] = "0123456789abcdef";
    if (uuid_left < UUID_BYTES) {
        randombytes_buf(uuid_block, sizeof uuid_block);
        uuid_left = sizeof uuid_block;
    }
    uuid_left -= UUID_BYTES;
    uint8_t *b = uuid_block + uuid_left;
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    size_t o = 0;
    for (size_t i = 0; i < UUID_BYTES; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

bool cm_is_uuid(const char *s, size_t len)
{
    if (!s || len != 36)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? c != '-'
                 : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

/* ---- files ---------------------------------------------------------------- */

/* Grows a secret-holding buffer without leaving a copy behind in freed memory. */
static char *grow_wiped(char *buf, size_t used, size_t *cap, size_t need)
{
    size_t ncap = *cap ? *cap : 4096;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    char *nbuf = cm_xmalloc(ncap);
    if (used)
        memcpy(nbuf, buf, used);
    if (buf) {
        sodium_memzero(buf, *cap);
        free(buf);
    }
    *cap = ncap;
    return nbuf;
}

int cm_read_file(const char *path, size_t max, char **out, size_t *len)
{
    if (!out)
        return CM_EINVAL;
    *out = NULL;
    if (!path || max >= SIZE_MAX - 1)
        return CM_EINVAL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return CM_EIO;
    char *buf = NULL;
    size_t used = 0, cap = 0, n;
    int rc = 0;
    do {
        /* Always room for one byte and the NUL; reading past max means "too big". */
        if (cap - used < 2)
            buf = grow_wiped(buf, used, &cap, used + 2);
        n = fread(buf + used, 1, cap - used - 1, f);
        used += n;
        if (used > max)
            rc = CM_ETOOBIG;
    } while (rc == 0 && n > 0);
    if (rc == 0 && ferror(f))
        rc = CM_EIO;
    fclose(f);
    if (rc != 0) {
        sodium_memzero(buf, cap);
        free(buf);
        return rc;
    }
    buf[used] = '\0';
    if (len)
        *len = used;
    *out = buf;
    return 0;
}

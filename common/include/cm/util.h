/*
 * cm/util.h — memory, buffers, slices, numbers, time, ids and reading files.
 *
 * Allocation wrappers abort on out-of-memory and on size overflow, so a
 * caller never checks for NULL. Everything here is thread-safe.
 */
#ifndef CM_UTIL_H
#define CM_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/error.h"

/* ---- allocation ------------------------------------------------------- */

/** malloc that aborts on failure. Caller free()s. */
void *cm_xmalloc(size_t size);
/** calloc(n, size) that aborts on failure or when n * size overflows. */
void *cm_xcalloc(size_t n, size_t size);
/** realloc(p, n * size) that aborts on failure or overflow. */
void *cm_xreallocarray(void *p, size_t n, size_t size);
/** strdup that aborts on failure; NULL in, NULL out. Caller free()s. */
char *cm_xstrdup(const char *s);
/** Copies len bytes and adds a NUL. Caller free()s. */
char *cm_xstrndup(const char *s, size_t len);
/** printf into a new string. Caller free()s. For log and message text only: never SQL, JSON or
 * headers. */
char *cm_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- arena: memory that lives exactly as long as one request ---------- */

typedef struct cm_arena cm_arena_t;

/** Returns a new arena; free it with cm_arena_free(). */
cm_arena_t *cm_arena_new(void);
/** Wipes and frees the arena and everything allocated from it. NULL-safe. */
void cm_arena_free(cm_arena_t *a);
/** Returns size zeroed bytes owned by the arena (aligned for any type). */
void *cm_arena_alloc(cm_arena_t *a, size_t size);
/** Copies len bytes plus a NUL into the arena. */
char *cm_arena_strndup(cm_arena_t *a, const char *s, size_t len);

/* ---- slices: parsed, not yet validated input --------------------------- */

/** A borrowed run of bytes, not NUL-terminated. */
typedef struct cm_slice {
    const char *ptr;
    size_t len;
} cm_slice_t;

/** True if the slice equals the NUL-terminated string s. */
bool cm_slice_eq(cm_slice_t s, const char *str);

/* ---- growable buffer --------------------------------------------------- */

/** A growable byte buffer, always NUL-terminated. The caller owns the struct. */
typedef struct cm_buf {
    char *data;
    size_t len;
    size_t cap;
} cm_buf_t;

/** Initializes an empty buffer (no allocation yet). */
void cm_buf_init(cm_buf_t *b);
/** Frees the buffer's storage and empties it. */
void cm_buf_dispose(cm_buf_t *b);
/** Makes room for extra more bytes at once (what is about to be appended). Aborts on OOM. */
void cm_buf_reserve(cm_buf_t *b, size_t extra);
/** Appends len bytes. Aborts on out-of-memory or size overflow. */
void cm_buf_append(cm_buf_t *b, const void *data, size_t len);
/** Appends the decimal digits of v. */
void cm_buf_put_uint(cm_buf_t *b, unsigned long long v);
/** Appends a NUL-terminated string. */
void cm_buf_puts(cm_buf_t *b, const char *s);
/** Appends printf output. For text formats only (logs, Prometheus). */
void cm_buf_printf(cm_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Hands the storage to the caller (who free()s it) and empties the buffer. */
char *cm_buf_steal(cm_buf_t *b);

/* ---- numbers ------------------------------------------------------------ */

/**
 * Parses a base-10 integer from the whole of s, within [min, max].
 * Returns 0 and sets *out, or CM_EPARSE (not a number, trailing bytes) or
 * CM_ERANGE (outside the bounds). Never use atoi.
 */
CM_MUST_CHECK int cm_strtonum(const char *s, long long min, long long max, long long *out);

/* ---- time ---------------------------------------------------------------- */

/** Milliseconds from a monotonic clock, for timeouts and durations. */
int64_t cm_now_mono_ms(void);
/** Microseconds since the Unix epoch (wall clock). */
int64_t cm_now_us(void);
/** Writes an RFC 3339 UTC timestamp with milliseconds ("2026-11-27T10:00:00.123Z"). */
void cm_format_time(int64_t epoch_us, char out[32]);

/* ---- random ids and encodings --------------------------------------------- */

/** Writes a random RFC 4122 version 4 UUID in lower-case text form. */
void cm_uuid_v4(char out[37]);
/** True if s is a UUID in canonical text form (any version, any case). */
bool cm_is_uuid(const char *s, size_t len);
/** Hex-encodes len bytes into out (2 * len + 1 bytes). */
void cm_hex_encode(const uint8_t *in, size_t len, char *out);

/* ---- files ------------------------------------------------------------- */

/**
 * Reads a whole file of at most max bytes into a new NUL-terminated buffer
 * the caller free()s (wiping it first if it holds a secret; the read leaves
 * no other copy behind). *len (may be NULL) gets the size. Returns 0,
 * CM_EIO or CM_ETOOBIG (then nothing is returned).
 */
CM_MUST_CHECK int cm_read_file(const char *path, size_t max, char **out, size_t *len);

#endif

/*
 * cm/jsonwrite.h — JSON text written straight into a buffer, for the few
 * hot answers whose shape is fixed.
 *
 * jansson stays the project's JSON library: it parses every body, event and
 * token, and builds every other answer. Building a tree to print it once is
 * its slow call on a hot path: a page of 20 referrals is about 140 json_t
 * allocations (objects, hash tables, strings), then json_dump_callback
 * walks them and escapes each string one character at a time. Profiled on
 * GET /api/referrals/ (perf), that was about half of the referral
 * service's CPU for the page: 134 µs a page before, 66 µs after
 * (bench/referral, the first page at a million referrals). These functions
 * write the same bytes jansson's JSON_COMPACT writes (the unit test holds
 * them to it, string by string) into a cm_buf_t, copying runs of plain
 * bytes at once.
 */
#ifndef CM_JSONWRITE_H
#define CM_JSONWRITE_H

#include "cm/util.h"

#include <stdbool.h>
#include <stddef.h>

/**
 * Appends s (len bytes) as a JSON string literal, quoted and escaped as
 * jansson escapes it: \" \\ \b \f \n \r \t, other bytes below 0x20 as
 * \u00XX, everything else (UTF-8 included) as is. Returns 0, or CM_EINVAL
 * when s is not valid UTF-8 (jansson refuses such a string too); then b
 * holds a partial literal and the caller discards the whole text.
 */
int cm_json_put_stringn(cm_buf_t *b, const char *s, size_t len);

/** cm_json_put_stringn for a NUL-terminated s, or the literal null when s is NULL. */
int cm_json_put_string_or_null(cm_buf_t *b, const char *s);

/** Appends "key": (key is a literal the caller wrote: plain ASCII, nothing to escape). */
void cm_json_put_key(cm_buf_t *b, const char *key);

#endif

/*
 * http_client.h — a small blocking HTTP client (libcurl) for black-box tests.
 */
#ifndef LINKTR_HTTP_CLIENT_H
#define LINKTR_HTTP_CLIENT_H

#include <stddef.h>

#include <jansson.h>

/** One answer; t_resp_dispose() frees it. */
typedef struct t_resp {
    long status;
    char *body; /* NUL-terminated */
    size_t len;
    char *content_type; /* or NULL */
    char *headers;      /* all response header lines, raw */
    json_t *json;       /* parsed body when it is JSON, else NULL */
} t_resp_t;

/**
 * Sends method url with an optional body (content_type NULL → none) and
 * extra header lines (NULL-terminated array, may be NULL). Returns 0 and
 * fills *out, or -1 when the connection failed (status 0).
 */
int t_http(const char *method, const char *url, const char *content_type, const char *body,
           size_t len, const char *const *headers, t_resp_t *out);

/** POSTs a JSON value (borrowed) to url. */
int t_post_json(const char *url, json_t *body, const char *bearer, t_resp_t *out);

/** GET with an optional Bearer token. */
int t_get(const char *url, const char *bearer, t_resp_t *out);

/** Value of a response header (case-insensitive), new string or NULL. */
char *t_resp_header(const t_resp_t *r, const char *name);

void t_resp_dispose(t_resp_t *r);

/**
 * The URL of path on one of the integration stack's services: base_key is
 * a key of the stack's env file (GATEWAY_URL, AUTH_URL, REFERRAL_URL, ...;
 * the file is named by LINKTR_STACK_ENV). Returns a new string the
 * caller frees; aborts the test when the key is missing.
 */
char *t_url(const char *base_key, const char *path);

/** Fails the test unless r carries header name with exactly the value want. */
void t_assert_header(const t_resp_t *r, const char *name, const char *want);

/** Fails the test if r carries header name. */
void t_assert_no_header(const t_resp_t *r, const char *name);

#endif

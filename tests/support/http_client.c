#include "http_client.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "cm/util.h"
#include "testenv.h"

static size_t on_data(char *ptr, size_t size, size_t n, void *ud)
{
    cm_buf_append(ud, ptr, size * n);
    return size * n;
}

int t_http(const char *method, const char *url, const char *content_type, const char *body,
           size_t len, const char *const *headers, t_resp_t *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = curl_easy_init();
    if (!c)
        return -1;
    cm_buf_t data, hdrs;
    cm_buf_init(&data);
    cm_buf_init(&hdrs);
    struct curl_slist *list = NULL;
    if (content_type) {
        char *ct = cm_xasprintf("Content-Type: %s", content_type);
        list = curl_slist_append(list, ct);
        free(ct);
    }
    bool expect = false;
    for (size_t i = 0; headers && headers[i]; i++) {
        list = curl_slist_append(list, headers[i]);
        expect = expect || strncasecmp(headers[i], "Expect:", 7) == 0;
    }
    if (!expect) /* no 100-continue round trip unless the test asks for one */
        list = curl_slist_append(list, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &data);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hdrs);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
        char *ct = NULL;
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
        out->content_type = cm_xstrdup(ct);
    }
    curl_slist_free_all(list);
    curl_easy_cleanup(c);
    out->len = data.len;
    out->body = cm_buf_steal(&data);
    out->headers = cm_buf_steal(&hdrs);
    if (out->len)
        out->json = json_loadb(out->body, out->len, 0, NULL);
    return rc == CURLE_OK ? 0 : -1;
}

static const char *const *bearer_header(const char *bearer, char *buf, size_t n,
                                        const char *hdrs[2])
{
    if (!bearer)
        return NULL;
    snprintf(buf, n, "Authorization: Bearer %s", bearer);
    hdrs[0] = buf;
    hdrs[1] = NULL;
    return hdrs;
}

int t_post_json(const char *url, json_t *body, const char *bearer, t_resp_t *out)
{
    char *text = json_dumps(body, JSON_COMPACT);
    char auth[4200];
    const char *hdrs[2];
    int rc = t_http("POST", url, "application/json", text, strlen(text),
                    bearer_header(bearer, auth, sizeof auth, hdrs), out);
    free(text);
    return rc;
}

int t_get(const char *url, const char *bearer, t_resp_t *out)
{
    char auth[4200];
    const char *hdrs[2];
    return t_http("GET", url, NULL, NULL, 0, bearer_header(bearer, auth, sizeof auth, hdrs), out);
}

char *t_resp_header(const t_resp_t *r, const char *name)
{
    size_t n = strlen(name);
    for (const char *line = r->headers; line && *line;) {
        const char *end = strstr(line, "\r\n");
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len > n && line[n] == ':' && strncasecmp(line, name, n) == 0) {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            return cm_xstrndup(v, (size_t)(line + len - v));
        }
        line = end ? end + 2 : line + len;
    }
    return NULL;
}

void t_resp_dispose(t_resp_t *r)
{
    free(r->body);
    free(r->content_type);
    free(r->headers);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

char *t_url(const char *base_key, const char *path)
{
    char *base = t_env("LINKTR_STACK_ENV", base_key);
    char *u = cm_xasprintf("%s%s", base, path);
    free(base);
    return u;
}

void t_assert_header(const t_resp_t *r, const char *name, const char *want)
{
    char *v = t_resp_header(r, name);
    if (!v || strcmp(v, want) != 0)
        fail_msg("%s: want \"%s\", got \"%s\"", name, want, v ? v : "(none)");
    free(v);
}

void t_assert_no_header(const t_resp_t *r, const char *name)
{
    char *v = t_resp_header(r, name);
    if (v)
        fail_msg("unexpected header %s: %s", name, v);
    free(v);
}

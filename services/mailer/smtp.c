/* smtp.c — libcurl SMTP and the backoff schedule (see smtp.h). */
#include "smtp.h"

#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cm/util.h"

/* Feeds the message to curl's upload. */
typedef struct reader {
    const char *data;
    size_t left;
} reader_t;

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    reader_t *r = ud;
    size_t cap = size * n;
    size_t take = r->left < cap ? r->left : cap;
    memcpy(buf, r->data, take);
    r->data += take;
    r->left -= take;
    return take;
}

/* "<addr>" from "name <addr>" or "addr"; a new string the caller frees, NULL when malformed. */
static char *angle_addr(const char *s)
{
    const char *lt = strrchr(s, '<');
    const char *start = lt ? lt + 1 : s;
    size_t n = lt ? strcspn(start, ">") : strlen(s);
    if (n == 0 || (lt && start[n] != '>') || memchr(start, '\r', n) || memchr(start, '\n', n))
        return NULL;
    return cm_xasprintf("<%.*s>", (int)n, start);
}

/* Sorts curl's outcome into the codes of smtp.h. */
static int classify(CURLcode res, long reply)
{
    if (res == CURLE_OK)
        return 0;
    if (reply >= 500)
        return CM_EIO;
    if (reply >= 400)
        return CM_EBUSY;
    if (res == CURLE_LOGIN_DENIED)
        return CM_EIO;
    return CM_EUNAVAIL;
}

int mail_smtp_send(const mail_smtp_t *s, const char *from, const char *to, const char *msg,
                   size_t len)
{
    if (!s || !s->url || !from || !to || !msg)
        return CM_EINVAL;
    char *mfrom = angle_addr(from), *rcpt = angle_addr(to);
    CURL *c = curl_easy_init();
    struct curl_slist *rcpts = rcpt ? curl_slist_append(NULL, rcpt) : NULL;
    int rc = CM_EINVAL;
    if (!mfrom || !rcpts || !c)
        goto out;
    reader_t r = {msg, len};
    curl_easy_setopt(c, CURLOPT_URL, s->url);
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, mfrom);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpts);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &r);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(s->timeout_ms > 0 ? s->timeout_ms : 30000));
    curl_easy_setopt(c, CURLOPT_USE_SSL, (long)(s->starttls ? CURLUSESSL_ALL : CURLUSESSL_NONE));
    if (s->user)
        curl_easy_setopt(c, CURLOPT_USERNAME, s->user);
    if (s->password)
        curl_easy_setopt(c, CURLOPT_PASSWORD, s->password);
    CURLcode res = curl_easy_perform(c);
    long reply = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply);
    rc = classify(res, reply);
out:
    curl_slist_free_all(rcpts);
    curl_easy_cleanup(c);
    free(rcpt);
    free(mfrom);
    return rc;
}

int64_t mail_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint32_t rnd)
{
    if (attempt < 1)
        attempt = 1;
    int64_t d = base_ms;
    for (int i = 1; i < attempt && d < cap_ms; i++)
        d *= 2;
    if (d > cap_ms)
        d = cap_ms;
    int64_t half = d / 2;
    return half + (half > 0 ? (int64_t)(rnd % (uint32_t)(half + 1)) : 0);
}

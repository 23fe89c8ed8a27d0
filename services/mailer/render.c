/* render.c — templates to a multipart/alternative message (see render.h). */
#include "render.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

/* Bytes of UTF-8 per RFC 2047 encoded word: 45 → 60 base64 characters,
 * which with "=?UTF-8?B?" and "?=" stays under the 75-character limit. */
#define WORD_BYTES 45

const char *mail_template_get(const char *name)
{
    for (size_t i = 0; i < mail_template_files_count; i++)
        if (strcmp(mail_template_files[i].name, name) == 0)
            return mail_template_files[i].text;
    return NULL;
}

void mail_html_escape(const char *s, cm_buf_t *out)
{
    for (const char *p = s; *p; p++) {
        switch (*p) {
        case '&':
            cm_buf_puts(out, "&amp;");
            break;
        case '<':
            cm_buf_puts(out, "&lt;");
            break;
        case '>':
            cm_buf_puts(out, "&gt;");
            break;
        case '"':
            cm_buf_puts(out, "&quot;");
            break;
        case '\'':
            cm_buf_puts(out, "&#39;");
            break;
        default:
            cm_buf_append(out, p, 1);
        }
    }
}

/* Appends one "=?UTF-8?B?...?=" word for len bytes of s. */
static void encoded_word(const unsigned char *s, size_t len, cm_buf_t *out)
{
    char b64[sodium_base64_ENCODED_LEN(WORD_BYTES, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(b64, sizeof b64, s, len, sodium_base64_VARIANT_ORIGINAL);
    cm_buf_puts(out, "=?UTF-8?B?");
    cm_buf_puts(out, b64);
    cm_buf_puts(out, "?=");
}

int mail_header_encode(const char *s, cm_buf_t *out)
{
    bool ascii = true;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return CM_EPARSE;
        if (*p >= 0x80)
            ascii = false;
    }
    if (ascii) {
        cm_buf_puts(out, s);
        return 0;
    }
    const unsigned char *p = (const unsigned char *)s;
    size_t left = strlen(s);
    while (left > 0) {
        size_t n = left < WORD_BYTES ? left : WORD_BYTES;
        /* Never split a UTF-8 sequence between two words. */
        while (n < left && n > 1 && (p[n] & 0xC0) == 0x80)
            n--;
        encoded_word(p, n, out);
        p += n;
        left -= n;
        if (left > 0)
            cm_buf_puts(out, "\r\n "); /* folded: each word on its own line */
    }
    return 0;
}

static const char *field_value(const mail_field_t *fields, size_t n, const char *name,
                               size_t name_len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(fields[i].name) == name_len && memcmp(fields[i].name, name, name_len) == 0)
            return fields[i].value;
    return NULL;
}

int mail_expand(const char *tmpl, const mail_field_t *fields, size_t n, bool html, cm_buf_t *out)
{
    const char *p = tmpl;
    for (const char *open; (open = strstr(p, "{{")) != NULL;) {
        cm_buf_append(out, p, (size_t)(open - p));
        const char *close = strstr(open + 2, "}}");
        if (!close)
            return CM_EPARSE;
        const char *v = field_value(fields, n, open + 2, (size_t)(close - open - 2));
        if (!v)
            return CM_ENOTFOUND;
        if (strnlen(v, MAIL_MAX_FIELD + 1) > MAIL_MAX_FIELD)
            return CM_ETOOBIG;
        if (html)
            mail_html_escape(v, out);
        else
            cm_buf_puts(out, v);
        p = close + 2;
    }
    cm_buf_puts(out, p);
    return 0;
}

/* Appends s with every line ending (LF, CR or CRLF) made CRLF. */
static void append_crlf(const char *s, cm_buf_t *out)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\r' || *p == '\n') {
            cm_buf_puts(out, "\r\n");
            if (*p == '\r' && p[1] == '\n')
                p++;
        } else {
            cm_buf_append(out, p, 1);
        }
    }
}

/* An address goes into a header as is: refuse what would change the header. */
static bool address_ok(const char *s)
{
    if (!s || !*s)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* The domain of the From address, for Message-ID; "linktr.local" when none. */
static void message_id_domain(const char *from, cm_buf_t *out)
{
    const char *at = strrchr(from, '@');
    size_t n = at ? strcspn(at + 1, "> \t") : 0;
    if (n == 0)
        cm_buf_puts(out, "linktr.local");
    else
        cm_buf_append(out, at + 1, n);
}

static int render_headers(const mail_compose_t *c, const char *subject, const char *boundary,
                          cm_buf_t *out)
{
    char date[64], uuid[37];
    time_t t = (time_t)(c->date_us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    if (c->message_id && cm_is_uuid(c->message_id, strlen(c->message_id)))
        snprintf(uuid, sizeof uuid, "%s", c->message_id);
    else
        cm_uuid_v4(uuid);
    cm_buf_puts(out, "From: ");
    cm_buf_puts(out, c->from);
    cm_buf_puts(out, "\r\nTo: ");
    cm_buf_puts(out, c->to);
    cm_buf_puts(out, "\r\nSubject: ");
    int rc = mail_header_encode(subject, out);
    if (rc != 0)
        return rc;
    cm_buf_puts(out, "\r\nDate: ");
    cm_buf_puts(out, date);
    cm_buf_puts(out, "\r\nMessage-ID: <");
    cm_buf_puts(out, uuid);
    cm_buf_puts(out, "@");
    message_id_domain(c->from, out);
    cm_buf_puts(out, ">\r\nMIME-Version: 1.0\r\n");
    cm_buf_puts(out, "Content-Type: multipart/alternative; boundary=\"");
    cm_buf_puts(out, boundary);
    cm_buf_puts(out, "\"\r\n\r\n");
    return 0;
}

static void render_part(const char *boundary, const char *type, const char *body, cm_buf_t *out)
{
    cm_buf_puts(out, "--");
    cm_buf_puts(out, boundary);
    cm_buf_puts(out, "\r\nContent-Type: ");
    cm_buf_puts(out, type);
    cm_buf_puts(out, "; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
    append_crlf(body, out);
    cm_buf_puts(out, "\r\n");
}

/* Expands <template_name>.<ext> into out. */
static int expand_file(const mail_compose_t *c, const char *ext, bool html, cm_buf_t *out)
{
    char name[128];
    int n = snprintf(name, sizeof name, "%s.%s", c->template_name, ext);
    if (n < 0 || (size_t)n >= sizeof name)
        return CM_EINVAL;
    const char *tmpl = mail_template_get(name);
    if (!tmpl)
        return CM_ENOTFOUND;
    return mail_expand(tmpl, c->fields, c->nfields, html, out);
}

/* A buffer's text, "" while nothing was appended. */
static const char *buf_str(const cm_buf_t *b)
{
    return b->data ? b->data : "";
}

int mail_render(const mail_compose_t *c, cm_buf_t *out)
{
    if (!c || !c->template_name || !address_ok(c->from) || !address_ok(c->to))
        return CM_EINVAL;
    cm_buf_t subject, text, html;
    cm_buf_init(&subject);
    cm_buf_init(&text);
    cm_buf_init(&html);
    int rc = expand_file(c, "subject", false, &subject);
    if (rc == 0)
        rc = expand_file(c, "txt", false, &text);
    if (rc == 0)
        rc = expand_file(c, "html", true, &html);
    if (rc != 0)
        goto out;
    /* The subject file is one line; drop its trailing newline. */
    while (subject.len > 0 &&
           (subject.data[subject.len - 1] == '\n' || subject.data[subject.len - 1] == '\r'))
        subject.data[--subject.len] = '\0';
    uint8_t rnd[16];
    char boundary[64] = "=_linktr_";
    randombytes_buf(rnd, sizeof rnd);
    cm_hex_encode(rnd, sizeof rnd, boundary + strlen(boundary));
    rc = render_headers(c, buf_str(&subject), boundary, out);
    if (rc != 0)
        goto out;
    render_part(boundary, "text/plain", buf_str(&text), out);
    render_part(boundary, "text/html", buf_str(&html), out);
    cm_buf_puts(out, "--");
    cm_buf_puts(out, boundary);
    cm_buf_puts(out, "--\r\n");
out:
    cm_buf_dispose(&subject);
    cm_buf_dispose(&text);
    cm_buf_dispose(&html);
    return rc;
}

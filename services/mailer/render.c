/* render.c — templates to a multipart/alternative message (see render.h). */
#include "render.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sodium.h>

#include "cm/events.h"

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

/* ---- overrides from MAIL_TEMPLATES_DIR ------------------------------------------- */

struct mail_templates {
    char **text; /* one slot per built-in file: the override, or NULL */
    size_t n;
};

static void say(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || whylen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

static size_t builtin_index(const char *name)
{
    for (size_t i = 0; i < mail_template_files_count; i++)
        if (strcmp(mail_template_files[i].name, name) == 0)
            return i;
    return SIZE_MAX;
}

/* True if the placeholder p[0..len) occurs as "{{p}}" in tmpl. */
static bool has_placeholder(const char *tmpl, const char *p, size_t len)
{
    for (const char *at = tmpl; (at = strstr(at, "{{")) != NULL; at += 2)
        if (strncmp(at + 2, p, len) == 0 && strncmp(at + 2 + len, "}}", 2) == 0)
            return true;
    return false;
}

/*
 * An override may use only the placeholders of its built-in counterpart:
 * those are the fields the mailer fills for that template, so anything
 * else would fail every mail of it at send time. Returns 0 or CM_EINVAL.
 */
static int check_override(const char *name, const char *text, const char *builtin, char *why,
                          size_t whylen)
{
    size_t n = strlen(name), len = strlen(text);
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--; /* a final line ending is not a second line */
    if (n > 8 && strcmp(name + n - 8, ".subject") == 0 && strcspn(text, "\r\n") < len) {
        say(why, whylen, "%s: a subject is one line", name);
        return CM_EINVAL;
    }
    for (const char *open = text; (open = strstr(open, "{{")) != NULL;) {
        const char *close = strstr(open + 2, "}}");
        if (!close) {
            say(why, whylen, "%s: a \"{{\" is never closed", name);
            return CM_EINVAL;
        }
        size_t plen = (size_t)(close - open - 2);
        if (!has_placeholder(builtin, open + 2, plen)) {
            say(why, whylen, "%s: unknown placeholder {{%.*s}}", name, (int)(plen > 64 ? 64 : plen),
                open + 2);
            return CM_EINVAL;
        }
        open = close + 2;
    }
    return 0;
}

/* Reads one file of dir into t. Returns 0, or a code with why filled. */
static int load_one(mail_templates_t *t, const char *dir, const char *name, char *why,
                    size_t whylen)
{
    size_t i = builtin_index(name);
    if (i == SIZE_MAX) {
        say(why, whylen, "%s: not the name of a template file (e.g. verify_email.html)", name);
        return CM_EINVAL;
    }
    char *path = cm_xasprintf("%s/%s", dir, name);
    char *text = NULL;
    size_t len = 0;
    int rc = cm_read_file(path, MAIL_MAX_TEMPLATE_FILE, &text, &len);
    free(path);
    if (rc != 0) {
        say(why, whylen, "%s: %s", name,
            rc == CM_ETOOBIG ? "larger than 64 KiB" : "cannot be read");
        return CM_EINVAL;
    }
    if (strlen(text) != len) {
        say(why, whylen, "%s: holds a NUL byte", name);
        free(text);
        return CM_EINVAL;
    }
    rc = check_override(name, text, mail_template_files[i].text, why, whylen);
    if (rc != 0) {
        free(text);
        return rc;
    }
    free(t->text[i]);
    t->text[i] = text;
    return 0;
}

static bool is_regular(const char *dir, const char *name)
{
    char *path = cm_xasprintf("%s/%s", dir, name);
    struct stat st;
    bool ok = stat(path, &st) == 0 && S_ISREG(st.st_mode);
    free(path);
    return ok;
}

mail_templates_t *mail_templates_load(const char *dir, char *why, size_t whylen, int *err)
{
    mail_templates_t *t = cm_xcalloc(1, sizeof *t);
    t->n = mail_template_files_count;
    t->text = cm_xcalloc(t->n ? t->n : 1, sizeof *t->text);
    *err = 0;
    if (!dir || !*dir)
        return t;
    DIR *d = opendir(dir);
    if (!d) {
        say(why, whylen, "%s: cannot open the folder", dir);
        *err = CM_EIO;
        mail_templates_free(t);
        return NULL;
    }
    for (struct dirent *e; *err == 0 && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.' || !is_regular(dir, e->d_name))
            continue;
        *err = load_one(t, dir, e->d_name, why, whylen);
    }
    closedir(d);
    if (*err != 0) {
        mail_templates_free(t);
        return NULL;
    }
    return t;
}

void mail_templates_free(mail_templates_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->text[i]);
    free(t->text);
    free(t);
}

const char *mail_templates_get(const mail_templates_t *t, const char *name)
{
    size_t i = builtin_index(name);
    if (i == SIZE_MAX)
        return NULL;
    return t && t->text[i] ? t->text[i] : mail_template_files[i].text;
}

size_t mail_templates_overridden(const mail_templates_t *t)
{
    size_t n = 0;
    for (size_t i = 0; t && i < t->n; i++)
        n += t->text[i] != NULL;
    return n;
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
    cm_buf_puts(out, ">\r\n");
    if (cm_event_correlation_valid(c->correlation_id)) { /* [A-Za-z0-9._-]: safe in a header */
        cm_buf_puts(out, "X-Request-Id: ");
        cm_buf_puts(out, c->correlation_id);
        cm_buf_puts(out, "\r\n");
    }
    cm_buf_puts(out, "MIME-Version: 1.0\r\n");
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
    const char *tmpl = mail_templates_get(c->templates, name);
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

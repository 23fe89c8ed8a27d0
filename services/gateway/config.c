#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "cm/http.h"
#include "cm/util.h"
#include "cm/netaddr.h"

static const char *const RATE_NAMES[GW_RL_COUNT] = {"login", "register", "forgot-password",
                                                    "other"};

/* Defaults for a public deployment: generous for reads, tight for credentials and mail. */
static const gw_rate_t RATE_DEFAULTS[GW_RL_COUNT] = {
    [GW_RL_LOGIN] = {20, 60},
    [GW_RL_REGISTER] = {10, 60},
    [GW_RL_FORGOT] = {5, 60},
    [GW_RL_OTHER] = {600, 60},
};

const char *gw_rate_class_name(gw_rate_class_t c)
{
    return (unsigned)c < GW_RL_COUNT ? RATE_NAMES[c] : "unknown";
}

void gw_list_dispose(gw_list_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

int gw_list_parse(const char *value, gw_list_t *out)
{
    memset(out, 0, sizeof *out);
    if (!value)
        return CM_EPARSE;
    const char *p = value;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *s = p;
        while (len > 0 && is_space(*s)) {
            s++;
            len--;
        }
        while (len > 0 && is_space(s[len - 1]))
            len--;
        if (len == 0) {
            gw_list_dispose(out);
            return CM_EPARSE;
        }
        out->items = cm_xreallocarray(out->items, out->n + 1, sizeof *out->items);
        out->items[out->n++] = cm_xstrndup(s, len);
        if (!end)
            return 0;
        p = end + 1;
    }
}

/* One RATE_LIMITS entry "class=N/S". */
static int parse_rate_entry(const char *item, gw_rate_t rates[GW_RL_COUNT])
{
    const char *eq = strchr(item, '=');
    const char *slash = eq ? strchr(eq, '/') : NULL;
    if (!eq || !slash)
        return CM_EPARSE;
    int cls = -1;
    for (int i = 0; i < GW_RL_COUNT; i++)
        if (strlen(RATE_NAMES[i]) == (size_t)(eq - item) &&
            strncmp(item, RATE_NAMES[i], (size_t)(eq - item)) == 0)
            cls = i;
    char *n = cm_xstrndup(eq + 1, (size_t)(slash - eq - 1));
    long long burst = 0, period = 0;
    int rc = cls < 0 ? CM_EPARSE : cm_strtonum(n, 1, 1000000, &burst);
    if (rc == 0)
        rc = cm_strtonum(slash + 1, 1, 86400, &period);
    free(n);
    if (rc != 0)
        return CM_EPARSE;
    rates[cls].burst = burst;
    rates[cls].period_s = period;
    return 0;
}

int gw_rate_spec_parse(const char *spec, bool *on, gw_rate_t rates[GW_RL_COUNT])
{
    if (!spec || strcasecmp(spec, "on") == 0) {
        *on = true;
        return 0;
    }
    if (strcasecmp(spec, "off") == 0) {
        *on = false;
        return 0;
    }
    gw_list_t l;
    if (gw_list_parse(spec, &l) != 0)
        return CM_EPARSE;
    gw_rate_t tmp[GW_RL_COUNT];
    memcpy(tmp, rates, sizeof tmp);
    int rc = 0;
    for (size_t i = 0; i < l.n && rc == 0; i++)
        rc = parse_rate_entry(l.items[i], tmp);
    gw_list_dispose(&l);
    if (rc != 0)
        return CM_EPARSE;
    memcpy(rates, tmp, sizeof tmp);
    *on = true;
    return 0;
}

/* An upstream list: http(s) base URLs; a trailing slash is dropped so paths append cleanly. */
static void load_urls(cm_cfg_t *c, const char *name, const char *def, gw_list_t *out)
{
    char *v = cm_cfg_str(c, name, def);
    if (gw_list_parse(v, out) != 0) {
        cm_cfg_error(c, name, "must be a comma-separated list of http:// URLs");
        free(v);
        return;
    }
    free(v);
    for (size_t i = 0; i < out->n; i++) {
        char *u = out->items[i];
        size_t len = strlen(u);
        bool scheme = strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0;
        if (!scheme || len < 9 || strpbrk(u, "?# \"") != NULL) {
            cm_cfg_error(c, name, "\"%.80s\" is not an http:// or https:// base URL", u);
            continue;
        }
        while (len > 0 && u[len - 1] == '/')
            u[--len] = '\0';
    }
}

/* Addresses and CIDR ranges of proxies whose X-Forwarded-For is believed. */
static void load_proxies(cm_cfg_t *c, gw_list_t *out)
{
    char *v = cm_cfg_str(c, "TRUSTED_PROXIES", NULL);
    if (v && gw_list_parse(v, out) != 0)
        cm_cfg_error(c, "TRUSTED_PROXIES",
                     "must be a comma-separated list of IP addresses or CIDR ranges");
    for (size_t i = 0; i < out->n; i++) {
        int rc = cm_cidr_check(out->items[i]);
        if (rc == CM_ERANGE)
            cm_cfg_error(c, "TRUSTED_PROXIES",
                         "\"%.60s\" has address bits set after its prefix length", out->items[i]);
        else if (rc != 0)
            cm_cfg_error(c, "TRUSTED_PROXIES",
                         "\"%.60s\" is not an IP address or CIDR range (like 10.0.0.0/8 or "
                         "fd00::/8)",
                         out->items[i]);
    }
    free(v);
}

static void load_origins(cm_cfg_t *c, gw_list_t *out)
{
    char *v = cm_cfg_str(c, "CORS_ORIGINS", NULL);
    if (v && gw_list_parse(v, out) != 0)
        cm_cfg_error(c, "CORS_ORIGINS", "must be a comma-separated list of origins");
    for (size_t i = 0; i < out->n; i++) {
        const char *o = out->items[i];
        bool ok = (strncmp(o, "http://", 7) == 0 || strncmp(o, "https://", 8) == 0) &&
                  strpbrk(o, " \"\r\n") == NULL && o[strlen(o) - 1] != '/';
        if (!ok)
            cm_cfg_error(c, "CORS_ORIGINS", "\"%.60s\" is not an origin (scheme://host[:port])", o);
    }
    free(v);
}

void gw_rate_divide(gw_rate_t rates[GW_RL_COUNT], long long replicas)
{
    if (replicas <= 1)
        return;
    for (int i = 0; i < GW_RL_COUNT; i++) {
        long long burst = rates[i].burst, period = rates[i].period_s;
        long long share = burst / replicas > 0 ? burst / replicas : 1;
        /* share tokens per period × share × replicas / burst: the rate
         * burst / (replicas × period), the period rounded up (never faster). */
        long long stretched = (period * share * replicas + burst - 1) / burst;
        rates[i] = (gw_rate_t){.burst = share, .period_s = stretched};
    }
}

static void load_limits(cm_cfg_t *c, gw_config_t *cfg)
{
    memcpy(cfg->rates, RATE_DEFAULTS, sizeof cfg->rates);
    char *v = cm_cfg_str(c, "RATE_LIMITS", "on");
    if (gw_rate_spec_parse(v, &cfg->rate_limits, cfg->rates) != 0)
        cm_cfg_error(c, "RATE_LIMITS",
                     "must be on, off, or a list like login=20/60,register=10/60,"
                     "forgot-password=5/60,other=600/60 (N requests per S seconds)");
    free(v);
    /* Buckets live in each replica's memory: the limits above are for the
     * whole deployment, and each of RATE_LIMIT_REPLICAS replicas enforces its share. */
    cfg->rate_replicas = (int)cm_cfg_int(c, "RATE_LIMIT_REPLICAS", 1, 1, 1000);
    gw_rate_divide(cfg->rates, cfg->rate_replicas);
}

/* The pages' settings (pages.h). A short secret would make forged CSRF tokens guessable. */
static void load_pages(cm_cfg_t *c, gw_config_t *cfg)
{
    static const char *const schemes[] = {"http", "https", NULL};
    cfg->pages_secret = cm_cfg_str(c, "PAGES_SECRET", NULL);
    if (cfg->pages_secret && strlen(cfg->pages_secret) < 32)
        cm_cfg_error(c, "PAGES_SECRET", "must be at least 32 characters (or unset)");
    cfg->signup_url = cm_cfg_url(c, "SIGNUP_URL", NULL, schemes);
    if (cfg->signup_url && strpbrk(cfg->signup_url, "#\" \r\n"))
        cm_cfg_error(c, "SIGNUP_URL", "must be a URL without a fragment, spaces or quotes");
    cfg->attribution_days = (int)cm_cfg_int(c, "REFERRAL_ATTRIBUTION_DAYS", 30, 1, 365);
}

int gw_config_load(gw_config_t *cfg)
{
    /* 128 workers: an idle kept-alive connection holds one (see README, slow clients). */
    static const cm_service_defaults_t defaults = {
        .port = 8000, .http_threads = 128, .keepalive_timeout_ms = CM_HTTP_KEEPALIVE_TIMEOUT_MS};
    memset(cfg, 0, sizeof *cfg);
    cm_cfg_t c;
    cm_cfg_init(&c, "gateway");
    cm_cfg_service(&c, &defaults, &cfg->svc);
    load_urls(&c, "AUTH_URL", "http://127.0.0.1:8001", &cfg->auth_urls);
    load_urls(&c, "REFERRAL_URL", "http://127.0.0.1:8002", &cfg->referral_urls);
    cm_cfg_jwt(&c, true, &cfg->jwt);
    cfg->connect_timeout_ms = (int)cm_cfg_int(&c, "UPSTREAM_CONNECT_TIMEOUT_MS", 1000, 1, 60000);
    cfg->upstream_timeout_ms = (int)cm_cfg_int(&c, "UPSTREAM_TIMEOUT_MS", 10000, 1, 600000);
    /* At most the upstream's worker threads (referral has 8): see proxy.h. */
    cfg->upstream_max_conns = (int)cm_cfg_int(&c, "UPSTREAM_MAX_CONNECTIONS", 8, 1, 1024);
    load_limits(&c, cfg);
    /* A /64 is what one subscriber gets (RFC 6177): keying by /128 would give each a new bucket per
     * address. */
    cfg->ipv6_prefix = (int)cm_cfg_int(&c, "RATE_LIMIT_IPV6_PREFIX", 64, 32, 128);
    load_proxies(&c, &cfg->trusted_proxies);
    load_origins(&c, &cfg->cors_origins);
    cfg->jwks_refresh = cm_cfg_bool(&c, "JWKS_REFRESH", true);
    load_pages(&c, cfg);
    return cm_cfg_finish(&c);
}

void gw_config_dispose(gw_config_t *cfg)
{
    if (!cfg)
        return;
    cm_service_config_dispose(&cfg->svc);
    cm_jwt_config_dispose(&cfg->jwt);
    gw_list_dispose(&cfg->auth_urls);
    gw_list_dispose(&cfg->referral_urls);
    gw_list_dispose(&cfg->trusted_proxies);
    gw_list_dispose(&cfg->cors_origins);
    if (cfg->pages_secret)
        sodium_memzero(cfg->pages_secret, strlen(cfg->pages_secret));
    free(cfg->pages_secret);
    free(cfg->signup_url);
    memset(cfg, 0, sizeof *cfg);
}

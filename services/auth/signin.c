/* User agent classes and network keys of sessions (see signin.h). */
#include "signin.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "cm/netaddr.h"

/* True when needle occurs in the first n bytes of s. */
static bool has(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; k <= n && i + k <= n; i++)
        if (memcmp(s + i, needle, k) == 0)
            return true;
    return false;
}

/* One pattern → name row; the first row that matches wins, so the order matters. */
typedef struct ua_rule {
    const char *needle;
    const char *name;
} ua_rule_t;

/*
 * Browsers built on Chrome name Chrome too, and Chrome names Safari: the
 * more specific tokens come first (Edge, Opera, Samsung before Chrome;
 * Chrome before Safari).
 */
static const ua_rule_t BROWSERS[] = {
    {"Edg/", "Edge"},        {"EdgA/", "Edge"},
    {"EdgiOS/", "Edge"},     {"Edge/", "Edge"},
    {"OPR/", "Opera"},       {"OPiOS/", "Opera"},
    {"Opera", "Opera"},      {"SamsungBrowser/", "Samsung Internet"},
    {"Firefox/", "Firefox"}, {"FxiOS/", "Firefox"},
    {"CriOS/", "Chrome"},    {"Chromium/", "Chrome"},
    {"Chrome/", "Chrome"},   {"Safari/", "Safari"},
};

/* Android says Linux and iOS says "like Mac OS X": those come first. */
static const ua_rule_t SYSTEMS[] = {
    {"Android", "Android"}, {"iPhone", "iOS"},      {"iPad", "iOS"},        {"iPod", "iOS"},
    {"CrOS", "ChromeOS"},   {"Windows", "Windows"}, {"Macintosh", "macOS"}, {"Mac OS X", "macOS"},
    {"Linux", "Linux"},     {"X11", "Linux"},
};

/* Every "<browser> on <system>" pair, so the classifier returns static storage. */
static const char *const BROWSER_NAMES[] = {"Edge",    "Opera",  "Samsung Internet",
                                            "Firefox", "Chrome", "Safari"};
static const char *const SYSTEM_NAMES[] = {"Android", "iOS",   "ChromeOS",
                                           "Windows", "macOS", "Linux"};
#define NB (sizeof BROWSER_NAMES / sizeof BROWSER_NAMES[0])
#define NS (sizeof SYSTEM_NAMES / sizeof SYSTEM_NAMES[0])
static const char *const PAIRS[NB][NS] = {
#define ROW(b)                                                                                     \
    {                                                                                              \
        b " on Android", b " on iOS", b " on ChromeOS", b " on Windows", b " on macOS",            \
            b " on Linux"                                                                          \
    }
    ROW("Edge"),    ROW("Opera"),  ROW("Samsung Internet"),
    ROW("Firefox"), ROW("Chrome"), ROW("Safari"),
#undef ROW
};

static const char *first_match(const ua_rule_t *rules, size_t n, const char *ua, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (has(ua, len, rules[i].needle))
            return rules[i].name;
    return NULL;
}

static size_t index_of(const char *const *names, size_t n, const char *name)
{
    size_t i = 0;
    while (i < n && strcmp(names[i], name) != 0)
        i++;
    return i;
}

/* Crawlers often claim a browser as well: they are "Other", never a person's browser. */
static bool is_robot(const char *ua, size_t len)
{
    return has(ua, len, "bot") || has(ua, len, "Bot") || has(ua, len, "spider") ||
           has(ua, len, "crawler") || has(ua, len, "HeadlessChrome");
}

const char *auth_ua_class(const char *ua)
{
    size_t len = ua ? strnlen(ua, AUTH_UA_SCAN_MAX) : 0;
    if (len == 0)
        return "Other";
    if (len >= 5 && memcmp(ua, "curl/", 5) == 0)
        return "curl";
    if (len >= 5 && memcmp(ua, "Wget/", 5) == 0)
        return "Wget";
    /* Every browser since the 1990s starts with "Mozilla/"; libraries and bots mostly do not. */
    if (len < 8 || memcmp(ua, "Mozilla/", 8) != 0 || is_robot(ua, len))
        return "Other";
    const char *browser = first_match(BROWSERS, sizeof BROWSERS / sizeof BROWSERS[0], ua, len);
    if (!browser)
        return "Other";
    const char *system = first_match(SYSTEMS, sizeof SYSTEMS / sizeof SYSTEMS[0], ua, len);
    size_t b = index_of(BROWSER_NAMES, NB, browser);
    if (!system)
        return BROWSER_NAMES[b];
    return PAIRS[b][index_of(SYSTEM_NAMES, NS, system)];
}

void auth_net_key(const char *ip, char out[AUTH_NET_KEY_MAX])
{
    cm_ip_t a;
    char text[CM_IP_TEXT_MAX];
    snprintf(out, AUTH_NET_KEY_MAX, "unknown");
    if (!ip || strnlen(ip, CM_IP_TEXT_MAX) >= CM_IP_TEXT_MAX || !cm_ip_parse(ip, &a))
        return;
    bool v4 = a.family == AF_INET;
    /* Keep the network bits, zero the host bits: /24 of IPv4, /64 of IPv6. */
    memset(a.addr + (v4 ? 3 : 8), 0, v4 ? 1 : 8);
    if (cm_ip_format(&a, text, sizeof text) != 0)
        return;
    snprintf(out, AUTH_NET_KEY_MAX, "%s/%d", text, v4 ? 24 : 64);
}

/*
 * netaddr.c — IP addresses and ranges as text (see cm/netaddr.h): the one
 * place that parses them, so the gateway's trusted proxies, its rate-limit
 * keys and auth's trusted gateways agree on what an address is.
 */
#include "cm/netaddr.h"

#include <arpa/inet.h>
#include <string.h>

bool cm_ip_parse(const char *s, cm_ip_t *out)
{
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, s, out->addr) == 1) {
        out->family = AF_INET;
        return true;
    }
    struct in6_addr a6;
    if (inet_pton(AF_INET6, s, &a6) != 1)
        return false;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a6.s6_addr, mapped, 12) == 0) {
        out->family = AF_INET;
        memcpy(out->addr, a6.s6_addr + 12, 4);
    } else {
        out->family = AF_INET6;
        memcpy(out->addr, a6.s6_addr, 16);
    }
    return true;
}

bool cm_ip_valid(const char *s)
{
    cm_ip_t b;
    return s && cm_ip_parse(s, &b);
}

/* An address range: family, network address and prefix length in bits. */
typedef struct ipnet {
    cm_ip_t net;
    unsigned prefix;
} ipnet_t;

/* Reads a prefix length: 1 to 3 decimal digits, at most max. */
static bool prefix_parse(const char *s, unsigned max, unsigned *out)
{
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n > 3 || s[n] != '\0')
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (unsigned)(s[i] - '0');
    *out = v;
    return v <= max;
}

/* True when the bits of a[0..len) after the first bits bits are all zero. */
static bool host_bits_zero(const unsigned char *a, size_t len, unsigned bits)
{
    for (size_t i = bits / 8; i < len; i++) {
        unsigned char mask = i == bits / 8 ? (unsigned char)(0xffu >> (bits % 8)) : 0xffu;
        if (a[i] & mask)
            return false;
    }
    return true;
}

/*
 * Parses "address" or "address/prefix". An address alone is a range of one
 * (/32, /128). An IPv4-mapped IPv6 range (::ffff:a.b.c.d/96 or longer) is
 * the IPv4 range it maps, since mapped addresses are compared as IPv4.
 */
static int net_parse(const char *s, ipnet_t *out)
{
    char text[INET6_ADDRSTRLEN];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen == 0 || alen >= sizeof text)
        return CM_EPARSE;
    memcpy(text, s, alen);
    text[alen] = '\0';
    bool v6_text = strchr(text, ':') != NULL;
    if (!cm_ip_parse(text, &out->net))
        return CM_EPARSE;
    unsigned max = v6_text ? 128 : 32;
    out->prefix = max;
    if (slash && !prefix_parse(slash + 1, max, &out->prefix))
        return CM_EPARSE;
    if (v6_text && out->net.family == AF_INET) {
        if (out->prefix < 96) /* wider than the mapped block: an IPv6 range */
            return CM_EPARSE;
        out->prefix -= 96;
    }
    size_t len = out->net.family == AF_INET ? 4 : 16;
    return host_bits_zero(out->net.addr, len, out->prefix) ? 0 : CM_ERANGE;
}

int cm_cidr_check(const char *s)
{
    ipnet_t n;
    return s ? net_parse(s, &n) : CM_EPARSE;
}

/* True when the first bits bits of a and b agree. */
static bool prefix_equal(const unsigned char *a, const unsigned char *b, unsigned bits)
{
    size_t full = bits / 8;
    if (memcmp(a, b, full) != 0)
        return false;
    if (bits % 8 == 0)
        return true;
    unsigned char mask = (unsigned char)(0xffu << (8 - bits % 8));
    return ((a[full] ^ b[full]) & mask) == 0;
}

static bool net_contains(const ipnet_t *n, const cm_ip_t *a)
{
    return a->family == n->net.family && prefix_equal(a->addr, n->net.addr, n->prefix);
}

bool cm_cidr_match(const char *ip, const char *cidr)
{
    cm_ip_t a;
    ipnet_t n;
    return ip && cidr && cm_ip_parse(ip, &a) && net_parse(cidr, &n) == 0 && net_contains(&n, &a);
}

bool cm_ip_in_ranges(const char *ip, char *const *ranges, size_t n)
{
    cm_ip_t a;
    ipnet_t net;
    if (!ip || !cm_ip_parse(ip, &a))
        return false;
    for (size_t i = 0; i < n; i++)
        if (ranges[i] && net_parse(ranges[i], &net) == 0 && net_contains(&net, &a))
            return true;
    return false;
}

int cm_ip_format(const cm_ip_t *ip, char *buf, size_t cap)
{
    if (!ip || !buf || cap < CM_IP_TEXT_MAX ||
        !inet_ntop(ip->family, ip->addr, buf, (socklen_t)cap))
        return CM_EINVAL;
    return 0;
}

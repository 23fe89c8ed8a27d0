/*
 * clientaddr.c — who the client is (see clientaddr.h): the gateway alone
 * decides it from the peer and X-Forwarded-For, and passes it on.
 */
#include "clientaddr.h"

#include <string.h>

#include "cm/netaddr.h"

bool gw_ip_trusted(const char *ip, const gw_list_t *trusted)
{
    return cm_ip_in_ranges(ip, trusted->items, trusted->n);
}

/*
 * The index of the client in a fully valid chain: the rightmost entry that
 * is not a trusted proxy (the leftmost if all are). -1 when an entry is not
 * an IP address or the chain is empty.
 */
static long chain_client(const gw_list_t *chain, const gw_list_t *trusted)
{
    for (size_t i = 0; i < chain->n; i++)
        if (!cm_ip_valid(chain->items[i]))
            return -1;
    for (size_t i = chain->n; i > 0; i--)
        if (!gw_ip_trusted(chain->items[i - 1], trusted))
            return (long)(i - 1);
    return chain->n ? 0 : -1;
}

/* The address in canonical text (so one client is one rate-limit key), in the arena. */
static const char *canonical_ip(cm_arena_t *a, const char *ip)
{
    cm_ip_t b;
    char text[CM_IP_TEXT_MAX];
    if (!cm_ip_parse(ip, &b) || cm_ip_format(&b, text, sizeof text) != 0)
        return cm_arena_strndup(a, ip, strlen(ip));
    return cm_arena_strndup(a, text, strlen(text));
}

void gw_client_addr(cm_arena_t *a, const char *peer, const char *incoming_xff,
                    const gw_list_t *trusted, const char **client_ip, const char **xff)
{
    *client_ip = canonical_ip(a, peer);
    *xff = *client_ip;
    if (!incoming_xff || !gw_ip_trusted(peer, trusted) ||
        strnlen(incoming_xff, GW_MAX_XFF + 1) > GW_MAX_XFF)
        return;
    gw_list_t chain;
    if (gw_list_parse(incoming_xff, &chain) != 0)
        return;
    long client = chain_client(&chain, trusted);
    if (client >= 0) {
        *client_ip = canonical_ip(a, chain.items[client]);
        /* Entries left of the client came from the client itself: unverifiable, dropped,
         * so a service reading the first entry gets the address we decided on. Every
         * entry is written canonical, the client exactly as X-Real-IP carries it, so
         * the two headers never name one address in two spellings. */
        cm_buf_t b;
        cm_buf_init(&b);
        cm_buf_puts(&b, *client_ip);
        for (size_t i = (size_t)client + 1; i < chain.n; i++) {
            cm_buf_puts(&b, ", ");
            cm_buf_puts(&b, canonical_ip(a, chain.items[i]));
        }
        cm_buf_puts(&b, ", ");
        cm_buf_puts(&b, canonical_ip(a, peer));
        *xff = cm_arena_strndup(a, b.data, b.len);
        cm_buf_dispose(&b);
    }
    gw_list_dispose(&chain);
}

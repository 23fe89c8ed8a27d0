/*
 * jsonscan.c — one linear pass over untrusted JSON that bounds its nesting
 * depth and size before a recursive parser runs (see cm/jsonscan.h).
 */
#include "cm/jsonscan.h"

#include <stdbool.h>

int cm_json_scan(const char *bytes, size_t len, size_t max_bytes, int max_depth, size_t *where)
{
    if (where)
        *where = len;
    if (len > max_bytes)
        return CM_ETOOBIG;
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = bytes[i];
        if (in_string) {
            /* An escape hides the next byte, so "\"" and "\\" do not end or open anything. */
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth) {
                if (where)
                    *where = i;
                return CM_ERANGE;
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return 0;
}

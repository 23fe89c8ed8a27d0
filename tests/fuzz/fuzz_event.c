/*
 * fuzz_event.c — cm_event_parse, the envelope parser every Kafka consumer
 * runs on message values it did not produce.
 *
 * Checks beyond memory safety: an accepted envelope holds a canonical UUID,
 * a type and source of the documented alphabets, a version >= 1 and a data
 * object; re-serializing what was parsed parses again to the same fields.
 */
#include <string.h>

#include <jansson.h>

#include "cm/events.h"
#include "cm/util.h"
#include "fuzz.h"

static bool only(const char *s, const char *alphabet)
{
    return s[0] != '\0' && strspn(s, alphabet) == strlen(s);
}

static void check_accepted(const cm_event_t *ev)
{
    FUZZ_CHECK(cm_is_uuid(ev->id, strlen(ev->id)));
    FUZZ_CHECK(only(ev->type, "abcdefghijklmnopqrstuvwxyz."));
    FUZZ_CHECK(only(ev->source, "abcdefghijklmnopqrstuvwxyz0123456789_-"));
    FUZZ_CHECK(ev->version >= 1);
    FUZZ_CHECK(strlen(ev->occurred_at) >= 20);
    FUZZ_CHECK(json_is_object(ev->data));
}

/* Serializes the parsed envelope and parses it again: same fields. */
static void check_round_trip(const cm_event_t *ev)
{
    json_t *o = json_pack("{s:s, s:s, s:i, s:s, s:s, s:O}", "id", ev->id, "type", ev->type,
                          "version", ev->version, "occurred_at", ev->occurred_at, "source",
                          ev->source, "data", ev->data);
    FUZZ_CHECK(o != NULL);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    FUZZ_CHECK(text != NULL);
    cm_event_t again;
    int rc = cm_event_parse(text, strlen(text), &again);
    free(text);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(strcmp(again.id, ev->id) == 0 && strcmp(again.type, ev->type) == 0);
    FUZZ_CHECK(again.version == ev->version && strcmp(again.source, ev->source) == 0);
    FUZZ_CHECK(json_equal(again.data, ev->data));
    cm_event_dispose(&again);
}

static int fuzz_one(const uint8_t *data, size_t size)
{
    cm_event_t ev;
    int rc = cm_event_parse((const char *)data, size, &ev);
    FUZZ_CHECK(rc == 0 || rc == CM_EPARSE || rc == CM_ETOOBIG);
    if (rc == 0) {
        check_accepted(&ev);
        check_round_trip(&ev);
    } else {
        FUZZ_CHECK(ev.data == NULL);
    }
    cm_event_dispose(&ev);
    cm_event_dispose(&ev); /* documented as idempotent */
    return 0;
}

FUZZ_ENTRY(fuzz_one)

/*
 * schema.h — a small JSON Schema (draft 2020-12) validator for tests.
 *
 * It understands the subset that proto/events/<type>.schema.json files use: type
 * (a name or an array of names), const, enum, required, properties,
 * additionalProperties (false or a schema), minLength / maxLength
 * (in Unicode code points), minimum / maximum, and format "uuid" and
 * "date-time" (asserted, not just annotated). Annotations ($schema, $id,
 * title, description, examples, $comment) are ignored. Any other keyword
 * makes validation fail, so a schema never silently relies on something
 * this validator does not check.
 */
#ifndef LINKTR_SCHEMA_H
#define LINKTR_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/**
 * Validates instance (borrowed) against schema (borrowed). Returns true
 * when it conforms. Otherwise returns false and, when err is not NULL,
 * writes a NUL-terminated reason naming the JSON path ("$.data.user_id:
 * format uuid") into err (at most errlen bytes).
 */
bool t_schema_validate(json_t *schema, json_t *instance, char *err, size_t errlen);

/**
 * The directory holding the event schemas: $LINKTR_PROTO_DIR when set,
 * else proto/events found relative to this source file. Static storage.
 */
const char *t_proto_events_dir(void);

/**
 * Loads proto/events/<name>.schema.json (name is an event type such as
 * "user.registered", or "envelope"). Returns a new reference the caller
 * json_decref()s; aborts the test program with a message when the file is
 * missing or not JSON.
 */
json_t *t_schema_load(const char *name);

/**
 * Validates a whole envelope (borrowed) against envelope.schema.json and
 * then against the schema of its own "type". Same result and err as
 * t_schema_validate.
 */
bool t_schema_validate_event(json_t *envelope, char *err, size_t errlen);

#endif

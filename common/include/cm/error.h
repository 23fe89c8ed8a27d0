/*
 * cm/error.h — the one error convention of linktr.
 *
 * Functions return int: 0 on success, a negative CM_E* code on failure.
 * Library errors (libpq, librdkafka, curl, civetweb) are converted to these
 * codes once, at the boundary in common/.
 */
#ifndef CM_ERROR_H
#define CM_ERROR_H

/** Mark a function whose result must not be ignored. */
#define CM_MUST_CHECK __attribute__((warn_unused_result))

/*
 * The table that generates the codes and their messages. Codes are
 * negative; the names say what the caller can do about it.
 */
#define CM_ERRNO_MAP(X)                                                                            \
    X(EINVAL, 1, "invalid argument")                                                               \
    X(ENOMEM, 2, "out of memory")                                                                  \
    X(ERANGE, 3, "value out of range")                                                             \
    X(EPARSE, 4, "malformed input")                                                                \
    X(ETOOBIG, 5, "input too large")                                                               \
    X(ENOTFOUND, 6, "not found")                                                                   \
    X(ECONFLICT, 7, "conflicting value (unique constraint)")                                       \
    X(ETIMEDOUT, 8, "timed out")                                                                   \
    X(EUNAVAIL, 9, "dependency unavailable")                                                       \
    X(EBUSY, 10, "resource exhausted, try again later")                                            \
    X(EIO, 11, "input/output error")                                                               \
    X(EDB, 12, "database error")                                                                   \
    X(EKAFKA, 13, "kafka error")                                                                   \
    X(EAUTH, 14, "authentication failed")                                                          \
    X(ECRYPTO, 15, "cryptographic operation failed")                                               \
    X(ESTATE, 16, "operation not valid in the current state")                                      \
    X(ESTOPPED, 17, "stopped")

enum cm_errno {
#define CM__ERR_ENUM(name, num, msg) CM_##name = -(num),
    CM_ERRNO_MAP(CM__ERR_ENUM)
#undef CM__ERR_ENUM
};

/**
 * Returns a static, human-readable message for a CM_E* code (or "success"
 * for 0, "unknown error" for anything else). Never NULL; never free it.
 */
const char *cm_strerror(int err);

/** Returns the symbolic name ("CM_ECONFLICT") of a code; static storage. */
const char *cm_errname(int err);

#endif

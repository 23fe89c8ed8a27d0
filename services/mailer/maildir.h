/*
 * maildir.h — the no-SMTP transport: one .eml file per message in a Maildir.
 *
 * A message is written to <dir>/tmp/<unique name>, flushed to disk, then
 * renamed into <dir>/new/, so a reader never sees half a message. Names
 * follow the Maildir convention (time, microseconds, pid, random, host,
 * then ".eml") and are created with O_EXCL, so two writers never share one.
 */
#ifndef MAIL_MAILDIR_H
#define MAIL_MAILDIR_H

#include <stddef.h>

#include "cm/error.h"

/**
 * Creates dir (with its parents) and dir/tmp, dir/new, dir/cur when
 * missing (mode 0700). Returns 0 or CM_EIO.
 */
CM_MUST_CHECK int mail_maildir_init(const char *dir);

/**
 * Delivers len bytes of msg into the Maildir dir (see above). When path
 * is not NULL, *path receives the final file name (dir/new/...), a new
 * string the caller free()s. Returns 0, CM_EINVAL or CM_EIO (nothing is
 * left in new/ then; a partial file in tmp/ is removed).
 */
CM_MUST_CHECK int mail_maildir_deliver(const char *dir, const char *msg, size_t len, char **path);

#endif

/* maildir.c — write-then-rename delivery into a Maildir (see maildir.h). */
#include "maildir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "cm/util.h"

/* mkdir that accepts an existing directory. */
static int ensure_dir(const char *path)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST)
        return 0;
    return CM_EIO;
}

/* mkdir -p: creates every missing parent of path, then path. */
static int mkdir_parents(const char *path)
{
    char *p = cm_xstrdup(path);
    int rc = 0;
    for (char *s = p + 1; *s && rc == 0; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        rc = ensure_dir(p);
        *s = '/';
    }
    if (rc == 0)
        rc = ensure_dir(p);
    free(p);
    return rc;
}

int mail_maildir_init(const char *dir)
{
    if (!dir || !*dir)
        return CM_EINVAL;
    int rc = mkdir_parents(dir);
    const char *subs[] = {"tmp", "new", "cur"};
    for (size_t i = 0; i < 3 && rc == 0; i++) {
        char *sub = cm_xasprintf("%s/%s", dir, subs[i]);
        rc = ensure_dir(sub);
        free(sub);
    }
    return rc;
}

/* "<sec>.M<usec>P<pid>R<random>.<host>.eml": the Maildir unique-name
 * convention, with the suffix that lets a person open the file in a mail
 * client. */
static char *unique_name(void)
{
    char host[64] = "localhost";
    if (gethostname(host, sizeof host) != 0)
        strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    for (char *h = host; *h; h++)
        if (*h == '/' || *h == ':')
            *h = '_'; /* both would change the name's meaning */
    uint8_t rnd[8];
    char hex[17];
    randombytes_buf(rnd, sizeof rnd);
    cm_hex_encode(rnd, sizeof rnd, hex);
    int64_t us = cm_now_us();
    return cm_xasprintf("%lld.M%06lldP%ldR%s.%s.eml", (long long)(us / 1000000),
                        (long long)(us % 1000000), (long)getpid(), hex, host);
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return CM_EIO;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

int mail_maildir_deliver(const char *dir, const char *msg, size_t len, char **path)
{
    if (!dir || !*dir || (!msg && len > 0))
        return CM_EINVAL;
    char *name = unique_name();
    char *tmp = cm_xasprintf("%s/tmp/%s", dir, name);
    char *dst = cm_xasprintf("%s/new/%s", dir, name);
    int rc = CM_EIO;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        goto out;
    rc = write_all(fd, msg, len);
    if (rc == 0 && fsync(fd) != 0)
        rc = CM_EIO;
    if (close(fd) != 0 && rc == 0)
        rc = CM_EIO;
    if (rc == 0 && rename(tmp, dst) != 0)
        rc = CM_EIO;
    if (rc != 0)
        unlink(tmp);
out:
    if (rc == 0 && path) {
        *path = dst;
        dst = NULL;
    }
    free(dst);
    free(tmp);
    free(name);
    return rc;
}

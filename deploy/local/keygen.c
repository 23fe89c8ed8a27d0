/*
 * linktr-keygen — development keys for the local stack.
 *
 *     linktr-keygen seal OUTDIR
 *
 * makes a libsodium crypto_box key pair for sealing one-time tokens to the
 * mailer and writes OUTDIR/seal.pub (the 32-byte public key, standard
 * base64, one line, mode 0644) and OUTDIR/seal.key (the 32-byte secret
 * key, same encoding, mode 0600). Each file appears atomically (written
 * beside it, then renamed); existing files are replaced. The secret is
 * wiped from memory before exit.
 *
 * The ES256 JWT keys are made with the openssl CLI by deploy/local/stack.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

/* base64 of 32 bytes is 44 characters; room for the NUL. */
#define B64_KEY_LEN                                                                                \
    sodium_base64_ENCODED_LEN(crypto_box_PUBLICKEYBYTES, sodium_base64_VARIANT_ORIGINAL)

static void usage(void)
{
    fprintf(stderr, "usage: linktr-keygen seal OUTDIR\n"
                    "  writes OUTDIR/seal.pub and OUTDIR/seal.key (mode 0600), base64\n");
}

/* Returns "dir/name" as a new string the caller free()s, or NULL. */
static char *join_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Writes all of buf to fd; 0 or -1. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Writes "line\n" to dir/name with the given mode, atomically. */
static int write_key_file(const char *dir, const char *name, const char *line, mode_t mode)
{
    int rc = -1, fd = -1;
    char *path = join_path(dir, name);
    char *tmp = path ? join_path(dir, ".keygen.tmp") : NULL;
    if (!tmp)
        goto out;
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    /* fchmod too: the umask must not widen or narrow what we asked for. */
    if (fd < 0 || fchmod(fd, mode) != 0)
        goto out;
    if (write_all(fd, line, strlen(line)) != 0 || write_all(fd, "\n", 1) != 0)
        goto out;
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        goto out;
    }
    fd = -1;
    rc = rename(tmp, path) == 0 ? 0 : -1;
out:
    if (rc != 0)
        fprintf(stderr, "linktr-keygen: cannot write %s/%s: %s\n", dir, name, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (tmp && rc != 0)
        unlink(tmp);
    free(tmp);
    free(path);
    return rc;
}

static int make_seal_keys(const char *dir)
{
    unsigned char pk[crypto_box_PUBLICKEYBYTES], sk[crypto_box_SECRETKEYBYTES];
    char pk64[B64_KEY_LEN], sk64[B64_KEY_LEN];
    int rc = -1;

    if (crypto_box_keypair(pk, sk) != 0)
        goto out;
    sodium_bin2base64(pk64, sizeof pk64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
    sodium_bin2base64(sk64, sizeof sk64, sk, sizeof sk, sodium_base64_VARIANT_ORIGINAL);
    /* Secret first: a reader that finds seal.pub can rely on seal.key. */
    if (write_key_file(dir, "seal.key", sk64, 0600) != 0)
        goto out;
    if (write_key_file(dir, "seal.pub", pk64, 0644) != 0)
        goto out;
    rc = 0;
out:
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(sk64, sizeof sk64);
    return rc;
}

int main(int argc, char **argv)
{
    struct stat st;

    if (argc != 3 || strcmp(argv[1], "seal") != 0) {
        usage();
        return 2;
    }
    if (stat(argv[2], &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "linktr-keygen: %s is not a directory\n", argv[2]);
        return 2;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "linktr-keygen: libsodium failed to initialise\n");
        return 1;
    }
    return make_seal_keys(argv[2]) == 0 ? 0 : 1;
}

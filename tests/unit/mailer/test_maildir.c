/* Tests for services/mailer/maildir.c: tmp/ then new/, unique names, whole files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm/util.h"
#include "maildir.h"

/* A fresh directory under /tmp for one test; removed by cleanup(). */
static char *fresh_dir(void)
{
    char tmpl[] = "/tmp/linktr-maildir-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    return cm_xasprintf("%s/deep/er/mail", tmpl);
}

static int count_files(const char *dir, const char *sub)
{
    char *path = cm_xasprintf("%s/%s", dir, sub);
    DIR *d = opendir(path);
    free(path);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void cleanup(char *dir)
{
    char *cmd = cm_xasprintf("rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(dir);
}

static void init_creates_the_directory_tree_and_is_idempotent(void **state)
{
    (void)state;
    char *dir = fresh_dir();
    assert_int_equal(mail_maildir_init(dir), 0);
    assert_int_equal(mail_maildir_init(dir), 0);
    const char *subs[] = {"tmp", "new", "cur"};
    for (int i = 0; i < 3; i++) {
        char *p = cm_xasprintf("%s/%s", dir, subs[i]);
        struct stat st;
        assert_int_equal(stat(p, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        free(p);
    }
    cleanup(dir);
}

static void a_delivered_message_lands_whole_in_new_and_leaves_tmp_empty(void **state)
{
    (void)state;
    char *dir = fresh_dir();
    assert_int_equal(mail_maildir_init(dir), 0);
    const char msg[] = "Subject: hi\r\n\r\nbody\r\n";
    char *path = NULL;
    assert_int_equal(mail_maildir_deliver(dir, msg, sizeof msg - 1, &path), 0);
    char *prefix = cm_xasprintf("%s/new/", dir);
    assert_true(strncmp(path, prefix, strlen(prefix)) == 0);
    assert_string_equal(path + strlen(path) - 4, ".eml");
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char buf[128];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_int_equal(n, sizeof msg - 1);
    assert_memory_equal(buf, msg, n);
    assert_int_equal(count_files(dir, "tmp"), 0);
    assert_int_equal(count_files(dir, "new"), 1);
    free(prefix);
    free(path);
    cleanup(dir);
}

static void many_deliveries_get_distinct_names(void **state)
{
    (void)state;
    char *dir = fresh_dir();
    assert_int_equal(mail_maildir_init(dir), 0);
    enum { N = 50 };
    char *paths[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(mail_maildir_deliver(dir, "x", 1, &paths[i]), 0);
    for (int i = 0; i < N; i++)
        for (int k = i + 1; k < N; k++)
            assert_string_not_equal(paths[i], paths[k]);
    assert_int_equal(count_files(dir, "new"), N);
    for (int i = 0; i < N; i++)
        free(paths[i]);
    cleanup(dir);
}

static void delivery_into_a_missing_maildir_fails_with_eio(void **state)
{
    (void)state;
    char *dir = fresh_dir(); /* not initialized: no tmp/ */
    assert_int_equal(mail_maildir_deliver(dir, "x", 1, NULL), CM_EIO);
    assert_int_equal(mail_maildir_deliver("", "x", 1, NULL), CM_EINVAL);
    cleanup(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(init_creates_the_directory_tree_and_is_idempotent),
        cmocka_unit_test(a_delivered_message_lands_whole_in_new_and_leaves_tmp_empty),
        cmocka_unit_test(many_deliveries_get_distinct_names),
        cmocka_unit_test(delivery_into_a_missing_maildir_fails_with_eio),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

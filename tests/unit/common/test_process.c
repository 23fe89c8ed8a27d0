/* Tests for common/src/process.c: the process's figures and the metrics every service exports. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm/process.h"
#include "cm/util.h"

static void the_figures_of_this_process_are_read_from_proc(void **state)
{
    (void)state;
    cm_process_stats_t a, b;
    assert_true(cm_process_stats(&a));
    assert_true(a.resident_bytes > 1024 * 1024);
    assert_true(a.open_fds >= 3); /* stdin, stdout, stderr */
    double now = (double)time(NULL);
    assert_true(a.start_time_unix > now - 3600 && a.start_time_unix <= now + 1);
    /* Opening a file is seen as one more descriptor; burning CPU as more CPU time. */
    int fd = open("/dev/null", O_RDONLY);
    assert_true(fd >= 0);
    volatile unsigned long x = 0;
    for (unsigned long i = 0; i < 200000000UL; i++)
        x += i;
    assert_true(cm_process_stats(&b));
    assert_true(b.open_fds == a.open_fds + 1);
    assert_true(b.cpu_seconds > a.cpu_seconds);
    close(fd);
}

static void build_info_and_process_metrics_are_rendered(void **state)
{
    (void)state;
    cm_metrics_t *m = cm_metrics_new();
    cm_process_metrics_register(m, "auth", "1.2.3");
    cm_buf_t out;
    cm_buf_init(&out);
    cm_metrics_render(m, &out);
    assert_non_null(strstr(out.data, "linktr_build_info{service=\"auth\",version=\"1.2.3\"} 1"));
    assert_non_null(strstr(out.data, "\nprocess_cpu_seconds_total "));
    assert_non_null(strstr(out.data, "\nprocess_resident_memory_bytes "));
    assert_non_null(strstr(out.data, "\nprocess_open_fds "));
    assert_non_null(strstr(out.data, "\nprocess_start_time_seconds "));
    /* The pool's series are the database part's (test_service_db.c). */
    assert_null(strstr(out.data, "linktr_db_pool"));
    cm_buf_dispose(&out);
    cm_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_figures_of_this_process_are_read_from_proc),
        cmocka_unit_test(build_info_and_process_metrics_are_rendered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sw_error.h"
#include "fileio.h"

static void test_strerror_known_and_unknown(void **state)
{
    (void)state;
    assert_string_equal(sw_strerror(SW_OK), "success");
    assert_string_equal(sw_strerror(SW_EFORMAT), "malformed input");
    assert_string_equal(sw_strerror(-1999), "unknown error");
    /* errno values fall back to strerror */
    assert_non_null(strstr(sw_strerror(-EPIPE), "pipe"));
}

static void test_diag_set_returns_code_and_formats(void **state)
{
    (void)state;
    sw_diag d;
    assert_int_equal(sw_diag_set(&d, SW_ETRUNCATED, "%s: %d bytes", "f.bin", 7), SW_ETRUNCATED);
    assert_string_equal(d.msg, "f.bin: 7 bytes");
    sw_diag_prefix(&d, "load");
    assert_string_equal(d.msg, "load: f.bin: 7 bytes");
    assert_int_equal(sw_diag_set(NULL, SW_EIO, "ignored"), SW_EIO);
}

static void test_file_roundtrip_and_limit(void **state)
{
    (void)state;
    char path[] = "/tmp/sw_test_fileio_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    sw_diag d;
    assert_int_equal(sw_file_write_atomic(path, "hello", 5, 0600, &d), 0);
    char *buf;
    size_t len;
    assert_int_equal(sw_file_read(path, 100, &buf, &len, &d), 0);
    assert_int_equal(len, 5);
    assert_string_equal(buf, "hello");
    free(buf);
    assert_int_equal(sw_file_read(path, 4, &buf, &len, &d), SW_ETOOBIG);
    assert_non_null(strstr(d.msg, path));
    unlink(path);
    assert_int_equal(sw_file_read(path, 100, &buf, &len, &d), SW_ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_known_and_unknown),
        cmocka_unit_test(test_diag_set_returns_code_and_formats),
        cmocka_unit_test(test_file_roundtrip_and_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

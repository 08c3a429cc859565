#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "jsonl.h"

/* Parses s as line 7 of "f.jsonl"; returns the code, with *rec filled on success. */
static int parse(const char *s, sw_jsonl_record *rec, sw_diag *d)
{
    memset(rec, 0, sizeof(*rec));
    d->msg[0] = '\0';
    return sw_jsonl_parse_line(s, strlen(s), "f.jsonl", 7, rec, d);
}

static void test_parse_text_and_prompt_completion(void **state)
{
    (void)state;
    sw_jsonl_record r;
    sw_diag d;
    assert_int_equal(parse("{\"text\": \"hello world\"}", &r, &d), 0);
    assert_int_equal(r.kind, SW_JSONL_TEXT);
    assert_int_equal(r.text_len, 11);
    assert_string_equal(r.text, "hello world");
    assert_null(r.completion);
    assert_int_equal(r.line, 7);
    sw_jsonl_record_fini(&r);
    assert_null(r.text);

    assert_int_equal(parse("{\"prompt\": \"Q: 2+2?\\nA:\", \"completion\": \" 4\"}\r", &r, &d), 0);
    assert_int_equal(r.kind, SW_JSONL_PROMPT_COMPLETION);
    assert_string_equal(r.text, "Q: 2+2?\nA:");
    assert_string_equal(r.completion, " 4");
    assert_int_equal(r.completion_len, 2);
    sw_jsonl_record_fini(&r);

    /* Other keys, whatever their type, are ignored; key order does not matter. */
    assert_int_equal(
        parse("{\"id\": 3, \"completion\": \"\", \"meta\": {\"a\": [1, null]}, \"prompt\": \"p\"}",
              &r, &d),
        0);
    assert_int_equal(r.kind, SW_JSONL_PROMPT_COMPLETION);
    assert_string_equal(r.text, "p");
    assert_int_equal(r.completion_len, 0);
    sw_jsonl_record_fini(&r);
}

static void test_parse_unicode_and_nul(void **state)
{
    (void)state;
    sw_jsonl_record r;
    sw_diag d;
    /* An escaped NUL is kept: the length counts it. */
    assert_int_equal(parse("{\"text\": \"a\\u0000b\\u00e9\\ud83d\\ude00\"}", &r, &d), 0);
    assert_int_equal(r.text_len, 1 + 1 + 1 + 2 + 4);
    assert_memory_equal(r.text, "a\0b\xc3\xa9\xf0\x9f\x98\x80", 9);
    assert_int_equal(r.text[9], '\0');
    sw_jsonl_record_fini(&r);
    /* Raw UTF-8 passes through. */
    assert_int_equal(parse("{\"text\": \"caf\xc3\xa9\"}", &r, &d), 0);
    assert_string_equal(r.text, "caf\xc3\xa9");
    sw_jsonl_record_fini(&r);
    /* Invalid UTF-8 is an error naming the line. */
    assert_int_equal(parse("{\"text\": \"caf\xc3\"}", &r, &d), SW_EFORMAT);
    assert_non_null(strstr(d.msg, "f.jsonl:7:"));
}

static void test_parse_blank(void **state)
{
    (void)state;
    sw_jsonl_record r;
    sw_diag d;
    assert_int_equal(parse("", &r, &d), 1);
    assert_int_equal(parse("  \t \r", &r, &d), 1);
    assert_null(r.text);
}

/* Each bad line fails with SW_EFORMAT and a message naming file, line and problem. */
static void test_parse_errors_name_the_line(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        const char *problem;
    } cases[] = {
        {"{\"text\": \"a\"", "invalid JSON"},
        {"{\"text\": \"a\"} x", "invalid JSON"},
        {"not json", "invalid JSON"},
        {"[\"text\", \"a\"]", "found an array"},
        {"\"text\"", "found a string"},
        {"17", "found a number"},
        {"null", "found null"},
        {"{}", "no \"text\" or \"prompt\"/\"completion\""},
        {"{\"txt\": \"a\"}", "no \"text\""},
        {"{\"text\": \"a\", \"prompt\": \"b\", \"completion\": \"c\"}", "both \"text\" and"},
        {"{\"text\": \"a\", \"completion\": \"c\"}", "both \"text\" and \"completion\""},
        {"{\"prompt\": \"b\"}", "\"prompt\" without \"completion\""},
        {"{\"completion\": \"c\"}", "\"completion\" without \"prompt\""},
        {"{\"text\": 5}", "\"text\" is a number, expected a string"},
        {"{\"text\": null}", "\"text\" is null"},
        {"{\"prompt\": \"b\", \"completion\": [\"c\"]}", "\"completion\" is an array"},
        {"{\"prompt\": true, \"completion\": \"c\"}", "\"prompt\" is a boolean"},
        {"{\"text\": \"a\", \"text\": \"b\"}", "invalid JSON"}, /* duplicate key */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sw_jsonl_record r;
        sw_diag d;
        int rc = parse(cases[i].line, &r, &d);
        if (rc != SW_EFORMAT || !strstr(d.msg, "f.jsonl:7: ") || !strstr(d.msg, cases[i].problem))
            fail_msg("case %zu (%s): rc %d, diag \"%s\"", i, cases[i].line, rc, d.msg);
        assert_null(r.text);
    }
}

static void test_parse_line_too_long(void **state)
{
    (void)state;
    size_t n = SW_JSONL_MAX_LINE + 1;
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, ' ', n);
    s[n] = '\0';
    sw_jsonl_record r = {0};
    sw_diag d;
    assert_int_equal(sw_jsonl_parse_line(s, n, "f.jsonl", 3, &r, &d), SW_ETOOBIG);
    assert_non_null(strstr(d.msg, "f.jsonl:3:"));
    free(s);
}

static void test_reader_memory(void **state)
{
    (void)state;
    /* BOM, a blank line, CRLF, a whitespace-only line, no final newline. */
    const char img[] = "\xEF\xBB\xBF{\"text\": \"one\"}\n"
                       "\n"
                       "{\"prompt\": \"p\", \"completion\": \"c\"}\r\n"
                       "   \t\n"
                       "{\"text\": \"four\"}";
    sw_jsonl_reader *rd;
    sw_diag d;
    assert_int_equal(sw_jsonl_open_mem(img, sizeof(img) - 1, "mem.jsonl", &rd, &d), 0);
    assert_string_equal(sw_jsonl_name(rd), "mem.jsonl");
    sw_jsonl_record r = {0};
    assert_int_equal(sw_jsonl_next(rd, &r, &d), 1);
    assert_string_equal(r.text, "one");
    assert_int_equal(r.line, 1);
    sw_jsonl_record_fini(&r);
    assert_int_equal(sw_jsonl_next(rd, &r, &d), 1);
    assert_int_equal(r.kind, SW_JSONL_PROMPT_COMPLETION);
    assert_int_equal(r.line, 3);
    sw_jsonl_record_fini(&r);
    assert_int_equal(sw_jsonl_next(rd, &r, &d), 1);
    assert_string_equal(r.text, "four");
    assert_int_equal(r.line, 5);
    sw_jsonl_record_fini(&r);
    assert_int_equal(sw_jsonl_next(rd, &r, &d), 0);
    assert_int_equal(sw_jsonl_next(rd, &r, &d), 0);
    sw_jsonl_close(rd);

    /* Empty input: no records. */
    assert_int_equal(sw_jsonl_open_mem(NULL, 0, NULL, &rd, &d), 0);
    assert_int_equal(sw_jsonl_next(rd, &r, &d), 0);
    sw_jsonl_close(rd);
}

static void test_reader_error_line_number(void **state)
{
    (void)state;
    const char img[] = "{\"text\": \"a\"}\n\n{\"text\": \"b\"}\n{\"text\": 1}\n{\"text\": \"c\"}\n";
    sw_jsonl_reader *rd;
    sw_diag d;
    assert_int_equal(sw_jsonl_open_mem(img, sizeof(img) - 1, "bad.jsonl", &rd, &d), 0);
    sw_jsonl_record r = {0};
    assert_int_equal(sw_jsonl_next(rd, &r, &d), 1);
    sw_jsonl_record_fini(&r);
    assert_int_equal(sw_jsonl_next(rd, &r, &d), 1);
    sw_jsonl_record_fini(&r);
    assert_int_equal(sw_jsonl_next(rd, &r, &d), SW_EFORMAT);
    assert_non_null(strstr(d.msg, "bad.jsonl:4: \"text\" is a number"));
    /* The reader stays failed. */
    assert_true(sw_jsonl_next(rd, &r, &d) < 0);
    sw_jsonl_close(rd);

    /* A BOM is only skipped on line 1. */
    const char img2[] = "{\"text\": \"a\"}\n\xEF\xBB\xBF{\"text\": \"b\"}\n";
    assert_int_equal(sw_jsonl_open_mem(img2, sizeof(img2) - 1, "bom.jsonl", &rd, &d), 0);
    assert_int_equal(sw_jsonl_next(rd, &r, &d), 1);
    sw_jsonl_record_fini(&r);
    assert_int_equal(sw_jsonl_next(rd, &r, &d), SW_EFORMAT);
    assert_non_null(strstr(d.msg, "bom.jsonl:2:"));
    sw_jsonl_close(rd);
}

static char *write_temp(const char *data, size_t len)
{
    char *path = strdup("/tmp/sw_test_jsonl_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* Many lines and one long line: they cross the file reader's chunk boundaries. */
static void test_reader_file_chunks(void **state)
{
    (void)state;
    const size_t n_lines = 20000;
    const size_t long_len = 900 * 1024;
    size_t cap = n_lines * 40 + long_len + 64;
    char *img = malloc(cap);
    assert_non_null(img);
    size_t len = 0;
    for (size_t i = 0; i < n_lines; i++) {
        if (i == 12345) {
            len += (size_t)sprintf(img + len, "{\"text\": \"");
            memset(img + len, 'x', long_len);
            len += long_len;
            len += (size_t)sprintf(img + len, "\"}\n");
        } else if (i % 7 == 3) {
            img[len++] = '\n';
        } else {
            len += (size_t)sprintf(img + len, "{\"text\": \"line %zu\"}\n", i + 1);
        }
    }
    char *path = write_temp(img, len);
    sw_jsonl_reader *rd;
    sw_diag d;
    assert_int_equal(sw_jsonl_open(path, &rd, &d), 0);
    sw_jsonl_record r = {0};
    size_t seen = 0;
    int rc;
    while ((rc = sw_jsonl_next(rd, &r, &d)) == 1) {
        size_t i = (size_t)r.line - 1;
        assert_true(i % 7 != 3);
        if (i == 12345) {
            assert_int_equal(r.text_len, long_len);
            assert_int_equal(r.text[long_len - 1], 'x');
        } else {
            char want[32];
            snprintf(want, sizeof(want), "line %zu", i + 1);
            assert_string_equal(r.text, want);
        }
        seen++;
        sw_jsonl_record_fini(&r);
    }
    assert_int_equal(rc, 0);
    size_t blank = 0;
    for (size_t i = 0; i < n_lines; i++)
        blank += i % 7 == 3 && i != 12345;
    assert_int_equal(seen, n_lines - blank);
    sw_jsonl_close(rd);
    unlink(path);
    free(path);
    free(img);
}

static void test_reader_file_line_too_long(void **state)
{
    (void)state;
    /* Line 2 has no newline for more than the limit: an error, not unbounded memory. */
    size_t len = 20 + SW_JSONL_MAX_LINE + 100;
    char *img = malloc(len);
    assert_non_null(img);
    memset(img, 'a', len);
    memcpy(img, "{\"text\": \"ok\"}\n", 15);
    char *path = write_temp(img, len);
    sw_jsonl_reader *rd;
    sw_diag d;
    assert_int_equal(sw_jsonl_open(path, &rd, &d), 0);
    sw_jsonl_record r = {0};
    assert_int_equal(sw_jsonl_next(rd, &r, &d), 1);
    sw_jsonl_record_fini(&r);
    assert_int_equal(sw_jsonl_next(rd, &r, &d), SW_ETOOBIG);
    assert_non_null(strstr(d.msg, path));
    assert_non_null(strstr(d.msg, ":2: line longer than"));
    sw_jsonl_close(rd);
    /* The same image from memory. */
    assert_int_equal(sw_jsonl_open_mem(img, len, "m", &rd, &d), 0);
    assert_int_equal(sw_jsonl_next(rd, &r, &d), 1);
    sw_jsonl_record_fini(&r);
    assert_int_equal(sw_jsonl_next(rd, &r, &d), SW_ETOOBIG);
    assert_non_null(strstr(d.msg, "m:2: line longer than"));
    sw_jsonl_close(rd);
    unlink(path);
    free(path);
    free(img);
}

static void test_open_missing_file(void **state)
{
    (void)state;
    sw_jsonl_reader *rd;
    sw_diag d;
    assert_int_equal(sw_jsonl_open("/nonexistent/x.jsonl", &rd, &d), SW_ENOENT);
    assert_non_null(strstr(d.msg, "/nonexistent/x.jsonl"));
}

/* Every line of the fixture files parses; the kinds are what the fixture README says. */
static void test_fixture_files(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        sw_jsonl_kind kind;
    } files[] = {
        {"task-test.jsonl", SW_JSONL_TEXT},
        {"topic-test.jsonl", SW_JSONL_PROMPT_COMPLETION},
        {"base-val.jsonl", SW_JSONL_TEXT},
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", SW_DATA_DIR, files[i].file);
        sw_jsonl_reader *rd;
        sw_diag d;
        assert_int_equal(sw_jsonl_open(path, &rd, &d), 0);
        sw_jsonl_record r = {0};
        int rc;
        size_t n = 0;
        while ((rc = sw_jsonl_next(rd, &r, &d)) == 1) {
            assert_int_equal(r.kind, files[i].kind);
            n++;
            sw_jsonl_record_fini(&r);
        }
        assert_int_equal(rc, 0);
        assert_true(n > 50);
        sw_jsonl_close(rd);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_text_and_prompt_completion),
        cmocka_unit_test(test_parse_unicode_and_nul),
        cmocka_unit_test(test_parse_blank),
        cmocka_unit_test(test_parse_errors_name_the_line),
        cmocka_unit_test(test_parse_line_too_long),
        cmocka_unit_test(test_reader_memory),
        cmocka_unit_test(test_reader_error_line_number),
        cmocka_unit_test(test_reader_file_chunks),
        cmocka_unit_test(test_reader_file_line_too_long),
        cmocka_unit_test(test_open_missing_file),
        cmocka_unit_test(test_fixture_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

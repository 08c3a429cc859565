/*
 * safetensors: writer output compared byte for byte with a hand-built file
 * (checked once against Python's json + numpy), write/read round trips,
 * every validation rule with a crafted hostile file, every truncation and
 * many single-byte corruptions of a small valid file, and the fixture model.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "half.h"
#include "safetensors.h"

#define FIXTURE_MODEL SW_MODEL_DIR "/model.safetensors"

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/sw_test_st_XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void tmp_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* A file image: 8-byte length of header, header text, then data_len bytes of 0xAB. */
static unsigned char *make_file(const char *header, size_t data_len, size_t *len)
{
    size_t hlen = strlen(header);
    *len = 8 + hlen + data_len;
    unsigned char *buf = malloc(*len + 1);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    memset(buf + 8 + hlen, 0xab, data_len);
    return buf;
}

static void put_f32(unsigned char *p, float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(x >> (8 * i));
}

static void test_dtype_helpers(void **state)
{
    (void)state;
    sw_dtype d;
    assert_int_equal(sw_dtype_parse("F32", &d), 0);
    assert_int_equal(d, SW_DTYPE_F32);
    assert_int_equal(sw_dtype_parse("bf16", &d), 0);
    assert_int_equal(d, SW_DTYPE_BF16);
    assert_int_equal(sw_dtype_parse("f16", &d), 0);
    assert_int_equal(d, SW_DTYPE_F16);
    assert_int_equal(sw_dtype_parse("F64", &d), SW_EINVAL);
    assert_int_equal(sw_dtype_parse("", &d), SW_EINVAL);
    assert_int_equal(sw_dtype_size(SW_DTYPE_F32), 4);
    assert_int_equal(sw_dtype_size(SW_DTYPE_F16), 2);
    assert_int_equal(sw_dtype_size(SW_DTYPE_BF16), 2);
    assert_string_equal(sw_dtype_name(SW_DTYPE_BF16), "BF16");
}

/*
 * The writer's bytes, rebuilt by hand here.  Python read this same layout back
 * with json.loads and numpy.frombuffer when the writer was first checked.
 */
static void test_write_f32_exact_bytes(void **state)
{
    (void)state;
    char path[128];
    tmp_path(path, sizeof path, "exact.safetensors");
    const float a[6] = {1.0f, -2.5f, 0.0f, 3.25f, -0.0f, 1e-3f};
    const float b[1] = {42.0f};
    sw_st_write_tensor w[3] = {
        {.name = "layer.a", .ndim = 2, .shape = {2, 3}, .data = a},
        {.name = "b\"\\\n", .ndim = 0, .data = b},
        {.name = "empty", .ndim = 1, .shape = {0}, .data = NULL},
    };
    sw_diag d;
    assert_int_equal(sw_safetensors_write(path, w, 3, SW_DTYPE_F32, &d), 0);

    const char *header =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"layer.a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
        "\"b\\\"\\\\\\n\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[24,28]},"
        "\"empty\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[28,28]}}";
    char padded[512];
    snprintf(padded, sizeof padded, "%s", header);
    while (strlen(padded) % 8 != 0)
        strcat(padded, " ");
    size_t want_len;
    unsigned char *want = make_file(padded, 28, &want_len);
    for (int i = 0; i < 6; i++)
        put_f32(want + 8 + strlen(padded) + 4 * i, a[i]);
    put_f32(want + 8 + strlen(padded) + 24, b[0]);

    size_t got_len;
    unsigned char *got = read_all(path, &got_len);
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);
    assert_int_equal((got_len - 28) % 8, 0);

    /* Writing again gives identical bytes, and no temporary file is left. */
    assert_int_equal(sw_safetensors_write(path, w, 3, SW_DTYPE_F32, &d), 0);
    size_t again_len;
    unsigned char *again = read_all(path, &again_len);
    assert_int_equal(again_len, got_len);
    assert_memory_equal(again, got, got_len);
    char tmpname[192];
    snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", path, (long)getpid());
    assert_int_equal(access(tmpname, F_OK), -1);
    free(want);
    free(got);
    free(again);
}

static void test_roundtrip(sw_dtype dtype)
{
    char path[128];
    tmp_path(path, sizeof path, "rt.safetensors");
    enum { N = 40000 }; /* more than one writer chunk */
    float *big = malloc(N * sizeof *big);
    assert_non_null(big);
    for (int i = 0; i < N; i++)
        big[i] = (float)sin(i * 0.001) * (float)(1 + i % 7);
    const float specials[6] = {0.0f, -0.0f, INFINITY, -INFINITY, 65504.0f, 0x1p-24f};
    sw_st_write_tensor w[3] = {
        {.name = "big", .ndim = 3, .shape = {10, 40, 100}, .data = big},
        {.name = "specials", .ndim = 1, .shape = {6}, .data = specials},
        {.name = "naïve", .ndim = 2, .shape = {2, 3}, .data = specials},
    };
    sw_diag d;
    assert_int_equal(sw_safetensors_write(path, w, 3, dtype, &d), 0);
    sw_safetensors *st;
    if (sw_safetensors_open(path, &st, &d) != 0) fail_msg("%s", d.msg);
    assert_int_equal(sw_safetensors_count(st), 3);
    assert_string_equal(sw_safetensors_metadata(st), "{\"format\":\"pt\"}");
    for (size_t i = 0; i < 3; i++) {
        const sw_st_tensor *t = sw_safetensors_at(st, i);
        assert_string_equal(t->name, w[i].name);
        assert_ptr_equal(sw_safetensors_find(st, w[i].name), t);
        assert_int_equal(t->dtype, dtype);
        assert_int_equal(t->ndim, w[i].ndim);
        uint64_t numel = 1;
        for (int k = 0; k < t->ndim; k++) {
            assert_int_equal(t->shape[k], w[i].shape[k]);
            numel *= (uint64_t)w[i].shape[k];
        }
        assert_int_equal(t->numel, numel);
        assert_int_equal(t->nbytes, numel * sw_dtype_size(dtype));
        float *out = malloc(numel * sizeof *out);
        assert_non_null(out);
        sw_st_tensor_to_f32(t, out);
        for (uint64_t k = 0; k < numel; k++) {
            float v = w[i].data[k];
            float want = dtype == SW_DTYPE_F32   ? v
                         : dtype == SW_DTYPE_F16 ? sw_f16_to_f32(sw_f32_to_f16(v))
                                                 : sw_bf16_to_f32(sw_f32_to_bf16(v));
            assert_memory_equal(&out[k], &want, sizeof want);
        }
        free(out);
    }
    assert_null(sw_safetensors_find(st, "absent"));
    assert_null(sw_safetensors_find(st, ""));
    sw_safetensors_close(st);
    free(big);
}

static void test_roundtrip_f32(void **state)
{
    (void)state;
    test_roundtrip(SW_DTYPE_F32);
}

static void test_roundtrip_f16(void **state)
{
    (void)state;
    test_roundtrip(SW_DTYPE_F16);
    /* F16 data bytes are little-endian binary16: 1.0 is 00 3c. */
    char path[128];
    tmp_path(path, sizeof path, "one.safetensors");
    const float one = 1.0f;
    sw_st_write_tensor w = {.name = "x", .ndim = 1, .shape = {1}, .data = &one};
    sw_diag d;
    assert_int_equal(sw_safetensors_write(path, &w, 1, SW_DTYPE_F16, &d), 0);
    size_t len;
    unsigned char *buf = read_all(path, &len);
    assert_true(len > 10);
    assert_int_equal(buf[len - 2], 0x00);
    assert_int_equal(buf[len - 1], 0x3c);
    assert_non_null(
        strstr((char *)buf + 8, "\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]"));
    free(buf);
}

static void test_roundtrip_bf16(void **state)
{
    (void)state;
    test_roundtrip(SW_DTYPE_BF16);
}

static void test_write_rejects_bad_input(void **state)
{
    (void)state;
    char path[128];
    tmp_path(path, sizeof path, "bad.safetensors");
    const float x[4] = {1, 2, 3, 4};
    sw_diag d;
    sw_st_write_tensor dup[2] = {{.name = "a", .ndim = 1, .shape = {2}, .data = x},
                                 {.name = "a", .ndim = 1, .shape = {2}, .data = x}};
    assert_int_equal(sw_safetensors_write(path, dup, 2, SW_DTYPE_F32, &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "'a' appears twice"));
    sw_st_write_tensor bad = {.name = "", .ndim = 1, .shape = {2}, .data = x};
    assert_int_equal(sw_safetensors_write(path, &bad, 1, SW_DTYPE_F32, &d), SW_EINVAL);
    bad = (sw_st_write_tensor){.name = "__metadata__", .ndim = 1, .shape = {2}, .data = x};
    assert_int_equal(sw_safetensors_write(path, &bad, 1, SW_DTYPE_F32, &d), SW_EINVAL);
    bad = (sw_st_write_tensor){.name = "n", .ndim = 1, .shape = {-2}, .data = x};
    assert_int_equal(sw_safetensors_write(path, &bad, 1, SW_DTYPE_F32, &d), SW_EINVAL);
    bad = (sw_st_write_tensor){.name = "n", .ndim = 9, .shape = {1}, .data = x};
    assert_int_equal(sw_safetensors_write(path, &bad, 1, SW_DTYPE_F32, &d), SW_EINVAL);
    bad = (sw_st_write_tensor){.name = "n", .ndim = 1, .shape = {2}, .data = NULL};
    assert_int_equal(sw_safetensors_write(path, &bad, 1, SW_DTYPE_F32, &d), SW_EINVAL);
    bad = (sw_st_write_tensor){.name = "\xff\xfe", .ndim = 1, .shape = {2}, .data = x};
    assert_int_equal(sw_safetensors_write(path, &bad, 1, SW_DTYPE_F32, &d), SW_EINVAL);
    bad = (sw_st_write_tensor){
        .name = "huge", .ndim = 3, .shape = {INT64_C(1) << 30, INT64_C(1) << 30, 64}, .data = x};
    assert_int_equal(sw_safetensors_write(path, &bad, 1, SW_DTYPE_F32, &d), SW_ETOOBIG);
    assert_int_equal(access(path, F_OK), -1); /* nothing was created */

    sw_st_write_tensor ok = {.name = "a", .ndim = 1, .shape = {2}, .data = x};
    char nodir[160];
    tmp_path(nodir, sizeof nodir, "missing/dir/m.safetensors");
    assert_int_equal(sw_safetensors_write(nodir, &ok, 1, SW_DTYPE_F32, &d), SW_ENOENT);
    assert_non_null(strstr(d.msg, "missing/dir/m.safetensors"));
}

/* One crafted file: header text, data bytes, expected code and message parts. */
typedef struct bad_case {
    const char *header;
    size_t data_len;
    int code;
    const char *msg; /* substring expected in the diag, after "bad.st: " */
} bad_case;

static void expect_open_mem(const unsigned char *buf, size_t len, int code, const char *msg)
{
    sw_safetensors *st = NULL;
    sw_diag d = {{0}};
    int rc = sw_safetensors_open_mem(buf, len, "bad.st", &st, &d);
    if (rc != code) fail_msg("expected %d (%s), got %d: %s", code, msg, rc, d.msg);
    if (code == 0) {
        sw_safetensors_close(st);
        return;
    }
    assert_null(st);
    if (strncmp(d.msg, "bad.st: ", 8) != 0 || strstr(d.msg, msg) == NULL)
        fail_msg("message '%s' lacks '%s'", d.msg, msg);
}

static void test_hostile_headers(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        /* well-formed baselines */
        {"{}", 0, 0, ""},
        {"{}      ", 0, 0, ""},
        {"{\"__metadata__\":{}}", 0, 0, ""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, 0, ""},
        {"{\"a\":{\"data_offsets\":[0,4],\"shape\":[],\"dtype\":\"F32\"}}", 4, 0, ""},
        /* header JSON */
        {"{\"a\":", 0, SW_EFORMAT, "header JSON"},
        {"[]", 0, SW_EFORMAT, "does not start with '{'"},
        {" {}", 0, SW_EFORMAT, "does not start with '{'"},
        {"{} x", 0, SW_EFORMAT, "header JSON"},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, SW_EFORMAT, "duplicate"},
        {"{\"a\\u0000b\":{}}", 0, SW_EFORMAT, "header JSON"},
        {"{\"\xff\":{}}", 0, SW_EFORMAT, "header JSON"},
        /* metadata */
        {"{\"__metadata__\":[]}", 0, SW_EFORMAT, "\"__metadata__\" is not a JSON object"},
        {"{\"__metadata__\":{\"format\":1}}", 0, SW_EFORMAT, "value of 'format' is not a string"},
        /* entries */
        {"{\"\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, SW_EFORMAT,
         "empty name"},
        {"{\"w\":[]}", 0, SW_EFORMAT, "tensor 'w': entry is not a JSON object"},
        {"{\"w\":{\"shape\":[0],\"data_offsets\":[0,0]}}", 0, SW_EFORMAT,
         "tensor 'w': missing \"dtype\""},
        {"{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,0]}}", 0, SW_EFORMAT,
         "tensor 'w': missing \"shape\""},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[0]}}", 0, SW_EFORMAT,
         "tensor 'w': missing \"data_offsets\""},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0],\"x\":1}}", 0, SW_EFORMAT,
         "tensor 'w': unknown key 'x'"},
        {"{\"w\":{\"dtype\":32,\"shape\":[0],\"data_offsets\":[0,0]}}", 0, SW_EFORMAT,
         "dtype is not a string"},
        {"{\"w\":{\"dtype\":\"F64\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, SW_EUNSUPPORTED,
         "tensor 'w': dtype F64 is not supported (F32, F16, BF16)"},
        {"{\"w\":{\"dtype\":\"I64\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, SW_EUNSUPPORTED,
         "dtype I64 is not supported (F32, F16, BF16)"},
        {"{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, SW_EUNSUPPORTED,
         "dtype U8 is not supported"},
        {"{\"w\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, SW_EUNSUPPORTED,
         "dtype BOOL is not supported"},
        {"{\"w\":{\"dtype\":\"f32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, SW_EFORMAT,
         "unknown dtype 'f32'"},
        /* shape */
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,12]}}", 12, SW_EFORMAT,
         "shape is not an array"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, SW_EFORMAT,
         "shape[0] is not a non-negative integer"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,2.0],\"data_offsets\":[0,8]}}", 8, SW_EFORMAT,
         "shape[1] is not a non-negative integer"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, SW_EFORMAT,
         "shape[0]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         SW_ETOOBIG, "shape has 9 dimensions, at most 8"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, 0,
         ""},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
         SW_ETOOBIG, "shape [4294967296, 4294967296] x F32 overflows"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", 0,
         SW_ETOOBIG, "overflows"},
        /* A zero dimension makes an otherwise overflowing product empty. */
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,0],\"data_offsets\":[0,0]}}",
         0, 0, ""},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,0]}}", 0,
         SW_EFORMAT, "header JSON"},
        /* data_offsets */
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, SW_EFORMAT,
         "data_offsets is not [begin, end]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, SW_EFORMAT,
         "data_offsets is not [begin, end]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", 4, SW_EFORMAT,
         "data_offsets is not [begin, end]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, SW_EFORMAT,
         "data_offsets is not [begin, end]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4, SW_EFORMAT,
         "data_offsets is not [begin, end]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, SW_EFORMAT,
         "data_offsets [4, 0] begin after end"},
        {"{\"wte.weight\":{\"dtype\":\"F32\",\"shape\":[50257,128],"
         "\"data_offsets\":[0,25731580]}}",
         0, SW_EFORMAT,
         "tensor 'wte.weight': shape [50257, 128] x F32 is 25731584 bytes but data_offsets span "
         "25731580"},
        {"{\"w\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12, SW_EFORMAT,
         "shape [3] x BF16 is 6 bytes but data_offsets span 12"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, SW_ETRUNCATED,
         "tensor 'w': data_offsets [0, 8] end past the data section of 4 bytes"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[9,9]}}", 8, SW_ETRUNCATED,
         "end past the data section of 8 bytes"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":"
         "[9223372036854775807,9223372036854775807]}}",
         0, SW_ETRUNCATED, "end past the data section"},
        /* layout of the data section */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, SW_EFORMAT, "tensors 'a' [0, 8) and 'b' [4, 12) overlap"},
        {"{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         12, SW_EFORMAT, "tensors 'a' [0, 8) and 'b' [4, 12) overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
         4, SW_EFORMAT, "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
         12, SW_EFORMAT, "tensor 'b' begins at data offset 8, leaving a hole of 4 bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, SW_EFORMAT,
         "hole of 4 bytes after offset 0"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 7, SW_EFORMAT,
         "data section is 7 bytes but the tensors cover 4 (3 trailing bytes)"},
        {"{}", 1, SW_EFORMAT, "data section is 1 bytes but the tensors cover 0"},
        /* Empty tensors may sit anywhere inside the tiling, even at a shared offset. */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"e\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[4,4]},"
         "\"f\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[4,4]},"
         "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[4,8]}}",
         8, 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        unsigned char *buf = make_file(cases[i].header, cases[i].data_len, &len);
        print_message("case %zu: %s\n", i, cases[i].header);
        expect_open_mem(buf, len, cases[i].code, cases[i].msg);
        free(buf);
    }
}

static void test_header_length_field(void **state)
{
    (void)state;
    unsigned char buf[32] = {0};
    /* Files shorter than the length field. */
    for (size_t len = 0; len < 8; len++)
        expect_open_mem(len ? buf : NULL, len, SW_ETRUNCATED, "shorter than the 8-byte");
    /* Lengths 0 and 1 cannot hold "{}". */
    expect_open_mem(buf, 16, SW_EFORMAT, "header length 0 is too small");
    buf[0] = 1;
    expect_open_mem(buf, 16, SW_EFORMAT, "header length 1 is too small");
    /* Past the end of the file. */
    buf[0] = 25;
    memcpy(buf + 8, "{}", 2);
    expect_open_mem(buf, 32, SW_ETRUNCATED, "header length 25 runs past the end of the 32-byte");
    /* Padding must be JSON whitespace: NUL padding is malformed, as in the reference. */
    buf[0] = 8;
    memcpy(buf + 8, "{}   \0\0\0", 8);
    expect_open_mem(buf, 16, SW_EFORMAT, "header JSON");
    memcpy(buf + 8, "{}\t\r\n   ", 8);
    expect_open_mem(buf, 16, 0, "");
    /* Above the limit, and a length with the top bit set (negative if signed). */
    uint64_t big = (uint64_t)SW_ST_MAX_HEADER + 1;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(big >> (8 * i));
    expect_open_mem(buf, 32, SW_ETOOBIG, "exceeds the limit");
    memset(buf, 0xff, 8);
    expect_open_mem(buf, 32, SW_ETOOBIG, "header length 18446744073709551615 exceeds");
}

static void test_tensor_count_limit(void **state)
{
    (void)state;
    /* SW_ST_MAX_TENSORS empty tensors load; one more is refused before any table is built. */
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = SW_ST_MAX_TENSORS + (size_t)extra;
        size_t cap = n * 64 + 16, used = 0;
        char *h = malloc(cap);
        assert_non_null(h);
        h[used++] = '{';
        for (size_t i = 0; i < n; i++)
            used += (size_t)snprintf(h + used, cap - used,
                                     "%s\"t%zu\":{\"dtype\":\"F32\",\"shape\":[0],"
                                     "\"data_offsets\":[0,0]}",
                                     i ? "," : "", i);
        h[used++] = '}';
        h[used] = '\0';
        size_t len;
        unsigned char *buf = make_file(h, 0, &len);
        if (extra == 0) {
            sw_safetensors *st;
            sw_diag d;
            if (sw_safetensors_open_mem(buf, len, "many", &st, &d) != 0) fail_msg("%s", d.msg);
            assert_int_equal(sw_safetensors_count(st), SW_ST_MAX_TENSORS);
            assert_non_null(sw_safetensors_find(st, "t65535"));
            assert_string_equal(sw_safetensors_at(st, 12345)->name, "t12345");
            sw_safetensors_close(st);
        } else {
            expect_open_mem(buf, len, SW_ETOOBIG, "65537 tensors, the limit is 65536");
        }
        free(buf);
        free(h);
    }
}

static void test_escaped_names_and_metadata(void **state)
{
    (void)state;
    size_t len;
    unsigned char *buf =
        make_file("{\"__metadata__\":{\"format\":\"pt\",\"note\":\"x\"},"
                  "\"a\\u0041\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                  4, &len);
    put_f32(buf + len - 4, 0.75f);
    sw_safetensors *st;
    sw_diag d;
    assert_int_equal(sw_safetensors_open_mem(buf, len, "esc", &st, &d), 0);
    const sw_st_tensor *t = sw_safetensors_find(st, "aA");
    assert_non_null(t);
    assert_int_equal(t->ndim, 1);
    float v;
    sw_st_tensor_to_f32(t, &v);
    assert_true(v == 0.75f);
    assert_string_equal(sw_safetensors_metadata(st), "{\"format\":\"pt\",\"note\":\"x\"}");
    sw_safetensors_close(st);
    free(buf);

    buf = make_file("{}", 0, &len);
    assert_int_equal(sw_safetensors_open_mem(buf, len, "none", &st, &d), 0);
    assert_null(sw_safetensors_metadata(st));
    assert_int_equal(sw_safetensors_count(st), 0);
    assert_null(sw_safetensors_find(st, "x"));
    sw_safetensors_close(st);
    free(buf);
}

/* A small valid file from the writer: every prefix must fail, cleanly. */
static void test_every_truncation_and_corruption(void **state)
{
    (void)state;
    char path[128];
    tmp_path(path, sizeof path, "small.safetensors");
    const float a[6] = {1, 2, 3, 4, 5, 6};
    sw_st_write_tensor w[3] = {
        {.name = "wte.weight", .ndim = 2, .shape = {3, 2}, .data = a},
        {.name = "ln.bias", .ndim = 1, .shape = {2}, .data = a},
        {.name = "s", .ndim = 0, .data = a + 5},
    };
    sw_diag d;
    assert_int_equal(sw_safetensors_write(path, w, 3, SW_DTYPE_F16, &d), 0);
    size_t len;
    unsigned char *full = read_all(path, &len);
    for (size_t cut = 0; cut < len; cut++) {
        /* A fresh allocation of exactly cut bytes so ASan sees any overread. */
        unsigned char *p = malloc(cut ? cut : 1);
        assert_non_null(p);
        memcpy(p, full, cut);
        sw_safetensors *st = NULL;
        int rc = sw_safetensors_open_mem(p, cut, "cut.st", &st, &d);
        if (rc >= 0) fail_msg("prefix of %zu/%zu bytes was accepted", cut, len);
        assert_null(st);
        assert_true(strncmp(d.msg, "cut.st: ", 8) == 0);
        free(p);
    }
    /* Single-byte corruptions: either a clean error or a file that validates
     * (e.g. a changed data byte); never a crash.  Accepted files are read whole. */
    static const unsigned char values[] = {0x00, 0x01, 0x20, 0x22, 0x2c, 0x30, 0x39,
                                           0x5b, 0x5d, 0x7b, 0x7d, 0x7f, 0x80, 0xff};
    size_t accepted = 0, rejected = 0;
    unsigned char *p = malloc(len);
    assert_non_null(p);
    for (size_t at = 0; at < len; at++) {
        for (size_t k = 0; k < sizeof values; k++) {
            memcpy(p, full, len);
            p[at] = values[k];
            sw_safetensors *st = NULL;
            int rc = sw_safetensors_open_mem(p, len, "bit.st", &st, &d);
            if (rc == 0) {
                accepted++;
                for (size_t i = 0; i < sw_safetensors_count(st); i++) {
                    const sw_st_tensor *t = sw_safetensors_at(st, i);
                    float *out = malloc(t->numel ? t->numel * sizeof(float) : 1);
                    assert_non_null(out);
                    sw_st_tensor_to_f32(t, out);
                    free(out);
                }
                sw_safetensors_close(st);
            } else {
                assert_null(st);
                assert_true(strncmp(d.msg, "bit.st: ", 8) == 0);
                rejected++;
            }
        }
    }
    print_message("corruptions: %zu accepted, %zu rejected\n", accepted, rejected);
    assert_true(rejected > 0 && accepted > 0);
    free(p);
    free(full);
}

static void test_open_file_errors(void **state)
{
    (void)state;
    sw_safetensors *st = NULL;
    sw_diag d;
    char path[128];
    tmp_path(path, sizeof path, "does-not-exist.safetensors");
    assert_int_equal(sw_safetensors_open(path, &st, &d), SW_ENOENT);
    assert_non_null(strstr(d.msg, path));
    assert_int_equal(sw_safetensors_open(tmpdir, &st, &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "not a regular file"));
    tmp_path(path, sizeof path, "short.safetensors");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite("\x02\0\0", 1, 3, f);
    fclose(f);
    assert_int_equal(sw_safetensors_open(path, &st, &d), SW_ETRUNCATED);
    assert_non_null(strstr(d.msg, "short.safetensors: file is 3 bytes"));
    tmp_path(path, sizeof path, "empty.safetensors");
    f = fopen(path, "wb");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(sw_safetensors_open(path, &st, &d), SW_ETRUNCATED);
    assert_null(st);
}

/* Values checked against numpy.frombuffer on the same file. */
static void test_fixture_model(void **state)
{
    (void)state;
    sw_safetensors *st;
    sw_diag d;
    if (sw_safetensors_open(FIXTURE_MODEL, &st, &d) != 0) fail_msg("%s", d.msg);
    /* 2 embeddings + ln_f (2) + 4 layers x 12 tensors */
    assert_int_equal(sw_safetensors_count(st), 52);
    assert_string_equal(sw_safetensors_at(st, 0)->name, "wte.weight");
    const sw_st_tensor *wte = sw_safetensors_find(st, "wte.weight");
    assert_non_null(wte);
    assert_int_equal(wte->dtype, SW_DTYPE_F16); /* the bundled copy is F16 */
    assert_int_equal(wte->ndim, 2);
    assert_int_equal(wte->shape[0], 50257);
    assert_int_equal(wte->shape[1], 128);
    const sw_st_tensor *fc = sw_safetensors_find(st, "h.3.mlp.c_fc.weight");
    assert_non_null(fc);
    assert_int_equal(fc->shape[0], 128);
    assert_int_equal(fc->shape[1], 512);
    uint64_t total = 0;
    for (size_t i = 0; i < sw_safetensors_count(st); i++)
        total += sw_safetensors_at(st, i)->numel;
    assert_int_equal(total, 7259008); /* the README's 7.26 M, tied head */
    float *w = malloc(wte->numel * sizeof *w);
    assert_non_null(w);
    sw_st_tensor_to_f32(wte, w);
    /* F16 values widen exactly: these are the stored halves */
    assert_true(w[0] == 0.07696533203125f);
    assert_true(w[1] == -0.062286376953125f);
    assert_true(w[2] == -0.125732421875f);
    free(w);
    assert_string_equal(sw_safetensors_metadata(st), "{\"format\":\"pt\"}");
    sw_safetensors_close(st);
    sw_safetensors_close(NULL);
}

/*
 * The fuzz seeds were written by tests/fuzz/make_seeds.py with Python's json
 * and struct, not by our writer: valid_* must load, bad_* must not.
 */
static void test_python_written_seeds(void **state)
{
    (void)state;
    const char *dir = SW_SOURCE_ROOT "/tests/fuzz/corpus/safetensors";
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    int valid = 0, bad = 0;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL) {
        bool is_valid = strncmp(e->d_name, "valid_", 6) == 0;
        if (!is_valid && strncmp(e->d_name, "bad_", 4) != 0) continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        sw_safetensors *st = NULL;
        sw_diag d;
        int rc = sw_safetensors_open(path, &st, &d);
        if (is_valid && rc != 0) fail_msg("%s rejected: %s", e->d_name, d.msg);
        if (!is_valid && rc == 0) fail_msg("%s accepted", e->d_name);
        print_message("%s: %s\n", e->d_name, rc ? d.msg : "ok");
        is_valid ? valid++ : bad++;
        sw_safetensors_close(st);
    }
    closedir(dp);
    assert_true(valid >= 3 && bad >= 3);

    /* numpy's float16 agrees with ours on the F16 seed. */
    sw_safetensors *st;
    sw_diag d;
    assert_int_equal(
        sw_safetensors_open(SW_SOURCE_ROOT "/tests/fuzz/corpus/safetensors/valid_f16", &st, &d), 0);
    const sw_st_tensor *a = sw_safetensors_find(st, "a");
    assert_non_null(a);
    float v[4];
    sw_st_tensor_to_f32(a, v);
    assert_true(v[0] == 1.0f && v[1] == -2.0f && v[2] == 65504.0f);
    assert_true(v[3] == 0x1p-24f); /* 6e-8 rounds to the smallest subnormal */
    sw_safetensors_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_helpers),
        cmocka_unit_test(test_write_f32_exact_bytes),
        cmocka_unit_test(test_roundtrip_f32),
        cmocka_unit_test(test_roundtrip_f16),
        cmocka_unit_test(test_roundtrip_bf16),
        cmocka_unit_test(test_write_rejects_bad_input),
        cmocka_unit_test(test_hostile_headers),
        cmocka_unit_test(test_header_length_field),
        cmocka_unit_test(test_tensor_count_limit),
        cmocka_unit_test(test_escaped_names_and_metadata),
        cmocka_unit_test(test_every_truncation_and_corruption),
        cmocka_unit_test(test_open_file_errors),
        cmocka_unit_test(test_fixture_model),
        cmocka_unit_test(test_python_written_seeds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

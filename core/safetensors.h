/*
 * safetensors: reader and writer of the Hugging Face safetensors format
 * (8-byte little-endian header length, JSON header, raw little-endian data).
 *
 * The reader memory-maps the file (or borrows a caller's buffer) and
 * validates everything before returning: header length bounds, well-formed
 * JSON, known dtype, shape x dtype size == byte range, ranges inside the data
 * section, no overlapping ranges.  A sw_safetensors owns its mapping and its
 * tensor table; tensor data pointers stay valid until sw_safetensors_close.
 *
 * Dtypes read: F32, F16, BF16.  Dtypes written: F32, F16 (and BF16).
 * Thread safety: a sw_safetensors may be read from many threads at once.
 */
#ifndef SW_SAFETENSORS_H
#define SW_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "sw_error.h"

typedef enum sw_dtype {
    SW_DTYPE_F32 = 0,
    SW_DTYPE_F16 = 1,
    SW_DTYPE_BF16 = 2,
} sw_dtype;

#define SW_ST_MAX_DIMS 8
/* Headers larger than this are refused (the reference implementation's bound). */
#define SW_ST_MAX_HEADER (100u * 1024u * 1024u)
#define SW_ST_MAX_TENSORS 65536

/* Bytes per element of a dtype. */
size_t sw_dtype_size(sw_dtype dtype);
/* "F32", "F16", "BF16". */
const char *sw_dtype_name(sw_dtype dtype);
/* Parses "F32"/"F16"/"BF16" (as written in files) and "f32"/"f16"/"bf16" (as typed). */
int sw_dtype_parse(const char *name, sw_dtype *out);

typedef struct sw_st_tensor {
    const char *name; /* NUL-terminated, owned by the file object */
    sw_dtype dtype;
    int ndim; /* 0..SW_ST_MAX_DIMS; 0 is a scalar */
    int64_t shape[SW_ST_MAX_DIMS];
    uint64_t numel;   /* product of shape (1 for a scalar) */
    const void *data; /* inside the mapping; not aligned in general */
    uint64_t nbytes;
} sw_st_tensor;

typedef struct sw_safetensors sw_safetensors;

/* Opens and validates path (memory-mapped, read-only). */
int sw_safetensors_open(const char *path, sw_safetensors **out, sw_diag *diag);

/*
 * Validates a file image held in memory.  buf is borrowed and must outlive the
 * returned object; name is used in error messages only.
 */
int sw_safetensors_open_mem(const void *buf, size_t len, const char *name, sw_safetensors **out,
                            sw_diag *diag);

/* Accepts NULL. */
void sw_safetensors_close(sw_safetensors *st);

/* Tensors in file (header) order. */
size_t sw_safetensors_count(const sw_safetensors *st);
const sw_st_tensor *sw_safetensors_at(const sw_safetensors *st, size_t i);
/* NULL if absent. */
const sw_st_tensor *sw_safetensors_find(const sw_safetensors *st, const char *name);
/* The "__metadata__" object as a JSON text, or NULL if the file has none. */
const char *sw_safetensors_metadata(const sw_safetensors *st);

/* Converts a tensor's data to float (out holds t->numel values). */
void sw_st_tensor_to_f32(const sw_st_tensor *t, float *out);

typedef struct sw_st_write_tensor {
    const char *name;
    int ndim;
    int64_t shape[SW_ST_MAX_DIMS];
    const float *data; /* numel values, converted to the file dtype */
} sw_st_write_tensor;

/*
 * Writes tensors in the given order with dtype F32 or F16 (BF16 also works),
 * header padded to a multiple of 8 bytes, metadata {"format":"pt"}.  Crash-safe: written to a
 * temporary file, fsynced and renamed.  The output is a pure function of the
 * inputs (byte-identical for equal tensors).
 */
int sw_safetensors_write(const char *path, const sw_st_write_tensor *tensors, size_t n,
                         sw_dtype dtype, sw_diag *diag);

#endif

/*
 * fileio: whole-file reads with a size limit, and crash-safe whole-file
 * writes (temporary file, fsync, rename, fsync of the directory).
 *
 * Buffers returned by sw_file_read are owned by the caller (free()) and are
 * NUL-terminated one byte past *len so text parsers may treat them as strings.
 * Thread safety: reentrant.
 */
#ifndef SW_FILEIO_H
#define SW_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sw_error.h"

/*
 * Reads all of path.  A file larger than max_bytes fails with SW_ETOOBIG
 * before anything is allocated.  On success *out and *len are set.
 */
int sw_file_read(const char *path, size_t max_bytes, char **out, size_t *len, sw_diag *diag);

/*
 * Writes data to path atomically: path.tmp.PID is written, fsynced and renamed
 * over path, then the directory is fsynced.  Mode is applied to the new file.
 */
int sw_file_write_atomic(const char *path, const void *data, size_t len, int mode, sw_diag *diag);

/* fsync of a directory, so that a rename or a new file in it is durable. */
int sw_fsync_dir(const char *dir);
/* fsync of the directory that holds path ("." for a bare name). */
int sw_fsync_parent(const char *path);

/* Creates a directory (and no parents) if it does not exist. */
int sw_mkdir(const char *path, int mode, sw_diag *diag);

/* Joins dir and name into buf ("dir/name"); SW_ETOOBIG if it does not fit. */
int sw_path_join(char *buf, size_t size, const char *dir, const char *name);

/*
 * pread/pwrite of exactly n bytes at off, retrying short transfers and EINTR.
 * A read that meets the end of the file first is SW_ETRUNCATED.
 */
int sw_pread_all(int fd, uint8_t *p, size_t n, uint64_t off);
int sw_pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off);

/*
 * Creates path holding exactly data, or leaves an existing one alone: the
 * bytes go to PATH.tmp.PID (O_EXCL, mode), are fsynced, then link()ed into
 * place (never rename: a file another process created first wins, and
 * *lost_race, which may be NULL, says so), then the directory is fsynced.
 * No crash leaves a torn file at path.
 */
int sw_file_create_once(const char *path, const void *data, size_t len, int mode, bool *lost_race,
                        sw_diag *diag);

/* Copies a file atomically (read, then sw_file_write_atomic). */
int sw_file_copy(const char *src, const char *dst, size_t max_bytes, sw_diag *diag);

#endif

#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int sw_file_read(const char *path, size_t max_bytes, char **out, size_t *len, sw_diag *diag)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", path, strerror(err));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return sw_diag_set(diag, SW_EINVAL, "%s: not a regular file", path);
    }
    if ((unsigned long long)st.st_size > max_bytes) {
        close(fd);
        return sw_diag_set(diag, SW_ETOOBIG, "%s: file is %lld bytes, the limit is %zu", path,
                           (long long)st.st_size, max_bytes);
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    if (buf == NULL) {
        close(fd);
        return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory reading %zu bytes", path, size);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            free(buf);
            close(fd);
            return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", path, strerror(err));
        }
        if (n == 0) break; /* the file shrank while we read: take what is there */
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    *out = buf;
    *len = got;
    return 0;
}

int sw_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return sw_error_from_errno(errno);
    int rc = fsync(fd) == 0 ? 0 : sw_error_from_errno(errno);
    close(fd);
    return rc;
}

int sw_fsync_parent(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return SW_ETOOBIG;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    return sw_fsync_dir(dir);
}

int sw_file_write_atomic(const char *path, const void *data, size_t len, int mode, sw_diag *diag)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        int err = errno;
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", tmp, strerror(err));
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            close(fd);
            unlink(tmp);
            return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", tmp, strerror(err));
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int err = errno;
        unlink(tmp);
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", tmp, strerror(err));
    }
    if (rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", path, strerror(err));
    }
    int rc = sw_fsync_parent(path);
    if (rc != 0) return sw_diag_set(diag, rc, "%s: fsync of directory: %s", path, sw_strerror(rc));
    return 0;
}

int sw_mkdir(const char *path, int mode, sw_diag *diag)
{
    if (mkdir(path, (mode_t)mode) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
        return sw_diag_set(diag, SW_EEXIST, "%s: exists and is not a directory", path);
    }
    int err = errno;
    return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", path, strerror(err));
}

int sw_path_join(char *buf, size_t size, const char *dir, const char *name)
{
    int n = snprintf(buf, size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= size) return SW_ETOOBIG;
    return 0;
}

int sw_file_copy(const char *src, const char *dst, size_t max_bytes, sw_diag *diag)
{
    char *buf;
    size_t len;
    int rc = sw_file_read(src, max_bytes, &buf, &len, diag);
    if (rc != 0) return rc;
    rc = sw_file_write_atomic(dst, buf, len, 0644, diag);
    free(buf);
    return rc;
}

int sw_pread_all(int fd, uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return sw_error_from_errno(errno);
        }
        if (r == 0) return SW_ETRUNCATED;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int sw_pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t r = pwrite(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return sw_error_from_errno(errno);
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int sw_file_create_once(const char *path, const void *data, size_t len, int mode, bool *lost_race,
                        sw_diag *diag)
{
    char tmp[4200];
    if (lost_race) *lost_race = false;
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        int err = errno;
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", tmp, strerror(err));
    }
    int rc = sw_pwrite_all(fd, data, len, 0);
    if (rc == 0 && fsync(fd) != 0) rc = sw_error_from_errno(errno);
    if (close(fd) != 0 && rc == 0) rc = sw_error_from_errno(errno);
    if (rc == 0 && link(tmp, path) != 0) rc = sw_error_from_errno(errno);
    unlink(tmp);
    if (rc == SW_EEXIST) {
        if (lost_race) *lost_race = true;
        rc = 0;
    }
    if (rc == 0) rc = sw_fsync_parent(path);
    if (rc != 0) return sw_diag_set(diag, rc, "%s: creating: %s", path, sw_strerror(rc));
    return 0;
}

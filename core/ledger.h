/*
 * ledger: the node's append-only, checksummed file of updates, and the
 * in-memory index over it (which (origin, step) pairs are held, where, and
 * the version vector).
 *
 * The model state is always "checkpoint + ledger suffix": update i of the
 * ledger (0-based, in file order) is applied after updates 0..i-1.  An
 * update counts as made only once sw_ledger_append has returned 0: its bytes
 * are then written and fsynced ("written ahead"); publish after that.
 *
 * File (little-endian; byte layout in docs/state.md):
 *   header  64 bytes: magic "SWLEDGR1", version, run_id, BLAKE2b-128 check
 *   records: u32 count | u32 type | count * 45-byte updates | BLAKE2b-128
 *            of everything before it in the record
 * A record holds 1..SW_LEDGER_RECORD_MAX updates and is fsynced on its own,
 * so a crash can damage only the last record.
 *
 * Open scans and validates every record:
 *   - a torn tail (an incomplete last record, or a bad last record with no
 *     valid record after it) is truncated to the previous record boundary
 *     (ftruncate + fsync) and the number of bytes removed is reported;
 *   - a bad record followed by a valid one (corruption in the middle) is
 *     SW_EFORMAT naming the file and the byte offset; nothing is changed on
 *     disk, and the node refuses to start (docs/state.md: recovery);
 *   - a header for another run id is SW_EMISMATCH; a duplicate (origin,
 *     step) is SW_EFORMAT naming its offset.
 * Read-only opens (export while a daemon runs) never write: a torn tail is
 * ignored, not truncated.
 *
 * Version vector: per origin, `prefix` = the length of the contiguous run of
 * steps 0..prefix-1 held, plus the sorted set of `extra` steps held beyond
 * it (updates that arrived out of order).  Memory: 8 bytes per held update
 * plus a few bytes per record; updates themselves stay on disk and are read
 * back with pread.
 *
 * Ownership: a sw_ledger owns its fd and index.  Thread safety: none inside;
 * the owner (the daemon's loop thread) serialises every call.
 */
#ifndef SW_LEDGER_H
#define SW_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sw_error.h"
#include "update.h"

#define SW_LEDGER_VERSION 1
#define SW_LEDGER_HEADER_BYTES 64
#define SW_LEDGER_UPDATE_BYTES 45 /* origin 32 | step u64 | q i8 | scale f32 bits */
#define SW_LEDGER_RECORD_MAX 1024 /* updates per record */
/* A ledger holds at most this many updates (the index is 8 bytes each). */
#define SW_LEDGER_MAX_UPDATES (UINT64_C(1) << 32)

/* Record types.  Only updates exist today; an unknown type is corruption. */
enum { SW_LEDGER_REC_UPDATES = 1 };

/* One origin's entry of a version vector. */
typedef struct sw_vv_origin {
    uint8_t origin[SW_ID_BYTES];
    uint64_t prefix; /* steps [0, prefix) are held */
    size_t n_extra;
    uint64_t *extra; /* (n_extra) sorted, each > prefix; owned by the sw_vv */
} sw_vv_origin;

/* A version vector: origins sorted by their bytes. */
typedef struct sw_vv {
    size_t n;
    sw_vv_origin *o; /* (n) */
} sw_vv;

/* Releases the arrays of a vv (accepts a zeroed one) and zeroes it. */
void sw_vv_fini(sw_vv *vv);
/* Deep-copies src into *dst (dst is overwritten, not freed). */
int sw_vv_copy(const sw_vv *src, sw_vv *dst);
/* Number of updates the vv describes (sum of prefix + n_extra). */
uint64_t sw_vv_total(const sw_vv *vv);
/* True when a and b describe the same set of updates. */
bool sw_vv_equal(const sw_vv *a, const sw_vv *b);

typedef struct sw_ledger sw_ledger;

typedef struct sw_ledger_open_info {
    uint64_t n_updates; /* updates held after the scan */
    uint64_t n_records;
    uint64_t size;            /* file bytes after the scan (and truncation) */
    uint64_t truncated_bytes; /* torn tail removed (or ignored when read-only) */
    bool created;             /* the file did not exist and was created */
} sw_ledger_open_info;

/*
 * Opens path, creating it (mode 0644, header written and fsynced, directory
 * fsynced) when it does not exist and readonly is false.  run_id must match
 * the header.  info (may be NULL) reports what the scan found.
 */
int sw_ledger_open(const char *path, const uint8_t run_id[SW_ID_BYTES], bool readonly,
                   sw_ledger **out, sw_ledger_open_info *info, sw_diag *diag);
/* Closes the file (no fsync needed: every append was fsynced).  Accepts NULL. */
void sw_ledger_close(sw_ledger *l);

/*
 * Appends u[0..k) in order (records of at most SW_LEDGER_RECORD_MAX updates,
 * each written and fsynced before the next) and indexes them.  Refuses the
 * whole batch, writing nothing, with SW_EEXIST if any (origin, step) is
 * already held or repeats in the batch (the caller filters with
 * sw_ledger_has; an equal step with different q/scale is an equivocation
 * the caller detects with sw_ledger_get).  Refuses a read-only ledger
 * (SW_EACCES).  On an I/O error the ledger is left as the file says and
 * further appends fail (SW_EIO): reopen to recover.
 */
int sw_ledger_append(sw_ledger *l, const sw_update *u, size_t k, sw_diag *diag);

/* Number of updates held (= the index the next append gets). */
uint64_t sw_ledger_count(const sw_ledger *l);
/* File path as given to open. */
const char *sw_ledger_path(const sw_ledger *l);

/*
 * Reads updates [first, first + max) in ledger order into out; *got receives
 * how many were read (fewer at the end; 0 when first >= count).
 * Replay from a checkpoint at position i: read from i in chunks.
 */
int sw_ledger_read(const sw_ledger *l, uint64_t first, sw_update *out, size_t max, size_t *got,
                   sw_diag *diag);

/* Is (origin, step) held? */
bool sw_ledger_has(const sw_ledger *l, const uint8_t origin[SW_ID_BYTES], uint64_t step);
/* The held update (origin, step) and its ledger index (may be NULL);
 * SW_ENOTFOUND when not held. */
int sw_ledger_get(const sw_ledger *l, const uint8_t origin[SW_ID_BYTES], uint64_t step,
                  sw_update *out, uint64_t *index, sw_diag *diag);
/* Length of origin's contiguous prefix (0 for an unknown origin). */
uint64_t sw_ledger_prefix(const sw_ledger *l, const uint8_t origin[SW_ID_BYTES]);
/*
 * The next step number for origin: 1 + the highest step held, or 0.  For the
 * node's own origin this is the next step to train; it never reuses a number
 * that reached the ledger.
 */
uint64_t sw_ledger_next_step(const sw_ledger *l, const uint8_t origin[SW_ID_BYTES]);
/* Number of origins with at least one update held. */
size_t sw_ledger_origin_count(const sw_ledger *l);
/* The current version vector (deep copy; sw_vv_fini releases it). */
int sw_ledger_vv(const sw_ledger *l, sw_vv *out);
/*
 * The version vector of the ledger's first `count` updates (indices
 * [0, count)): what a checkpoint at that position includes.  Costs a pass
 * over the in-memory index, no I/O.
 */
int sw_ledger_vv_at(const sw_ledger *l, uint64_t count, sw_vv *out);

#endif

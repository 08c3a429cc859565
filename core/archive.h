/*
 * archive: the node's store of update batches exactly as their origins
 * signed them, so that it can serve any origin's updates to a peer that
 * missed them (anti-entropy, join) and every receiver can still check the
 * origin's own signature.  The bytes of each entry are opaque here (a
 * signed protobuf Envelope; daemon/wire.h makes and checks them); the
 * archive indexes them by (origin, first_step, n_steps).
 *
 * The archive is a cache, not the source of truth: the ledger is.  It is
 * not fsynced; after a crash its torn tail is truncated, and a node
 * re-signs its own updates missing from it (the daemon's job).  Anything
 * else missing is fetched from peers again.
 *
 * File (little-endian, docs/state.md):
 *   header 64 bytes: magic "SWARCHV1", u32 version, u32 0, run_id (32),
 *                    16 bytes BLAKE2b-128 of the first 48
 *   entries: u32 len | origin (32) | u64 first_step | u32 n_steps |
 *            len bytes | BLAKE2b-128 of everything before it in the entry
 * Open scans every entry: a bad or incomplete entry and everything after it
 * is truncated (reported in info), since nothing depends on it.
 * Bounds: len <= SW_ARCHIVE_MAX_ENTRY, 1 <= n_steps <= SW_ARCHIVE_MAX_STEPS.
 *
 * Index memory: 24 bytes per entry (~64 updates each).  Entries of one
 * origin may overlap or repeat (a batch re-signed after a crash, one
 * received twice): sw_archive_covered says whether adding one is useful.
 *
 * Ownership: a sw_archive owns its fd and index.  Thread safety: none; one
 * thread (the daemon's loop thread) calls it.
 */
#ifndef SW_ARCHIVE_H
#define SW_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sw_error.h"
#include "update.h"

#define SW_ARCHIVE_HEADER_BYTES 64
#define SW_ARCHIVE_MAX_ENTRY (64u << 10)
#define SW_ARCHIVE_MAX_STEPS 1024

typedef struct sw_archive sw_archive;

typedef struct sw_archive_open_info {
    uint64_t entries;
    uint64_t size;            /* bytes after the scan */
    uint64_t truncated_bytes; /* torn or corrupt tail removed */
    bool created;
} sw_archive_open_info;

/* Opens or creates path (0644).  Another run's header is SW_EMISMATCH. */
int sw_archive_open(const char *path, const uint8_t run_id[SW_ID_BYTES], sw_archive **out,
                    sw_archive_open_info *info, sw_diag *diag);
void sw_archive_close(sw_archive *a); /* accepts NULL */

/* Appends one entry (written with one write(2); not fsynced).
 * SW_EINVAL, nothing written, for len outside 1..SW_ARCHIVE_MAX_ENTRY,
 * n_steps outside 1..SW_ARCHIVE_MAX_STEPS or steps past 2^64 - 1 (such an
 * entry in the file counts as corruption).  A failed or short write is
 * truncated away (SW_EIO). */
int sw_archive_append(sw_archive *a, const uint8_t origin[SW_ID_BYTES], uint64_t first_step,
                      uint32_t n_steps, const uint8_t *bytes, size_t len, sw_diag *diag);

/* True when every step of [first_step, first_step + n_steps) of origin is
 * already in some entry. */
bool sw_archive_covered(const sw_archive *a, const uint8_t origin[SW_ID_BYTES], uint64_t first_step,
                        uint32_t n_steps);

/* One past the highest step of origin held contiguously from 0 (0: none). */
uint64_t sw_archive_prefix(const sw_archive *a, const uint8_t origin[SW_ID_BYTES]);

/*
 * Finds entries of origin that together cover as much as possible of
 * [first_step, first_step + max_steps), in step order, starting with the
 * entry that holds first_step; stops at a gap, at max_entries entries or
 * when the next entry would exceed max_bytes in total.  For each it calls
 * fn(ctx, bytes, len) with the entry's bytes (valid during the call).
 * *n_out (may be NULL) receives how many were given; 0 when none hold
 * first_step.
 * A non-zero return from fn stops the fetch and is returned (*n_out does
 * not count that entry).  fn must not call into the archive: the bytes
 * live in its buffer.  An entry that no longer matches its checksum (the
 * file changed since open) is SW_EFORMAT naming its offset.
 */
typedef int (*sw_archive_entry_fn)(void *ctx, const uint8_t *bytes, size_t len);
int sw_archive_fetch(const sw_archive *a, const uint8_t origin[SW_ID_BYTES], uint64_t first_step,
                     uint64_t max_steps, size_t max_entries, size_t max_bytes,
                     sw_archive_entry_fn fn, void *ctx, size_t *n_out, sw_diag *diag);

uint64_t sw_archive_count(const sw_archive *a); /* entries */

/* The origins with at least one entry, sorted by their bytes (0 <= i < count). */
size_t sw_archive_origin_count(const sw_archive *a);
void sw_archive_origin_at(const sw_archive *a, size_t i, uint8_t origin[SW_ID_BYTES]);

#endif

/*
 * strmap: two small open-addressing hash maps used by the tokenizer.
 *
 *   sw_strmap  byte string -> int32 value.  Keys are NOT copied: the map
 *              stores a pointer and length, so the key bytes must outlive
 *              the map (the tokenizer keeps them in an arena it owns).
 *   sw_u64map  uint64 key -> uint64 value (the tokenizer's merge table:
 *              key = left id << 32 | right id, value = rank << 32 | new id).
 *
 * Both use linear probing with a power-of-two table kept at most half full,
 * so a lookup touches a short run of slots.  There is no removal.
 *
 * Ownership: a map owns its slot array; fini releases it (and accepts a
 * zeroed map).  Thread safety: lookups are read-only and may run on many
 * threads at once; inserts need exclusive access.
 */
#ifndef SW_STRMAP_H
#define SW_STRMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct sw_strmap_slot {
    const char *key; /* NULL: empty slot */
    uint32_t len;
    int32_t value;
    uint64_t hash;
} sw_strmap_slot;

typedef struct sw_strmap {
    sw_strmap_slot *slots;
    size_t cap; /* a power of two, or 0 */
    size_t n;
} sw_strmap;

uint64_t sw_strmap_hash(const void *key, size_t len);

/* Sizes the table for `expected` keys (more may still be inserted). */
int sw_strmap_init(sw_strmap *m, size_t expected);
void sw_strmap_fini(sw_strmap *m);
/*
 * Inserts key -> value.  If the key is present already, nothing changes and
 * SW_EEXIST is returned with *existing (if not NULL) set to its value.
 */
int sw_strmap_put(sw_strmap *m, const char *key, size_t len, int32_t value, int32_t *existing);
/* 1 and *value set if present, else 0. */
int sw_strmap_get(const sw_strmap *m, const char *key, size_t len, int32_t *value);

typedef struct sw_u64map_slot {
    uint64_t key; /* UINT64_MAX: empty slot (so that key is not storable) */
    uint64_t value;
} sw_u64map_slot;

typedef struct sw_u64map {
    sw_u64map_slot *slots; /* key and value side by side: one cache line per probe */
    size_t cap;
    size_t n;
} sw_u64map;

int sw_u64map_init(sw_u64map *m, size_t expected);
void sw_u64map_fini(sw_u64map *m);
/* As sw_strmap_put; key must not be UINT64_MAX (SW_EINVAL). */
int sw_u64map_put(sw_u64map *m, uint64_t key, uint64_t value, uint64_t *existing);
int sw_u64map_get(const sw_u64map *m, uint64_t key, uint64_t *value);

#endif

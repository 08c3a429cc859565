#include "strmap.h"

#include <stdlib.h>
#include <string.h>

#include "sw_error.h"

/* The largest table either map grows to: 2^28 slots, far above 1<<20 keys. */
#define STRMAP_MAX_CAP ((size_t)1 << 28)

static uint64_t strmap_mix(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    return x;
}

uint64_t sw_strmap_hash(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)len;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ strmap_mix(w)) * 0xff51afd7ed558ccdull;
        p += 8;
        len -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, len);
    h = (h ^ strmap_mix(w ^ ((uint64_t)len << 59))) * 0xc4ceb9fe1a85ec53ull;
    return strmap_mix(h);
}

static size_t strmap_cap_for(size_t expected)
{
    size_t cap = 16;
    while (cap < STRMAP_MAX_CAP && cap / 2 < expected)
        cap *= 2;
    return cap;
}

int sw_strmap_init(sw_strmap *m, size_t expected)
{
    m->n = 0;
    m->cap = strmap_cap_for(expected);
    m->slots = calloc(m->cap, sizeof *m->slots);
    if (m->slots == NULL) {
        m->cap = 0;
        return SW_ENOMEM;
    }
    return 0;
}

void sw_strmap_fini(sw_strmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = 0;
    m->n = 0;
}

static sw_strmap_slot *strmap_find(const sw_strmap *m, const char *key, size_t len, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        sw_strmap_slot *s = &m->slots[i];
        if (s->key == NULL) return s;
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0) return s;
    }
}

static int strmap_grow(sw_strmap *m)
{
    if (m->cap >= STRMAP_MAX_CAP) return SW_ETOOBIG;
    sw_strmap bigger = {calloc(m->cap * 2, sizeof *m->slots), m->cap * 2, m->n};
    if (bigger.slots == NULL) return SW_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key != NULL)
            *strmap_find(&bigger, m->slots[i].key, m->slots[i].len, m->slots[i].hash) = m->slots[i];
    }
    free(m->slots);
    *m = bigger;
    return 0;
}

int sw_strmap_put(sw_strmap *m, const char *key, size_t len, int32_t value, int32_t *existing)
{
    if (len > UINT32_MAX) return SW_ETOOBIG;
    if (m->cap == 0 || (m->n + 1) * 2 > m->cap) {
        int rc = m->cap == 0 ? sw_strmap_init(m, 16) : strmap_grow(m);
        if (rc != 0) return rc;
    }
    uint64_t h = sw_strmap_hash(key, len);
    sw_strmap_slot *s = strmap_find(m, key, len, h);
    if (s->key != NULL) {
        if (existing != NULL) *existing = s->value;
        return SW_EEXIST;
    }
    s->key = key;
    s->len = (uint32_t)len;
    s->value = value;
    s->hash = h;
    m->n++;
    return 0;
}

int sw_strmap_get(const sw_strmap *m, const char *key, size_t len, int32_t *value)
{
    if (m->cap == 0) return 0;
    const sw_strmap_slot *s = strmap_find(m, key, len, sw_strmap_hash(key, len));
    if (s->key == NULL) return 0;
    *value = s->value;
    return 1;
}

int sw_u64map_init(sw_u64map *m, size_t expected)
{
    m->n = 0;
    m->cap = strmap_cap_for(expected);
    m->slots = malloc(m->cap * sizeof *m->slots);
    if (m->slots == NULL) {
        m->cap = 0;
        return SW_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++)
        m->slots[i].key = UINT64_MAX;
    return 0;
}

void sw_u64map_fini(sw_u64map *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = 0;
    m->n = 0;
}

static sw_u64map_slot *u64map_find(const sw_u64map *m, uint64_t key)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)strmap_mix(key) & mask;
    while (m->slots[i].key != UINT64_MAX && m->slots[i].key != key)
        i = (i + 1) & mask;
    return &m->slots[i];
}

static int u64map_grow(sw_u64map *m)
{
    if (m->cap >= STRMAP_MAX_CAP) return SW_ETOOBIG;
    sw_u64map bigger;
    int rc = sw_u64map_init(&bigger, m->cap);
    if (rc != 0) return rc;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key != UINT64_MAX) *u64map_find(&bigger, m->slots[i].key) = m->slots[i];
    }
    bigger.n = m->n;
    sw_u64map_fini(m);
    *m = bigger;
    return 0;
}

int sw_u64map_put(sw_u64map *m, uint64_t key, uint64_t value, uint64_t *existing)
{
    if (key == UINT64_MAX) return SW_EINVAL;
    if (m->cap == 0 || (m->n + 1) * 2 > m->cap) {
        int rc = m->cap == 0 ? sw_u64map_init(m, 16) : u64map_grow(m);
        if (rc != 0) return rc;
    }
    sw_u64map_slot *s = u64map_find(m, key);
    if (s->key == key) {
        if (existing != NULL) *existing = s->value;
        return SW_EEXIST;
    }
    s->key = key;
    s->value = value;
    m->n++;
    return 0;
}

int sw_u64map_get(const sw_u64map *m, uint64_t key, uint64_t *value)
{
    if (m->cap == 0 || key == UINT64_MAX) return 0;
    const sw_u64map_slot *s = u64map_find(m, key);
    if (s->key != key) return 0;
    *value = s->value;
    return 1;
}

/*
 * members: the swarm table (members.h).
 *
 * Storage: peers live in their own allocations (m->peers is an array of
 * pointers), so a swd_peer * stays valid until that peer is forgotten (only
 * swd_members_add, _seen, _ban, _gossip and _announce can forget one, a
 * dead or left one, when the table is full) or the table is freed; the array order changes on a
 * forget (the last peer moves into the hole).  Lookup by id is an open-addressing hash (linear
 * probing, backward-shift deletion) of 2 * SWD_MEMBERS_MAX slots allocated once, so it never
 * rehashes and stays at most half full.  Ids are public keys a sender chooses, so colliding ids are
 * possible: the worst case is a probe of every entry, i.e. the linear scan the table replaces.
 */
#include "members.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sw_error.h"

#define MEMBERS_SLOTS (2u * SWD_MEMBERS_MAX) /* a power of two */

struct swd_members {
    swd_members_opts o;
    uint8_t self[SW_ID_BYTES];
    swd_peer **peers; /* (cap) the first n in use */
    size_t n, cap;
    swd_peer **slots; /* (MEMBERS_SLOTS) NULL: empty */
    /* the one bucket every unknown sender shares */
    double anon_tokens;
    uint64_t anon_tokens_ms;
};

const char *swd_peer_state_name(swd_peer_state s)
{
    switch (s) {
    case SWD_PEER_JOINING:
        return "joining";
    case SWD_PEER_ALIVE:
        return "alive";
    case SWD_PEER_SUSPECT:
        return "suspect";
    case SWD_PEER_DEAD:
        return "dead";
    case SWD_PEER_LEFT:
        return "left";
    }
    return "unknown";
}

static size_t members_home(const uint8_t id[SW_ID_BYTES])
{
    /* Fold the whole id so a sender cannot pick colliding keys by grinding a
     * prefix alone. */
    uint64_t h = 0;
    for (size_t i = 0; i < SW_ID_BYTES; i += 8) {
        uint64_t w = 0;
        for (size_t k = 0; k < 8; k++)
            w |= (uint64_t)id[i + k] << (8 * k);
        h = (h ^ w) * UINT64_C(0x9E3779B97F4A7C15);
        h ^= h >> 29;
    }
    return (size_t)(h & (MEMBERS_SLOTS - 1));
}

static bool members_is_self(const swd_members *m, const uint8_t id[SW_ID_BYTES])
{
    return memcmp(m->self, id, SW_ID_BYTES) == 0;
}

static swd_peer *members_lookup(const swd_members *m, const uint8_t id[SW_ID_BYTES])
{
    for (size_t i = members_home(id);; i = (i + 1) & (MEMBERS_SLOTS - 1)) {
        swd_peer *p = m->slots[i];
        if (!p) return NULL;
        if (memcmp(p->id, id, SW_ID_BYTES) == 0) return p;
    }
}

static void members_hash_insert(swd_members *m, swd_peer *p)
{
    size_t i = members_home(p->id);
    while (m->slots[i])
        i = (i + 1) & (MEMBERS_SLOTS - 1);
    m->slots[i] = p;
}

static void members_hash_remove(swd_members *m, const swd_peer *p)
{
    size_t i = members_home(p->id);
    while (m->slots[i] != p) {
        SW_ASSERT(m->slots[i]);
        i = (i + 1) & (MEMBERS_SLOTS - 1);
    }
    /* Backward shift: move later entries of the run into the hole unless
     * their home lies cyclically in (hole, j], where they already are
     * reachable without it. */
    for (size_t j = i;;) {
        j = (j + 1) & (MEMBERS_SLOTS - 1);
        swd_peer *q = m->slots[j];
        if (!q) break;
        size_t k = members_home(q->id);
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays) continue;
        m->slots[i] = q;
        i = j;
    }
    m->slots[i] = NULL;
}

static void members_peer_free(swd_peer *p)
{
    if (!p) return;
    free(p->vv);
    free(p->digest_vv);
    free(p);
}

int swd_members_alloc(const swd_members_opts *o, const uint8_t self[SW_ID_BYTES], swd_members **out)
{
    *out = NULL;
    if (!o || !self || o->heartbeat_ms == 0 || o->suspect_after == 0 ||
        o->dead_after <= o->suspect_after || !isfinite(o->rate_per_s) || o->rate_per_s < 0 ||
        !isfinite(o->rate_burst) || o->rate_burst < 1)
        return SW_EINVAL;
    swd_members *m = calloc(1, sizeof *m);
    if (!m) return SW_ENOMEM;
    m->o = *o;
    memcpy(m->self, self, SW_ID_BYTES);
    m->slots = calloc(MEMBERS_SLOTS, sizeof *m->slots);
    if (!m->slots) {
        free(m);
        return SW_ENOMEM;
    }
    m->anon_tokens = o->rate_burst;
    *out = m;
    return 0;
}

void swd_members_free(swd_members *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n; i++)
        members_peer_free(m->peers[i]);
    free(m->peers);
    free(m->slots);
    free(m);
}

size_t swd_members_count(const swd_members *m)
{
    return m->n;
}

swd_peer *swd_members_at(swd_members *m, size_t i)
{
    SW_ASSERT(i < m->n);
    return m->peers[i];
}

const swd_peer *swd_members_at_const(const swd_members *m, size_t i)
{
    SW_ASSERT(i < m->n);
    return m->peers[i];
}

swd_peer *swd_members_find(swd_members *m, const uint8_t id[SW_ID_BYTES])
{
    if (members_is_self(m, id)) return NULL;
    return members_lookup(m, id);
}

static void members_forget_at(swd_members *m, size_t i)
{
    swd_peer *p = m->peers[i];
    members_hash_remove(m, p);
    m->peers[i] = m->peers[--m->n];
    members_peer_free(p);
}

static uint64_t members_silent_since(const swd_peer *p)
{
    return p->last_seen_ms ? p->last_seen_ms : p->added_ms;
}

/*
 * Makes room for one more peer: forgets the longest-silent dead or left
 * one.  Banned peers are never forgotten, or forgetting would lift the ban.
 */
static bool members_make_room(swd_members *m)
{
    if (m->n < SWD_MEMBERS_MAX) return true;
    size_t victim = SIZE_MAX;
    for (size_t i = 0; i < m->n; i++) {
        const swd_peer *p = m->peers[i];
        if ((p->state != SWD_PEER_DEAD && p->state != SWD_PEER_LEFT) || p->banned) continue;
        if (victim == SIZE_MAX || members_silent_since(p) < members_silent_since(m->peers[victim]))
            victim = i;
    }
    if (victim == SIZE_MAX) return false;
    members_forget_at(m, victim);
    return true;
}

/* An address we can store: NUL-terminated within the wire bound, not empty. */
static bool members_addr_usable(const char *a)
{
    if (!a) return false;
    size_t len = strnlen(a, SWD_WIRE_MAX_ADDR + 1);
    return len > 0 && len <= SWD_WIRE_MAX_ADDR;
}

static void members_set_addr(char dst[SWD_WIRE_MAX_ADDR + 1], const char *src, bool replace)
{
    if (!members_addr_usable(src) || (dst[0] && !replace)) return;
    size_t len = strnlen(src, SWD_WIRE_MAX_ADDR);
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/*
 * Addresses that are NULL, empty or longer than SWD_WIRE_MAX_ADDR are not
 * stored (a truncated URL would dial the wrong place).
 */
swd_peer *swd_members_add(swd_members *m, const uint8_t id[SW_ID_BYTES], const char *pub_addr,
                          const char *sync_addr, bool replace_addrs, uint64_t now_ms)
{
    if (members_is_self(m, id)) return NULL;
    swd_peer *p = members_lookup(m, id);
    if (p) {
        members_set_addr(p->pub_addr, pub_addr, replace_addrs);
        members_set_addr(p->sync_addr, sync_addr, replace_addrs);
        return p;
    }
    if (!members_make_room(m)) return NULL;
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 16;
        if (cap > SWD_MEMBERS_MAX) cap = SWD_MEMBERS_MAX;
        swd_peer **grown = realloc(m->peers, cap * sizeof *grown);
        if (!grown) return NULL;
        m->peers = grown;
        m->cap = cap;
    }
    p = calloc(1, sizeof *p);
    if (!p) return NULL;
    memcpy(p->id, id, SW_ID_BYTES);
    members_set_addr(p->pub_addr, pub_addr, true);
    members_set_addr(p->sync_addr, sync_addr, true);
    p->state = SWD_PEER_JOINING;
    p->added_ms = now_ms;
    p->state_since_ms = now_ms;
    p->loss = NAN;
    p->tokens = m->o.rate_burst;
    p->tokens_ms = now_ms;
    m->peers[m->n++] = p;
    members_hash_insert(m, p);
    return p;
}

/* A banned peer that speaks is alive like any other; it stays banned. */
swd_peer *swd_members_seen(swd_members *m, const uint8_t id[SW_ID_BYTES], uint64_t now_ms)
{
    swd_peer *p = swd_members_add(m, id, NULL, NULL, false, now_ms);
    if (!p) return NULL;
    if (p->state != SWD_PEER_ALIVE) {
        p->state = SWD_PEER_ALIVE;
        p->state_since_ms = now_ms;
    }
    p->last_seen_ms = now_ms;
    return p;
}

/* Replaces *dst (n entries) with a copy of src; false when out of memory. */
static bool members_copy_vv(swd_vv_entry **dst, size_t *n_dst, const swd_vv_entry *src, size_t n)
{
    swd_vv_entry *copy = NULL;
    if (n > 0) {
        copy = malloc(n * sizeof *copy);
        if (!copy) return false;
        memcpy(copy, src, n * sizeof *copy);
    }
    free(*dst);
    *dst = copy;
    *n_dst = n;
    return true;
}

/*
 * Besides the drops in members.h: SWD_DROP_SELF for our own id,
 * SWD_DROP_BANNED for a banned peer, SWD_DROP_BAD_FIELD for a version
 * vector above SWD_WIRE_MAX_VV, SWD_DROP_UNEXPECTED when the sender is
 * unknown and cannot be added (table full), SWD_DROP_BACKLOG when out of
 * memory (the peer keeps its previous announce).
 */
bool swd_members_announce(swd_members *m, const uint8_t id[SW_ID_BYTES], const swd_announce *a,
                          uint64_t now_ms, swd_drop *drop)
{
    swd_drop why;
    swd_peer *p;
    swd_vv_entry *vv = NULL, *digest_vv = NULL;
    size_t n_vv = 0, n_digest_vv = 0;
    if (members_is_self(m, id)) {
        why = SWD_DROP_SELF;
        goto fail;
    }
    p = members_lookup(m, id);
    if (!p) p = swd_members_seen(m, id, now_ms);
    if (!p) {
        why = SWD_DROP_UNEXPECTED;
        goto fail;
    }
    if (p->banned) {
        why = SWD_DROP_BANNED;
        goto fail;
    }
    if (p->has_announce && a->seq <= p->seq) {
        why = SWD_DROP_REPLAY;
        goto fail;
    }
    if (a->n_vv > SWD_WIRE_MAX_VV || a->n_digest_vv > SWD_WIRE_MAX_VV ||
        a->n_members > SWD_WIRE_MAX_MEMBERS) {
        why = SWD_DROP_BAD_FIELD;
        goto fail;
    }
    /* Both copies first, so a failure leaves the peer as it was. */
    if (!members_copy_vv(&vv, &n_vv, a->vv, a->n_vv) ||
        !members_copy_vv(&digest_vv, &n_digest_vv, a->digest_vv, a->n_digest_vv)) {
        why = SWD_DROP_BACKLOG;
        goto fail;
    }
    free(p->vv);
    p->vv = vv;
    p->n_vv = n_vv;
    free(p->digest_vv);
    p->digest_vv = digest_vv;
    p->n_digest_vv = n_digest_vv;
    p->has_announce = true;
    p->seq = a->seq;
    p->node_state = a->state;
    p->step = a->step;
    p->ledger_updates = a->ledger_updates;
    p->loss = a->loss;
    p->has_digest = a->has_digest;
    if (a->has_digest)
        memcpy(p->digest, a->digest, SW_ID_BYTES);
    else
        memset(p->digest, 0, SW_ID_BYTES);
    /* The peer's own word on its addresses beats what gossip said. */
    members_set_addr(p->pub_addr, a->pub_addr, true);
    members_set_addr(p->sync_addr, a->sync_addr, true);
    swd_members_gossip(m, a->members, a->n_members, now_ms);
    return true;

fail:
    free(vv);
    free(digest_vv);
    if (drop) *drop = why;
    return false;
}

/*
 * Unknown ids are added as joining (the sender's "alive" is hearsay);
 * known ones only get addresses they lacked.  Self and unusable addresses
 * are skipped; a full table drops the rest.
 */
void swd_members_gossip(swd_members *m, const swd_member_info *list, size_t n, uint64_t now_ms)
{
    for (size_t i = 0; i < n; i++)
        (void)swd_members_add(m, list[i].id, list[i].pub_addr, list[i].sync_addr, false, now_ms);
}

/* Unknown ids are ignored: there is nothing to record about them. */
void swd_members_leave(swd_members *m, const uint8_t id[SW_ID_BYTES], uint64_t now_ms)
{
    swd_peer *p = swd_members_find(m, id);
    if (!p || p->state == SWD_PEER_LEFT) return;
    p->state = SWD_PEER_LEFT;
    p->state_since_ms = now_ms;
}

/* When the table is full of live or banned peers an unknown id cannot be
 * recorded, so the ban is not kept (the caller still drops that message). */
void swd_members_ban(swd_members *m, const uint8_t id[SW_ID_BYTES], uint64_t now_ms)
{
    swd_peer *p = swd_members_add(m, id, NULL, NULL, false, now_ms);
    if (p) p->banned = true;
}

bool swd_members_banned(const swd_members *m, const uint8_t id[SW_ID_BYTES])
{
    const swd_peer *p = members_lookup(m, id);
    return p && p->banned;
}

static bool members_take_token(const swd_members_opts *o, double *tokens, uint64_t *tokens_ms,
                               uint64_t now_ms)
{
    if (now_ms > *tokens_ms) {
        *tokens += (double)(now_ms - *tokens_ms) * o->rate_per_s / 1000.0;
        if (*tokens > o->rate_burst) *tokens = o->rate_burst;
        *tokens_ms = now_ms;
    }
    if (*tokens < 1.0) return false;
    *tokens -= 1.0;
    return true;
}

/* Self counts as unknown here (the caller drops its own echoes anyway). */
bool swd_members_rate_ok(swd_members *m, const uint8_t id[SW_ID_BYTES], uint64_t now_ms)
{
    swd_peer *p = swd_members_find(m, id);
    if (p) return members_take_token(&m->o, &p->tokens, &p->tokens_ms, now_ms);
    return members_take_token(&m->o, &m->anon_tokens, &m->anon_tokens_ms, now_ms);
}

static uint64_t members_mul_sat(uint64_t a, uint64_t b)
{
    if (a != 0 && b > UINT64_MAX / a) return UINT64_MAX;
    return a * b;
}

static uint64_t members_add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

void swd_members_tick(swd_members *m, uint64_t now_ms, swd_members_change_fn fn, void *ctx)
{
    uint64_t suspect_ms = members_mul_sat(m->o.suspect_after, m->o.heartbeat_ms);
    uint64_t dead_ms = members_mul_sat(m->o.dead_after, m->o.heartbeat_ms);
    for (size_t i = 0; i < m->n; i++) {
        swd_peer *p = m->peers[i];
        if (p->state == SWD_PEER_DEAD || p->state == SWD_PEER_LEFT) continue;
        uint64_t since = members_silent_since(p);
        uint64_t silent = now_ms > since ? now_ms - since : 0;
        swd_peer_state to = p->state;
        if (silent >= dead_ms)
            to = SWD_PEER_DEAD;
        else if (silent >= suspect_ms && p->state == SWD_PEER_ALIVE)
            to = SWD_PEER_SUSPECT;
        if (to == p->state) continue;
        swd_peer_state from = p->state;
        p->state = to;
        p->state_since_ms = now_ms;
        if (fn) fn(ctx, p, from);
    }
}

/*
 * The return value, precisely: steps are numbered from 0 and my_step is the
 * step this node would start next.  A peer constrains when it is alive (not
 * joining, suspect, dead or left), not banned, and its latest announce says
 * training.  For each constraining peer with held = held_steps(ctx, id)
 * (this node holds its steps [0, held)), the node may start step s only if
 * s <= held + max_staleness; with max_staleness 0 that is lockstep: step s
 * waits for every peer's steps below s.  The result is the largest s allowed
 * by every constraining, non-lagging peer: min(held + max_staleness),
 * saturating, UINT64_MAX when none constrains.  The caller starts my_step
 * iff my_step <= result.  A peer is behind while my_step > held +
 * max_staleness; behind for lag_timeout_ms (measured from the first call
 * that saw it behind) makes it lagging, and lagging peers are left out of
 * the minimum until a call sees them not behind.  Peers that do not
 * constrain keep their lagging mark and timer as they were, so a lagging
 * peer that blinks suspect does not hold the node back again.
 */
uint64_t swd_members_pace(swd_members *m, uint64_t my_step, uint64_t max_staleness,
                          uint64_t lag_timeout_ms, swd_members_held_fn held_steps, void *ctx,
                          uint64_t now_ms)
{
    SW_ASSERT(held_steps);
    uint64_t limit = UINT64_MAX;
    for (size_t i = 0; i < m->n; i++) {
        swd_peer *p = m->peers[i];
        if (p->state != SWD_PEER_ALIVE || p->banned || !p->has_announce ||
            p->node_state != SWD_STATE_TRAINING)
            continue;
        uint64_t allowed = members_add_sat(held_steps(ctx, p->id), max_staleness);
        if (my_step > allowed) {
            uint64_t since = p->behind_since_ms;
            if (since == 0) {
                since = now_ms;
                /* 0 means "not behind", so a clock at 0 records 1. */
                p->behind_since_ms = now_ms ? now_ms : 1;
            }
            if (now_ms >= since && now_ms - since >= lag_timeout_ms) p->lagging = true;
        } else {
            p->behind_since_ms = 0;
            p->lagging = false;
        }
        if (!p->lagging && allowed < limit) limit = allowed;
    }
    return limit;
}

void swd_members_count_states(const swd_members *m, size_t out[5])
{
    for (size_t s = 0; s < 5; s++)
        out[s] = 0;
    for (size_t i = 0; i < m->n; i++)
        if ((size_t)m->peers[i]->state < 5) out[m->peers[i]->state]++;
}

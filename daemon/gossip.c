/* The swarm's membership (gossip.h). */
#include "gossip.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

int swd_gossip_init(swd_gossip *g, swd_link *l, const swd_gossip_opts *o, const char *pub_url,
                    const char *sync_url)
{
    memset(g, 0, sizeof *g);
    g->link = l;
    g->announce_seq = o->announce_seq;
    snprintf(g->pub_url, sizeof g->pub_url, "%s", pub_url);
    snprintf(g->sync_url, sizeof g->sync_url, "%s", sync_url);
    swd_members_opts mo = {.heartbeat_ms = o->heartbeat_ms,
                           .suspect_after = o->suspect_after,
                           .dead_after = o->dead_after,
                           .rate_per_s = SWD_GOSSIP_RATE_PER_S,
                           .rate_burst = SWD_GOSSIP_RATE_BURST};
    return swd_members_alloc(&mo, l->self, &g->table);
}

void swd_gossip_fini(swd_gossip *g)
{
    swd_members_free(g->table);
    g->table = NULL;
}

bool swd_gossip_banned(const swd_gossip *g, const uint8_t id[SW_ID_BYTES])
{
    return swd_members_banned(g->table, id);
}

void swd_gossip_ban(swd_gossip *g, const uint8_t id[SW_ID_BYTES])
{
    swd_members_ban(g->table, id, swd_link_now_ms(g->link));
}

bool swd_gossip_rate_ok(swd_gossip *g, const uint8_t id[SW_ID_BYTES])
{
    return swd_members_rate_ok(g->table, id, swd_link_now_ms(g->link));
}

bool swd_gossip_admit(swd_gossip *g, const uint8_t *data, size_t len, swd_msg *m)
{
    uint8_t sender[SW_ID_BYTES];
    if (len > SWD_WIRE_MAX_MSG) {
        swd_link_drop(g->link, SWD_DROP_OVERSIZE, NULL);
        return false;
    }
    bool peeked = swd_wire_peek_sender(data, len, sender) == 0;
    if (peeked && swd_gossip_banned(g, sender)) {
        swd_link_drop(g->link, SWD_DROP_BANNED, sender);
        return false;
    }
    if (peeked && !swd_gossip_rate_ok(g, sender)) {
        swd_link_drop(g->link, SWD_DROP_RATE_LIMITED, sender);
        return false;
    }
    swd_drop drop;
    if (swd_wire_open(data, len, g->link->run_id, m, &drop) != 0) {
        swd_link_drop(g->link, drop, peeked ? sender : NULL);
        return false;
    }
    if (memcmp(m->sender, g->link->self, SW_ID_BYTES) == 0) {
        swd_link_drop(g->link, SWD_DROP_SELF, m->sender);
        swd_msg_fini(m);
        return false;
    }
    return true;
}

static void gossip_on_change(void *ctx, const swd_peer *p, swd_peer_state from)
{
    (void)ctx;
    char hex[SWD_HEX];
    swd_hex(p->id, hex);
    swd_log(p->state == SWD_PEER_DEAD || p->state == SWD_PEER_SUSPECT ? SWD_LOG_WARN : SWD_LOG_INFO,
            "peer state changed", "peer=%.12s from=%s to=%s addr=%s", hex,
            swd_peer_state_name(from), swd_peer_state_name(p->state),
            p->pub_addr[0] ? p->pub_addr : "?");
}

swd_peer *swd_gossip_seen(swd_gossip *g, const uint8_t id[SW_ID_BYTES])
{
    swd_peer *p = swd_members_find(g->table, id);
    swd_peer_state from = p ? p->state : SWD_PEER_JOINING;
    bool known = p != NULL;
    p = swd_members_seen(g->table, id, swd_link_now_ms(g->link));
    if (p && (!known || from != SWD_PEER_ALIVE)) gossip_on_change(g, p, from);
    return p;
}

void swd_gossip_heard(swd_gossip *g, const uint8_t id[SW_ID_BYTES])
{
    const swd_peer *q = swd_members_find(g->table, id);
    if (!q || q->state != SWD_PEER_LEFT) swd_gossip_seen(g, id);
}

const swd_peer *swd_gossip_on_announce(swd_gossip *g, const swd_msg *m)
{
    swd_drop drop;
    swd_gossip_seen(g, m->sender);
    if (!swd_members_announce(g->table, m->sender, &m->u.announce, swd_link_now_ms(g->link),
                              &drop)) {
        swd_link_drop(g->link, drop, m->sender);
        return NULL;
    }
    swd_gossip_subscribe_all(g); /* its address, and members it gossiped */
    return swd_members_find(g->table, m->sender);
}

void swd_gossip_on_leave(swd_gossip *g, const uint8_t id[SW_ID_BYTES])
{
    swd_peer *p = swd_members_find(g->table, id);
    swd_peer_state from = p ? p->state : SWD_PEER_JOINING;
    swd_members_leave(g->table, id, swd_link_now_ms(g->link));
    p = swd_members_find(g->table, id);
    if (p) gossip_on_change(g, p, from);
}

void swd_gossip_on_hello(swd_gossip *g, const uint8_t id[SW_ID_BYTES], const char *pub_addr,
                         const char *sync_addr)
{
    swd_members_add(g->table, id, pub_addr, sync_addr, false, swd_link_now_ms(g->link));
    swd_gossip_subscribe_all(g);
}

void swd_gossip_welcomed(swd_gossip *g, const swd_member_info *list, size_t n)
{
    swd_members_gossip(g->table, list, n, swd_link_now_ms(g->link));
    swd_gossip_subscribe_all(g);
}

void swd_gossip_tick(swd_gossip *g)
{
    swd_members_tick(g->table, swd_link_now_ms(g->link), gossip_on_change, g);
}

void swd_gossip_subscribe_all(swd_gossip *g)
{
    size_t n = swd_members_count(g->table);
    for (size_t i = 0; i < n; i++) {
        swd_peer *p = swd_members_at(g->table, i);
        if (p->subscribed || p->banned || !p->pub_addr[0]) continue;
        sw_diag d = {{0}};
        if (swd_link_subscribe(g->link, p->pub_addr, &d) == 0)
            p->subscribed = true;
        else
            swd_log(SWD_LOG_WARN, "cannot subscribe to a peer", "addr=%s error=%s", p->pub_addr,
                    SWD_LOG_Q(d.msg[0] ? d.msg : "?"));
    }
}

static void gossip_member(swd_member_info *out, const uint8_t id[SW_ID_BYTES], const char *pub,
                          const char *sync)
{
    memcpy(out->id, id, SW_ID_BYTES);
    snprintf(out->pub_addr, sizeof out->pub_addr, "%s", pub);
    snprintf(out->sync_addr, sizeof out->sync_addr, "%s", sync);
    out->alive = true;
}

size_t swd_gossip_list(const swd_gossip *g, swd_member_info *out, size_t max, bool with_self)
{
    size_t k = 0;
    if (with_self && k < max) gossip_member(&out[k++], g->link->self, g->pub_url, g->sync_url);
    size_t n = swd_members_count(g->table);
    for (size_t i = 0; i < n && k < max; i++) {
        const swd_peer *p = swd_members_at_const(g->table, i);
        if (p->banned || !p->pub_addr[0] || !p->sync_addr[0]) continue;
        if (p->state != SWD_PEER_ALIVE && p->state != SWD_PEER_SUSPECT) continue;
        gossip_member(&out[k++], p->id, p->pub_addr, p->sync_addr);
    }
    return k;
}

void swd_gossip_hello_msg(const swd_gossip *g, swd_msg *m)
{
    memset(m, 0, sizeof *m);
    m->type = SWD_MSG_HELLO;
    m->context = SWD_CTX_JOIN;
    snprintf(m->u.hello.pub_addr, sizeof m->u.hello.pub_addr, "%s", g->pub_url);
    snprintf(m->u.hello.sync_addr, sizeof m->u.hello.sync_addr, "%s", g->sync_url);
}

void swd_gossip_announce(swd_gossip *g, swd_announce *a)
{
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_ANNOUNCE;
    a->seq = ++g->announce_seq;
    snprintf(a->pub_addr, sizeof a->pub_addr, "%s", g->pub_url);
    snprintf(a->sync_addr, sizeof a->sync_addr, "%s", g->sync_url);
    swd_member_info members[SWD_WIRE_MAX_MEMBERS];
    a->members = members;
    a->n_members = swd_gossip_list(g, members, SWD_WIRE_MAX_MEMBERS, false);
    m.u.announce = *a;
    if (swd_link_publish(g->link, &m) != 0)
        swd_log(SWD_LOG_WARN, "cannot publish an announce", NULL);
    g->last_announce_ms = g->link->last_pub_ms;
    a->members = NULL;
    a->n_members = 0;
}

bool swd_gossip_all_hold(const swd_gossip *g, const uint8_t origin[SW_ID_BYTES], uint64_t count)
{
    size_t n = swd_members_count(g->table);
    for (size_t i = 0; i < n; i++) {
        const swd_peer *p = swd_members_at_const(g->table, i);
        if (p->state != SWD_PEER_ALIVE || p->banned || !p->has_announce) continue;
        uint64_t theirs = 0;
        for (size_t j = 0; j < p->n_vv; j++)
            if (memcmp(p->vv[j].origin, origin, SW_ID_BYTES) == 0) theirs = p->vv[j].count;
        if (theirs < count) return false;
    }
    return true;
}

bool swd_gossip_any_ahead(const swd_gossip *g, uint64_t (*have)(void *ctx, const uint8_t *origin),
                          void *ctx, uint64_t gap)
{
    size_t n = swd_members_count(g->table);
    for (size_t i = 0; i < n; i++) {
        const swd_peer *p = swd_members_at_const(g->table, i);
        if (p->state != SWD_PEER_ALIVE || !p->has_announce) continue;
        for (size_t j = 0; j < p->n_vv; j++)
            if (p->vv[j].count > have(ctx, p->vv[j].origin) + gap) return true;
    }
    return false;
}

/* The swarm: the sync service (Welcome, Updates, snapshot chunks) (swarm_int.h). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "fileio.h"
#include "gpt2.h"
#include "ledger.h"
#include "log.h"
#include "setup.h"
#include "swarm_int.h"

typedef struct swarm_collect {
    swd_updates *u;
    size_t bytes;
} swarm_collect;

static int swarm_collect_entry(void *ctx, const uint8_t *bytes, size_t len)
{
    swarm_collect *c = ctx;
    swd_updates *u = c->u;
    uint8_t *copy = malloc(len);
    if (!copy) return SW_ENOMEM;
    memcpy(copy, bytes, len);
    u->env[u->n] = copy;
    u->env_len[u->n] = len;
    u->n++;
    c->bytes += len;
    return 0;
}

static void swarm_serve_get_updates(swd_swarm *s, uint64_t id, const swd_get_updates *g)
{
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_UPDATES;
    uint8_t *env[SWD_WIRE_MAX_UPDATES_BATCHES];
    size_t env_len[SWD_WIRE_MAX_UPDATES_BATCHES];
    m.u.updates.env = env;
    m.u.updates.env_len = env_len;
    swarm_collect c = {.u = &m.u.updates};
    sw_diag d = {{0}};
    uint64_t max = g->max_steps ? g->max_steps : SWD_SWARM_AE_MAX_STEPS;
    int rc =
        sw_archive_fetch(s->archive, g->origin, g->first_step, max, SWD_WIRE_MAX_UPDATES_BATCHES,
                         SWD_WIRE_MAX_MSG - (64u << 10), swarm_collect_entry, &c, NULL, &d);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (rc == 0) rc = swd_wire_seal(&m, s->run_id, s->self, s->sk, &buf, &len);
    for (size_t i = 0; i < m.u.updates.n; i++)
        free(env[i]);
    if (rc != 0) {
        swarm_reply_error(s, id, SWD_CTX_RUN, SWD_ERR_BUSY, "cannot read the archive");
        return;
    }
    swd_net_reply(s->net, id, buf, len);
    free(buf);
}

/* The newest checkpoint is the snapshot a member offers; its file is
 * immutable once renamed into place (a newer one may replace it). */
static int swarm_snapshot_path(const swd_swarm *s, uint64_t count, char *path, size_t size)
{
    char name[64];
    snprintf(name, sizeof name, "checkpoints/ckpt-%020" PRIu64 ".swck", count);
    return sw_path_join(path, size, s->state_dir, name);
}

static uint64_t swarm_snapshot_bytes(const swd_swarm *s, uint64_t count)
{
    char path[SW_STATE_PATH_MAX];
    struct stat sb;
    if (swarm_snapshot_path(s, count, path, sizeof path) != 0 || stat(path, &sb) != 0) return 0;
    return (uint64_t)sb.st_size;
}

static void swarm_serve_snapshot(swd_swarm *s, uint64_t id, const swd_get_snapshot *g)
{
    char path[SW_STATE_PATH_MAX];
    int fd = -1;
    struct stat sb;
    if (g->snapshot_updates == 0 ||
        swarm_snapshot_path(s, g->snapshot_updates, path, sizeof path) != 0 ||
        (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &sb) != 0) {
        if (fd >= 0) close(fd);
        swarm_reply_error(s, id, SWD_CTX_RUN, SWD_ERR_NOT_FOUND,
                          "no such snapshot (a newer checkpoint replaced it): hello again");
        return;
    }
    uint64_t total = (uint64_t)sb.st_size;
    uint64_t n_chunks = (total + SWD_WIRE_MAX_CHUNK - 1) / SWD_WIRE_MAX_CHUNK;
    if (n_chunks == 0) n_chunks = 1;
    if (g->chunk >= n_chunks || n_chunks > UINT32_MAX) {
        close(fd);
        swarm_reply_error(s, id, SWD_CTX_RUN, SWD_ERR_BAD_REQUEST, "no such chunk");
        return;
    }
    uint64_t off = (uint64_t)g->chunk * SWD_WIRE_MAX_CHUNK;
    size_t len = (size_t)(total - off < SWD_WIRE_MAX_CHUNK ? total - off : SWD_WIRE_MAX_CHUNK);
    uint8_t *data = malloc(len ? len : 1);
    ssize_t got = data ? pread(fd, data, len, (off_t)off) : -1;
    close(fd);
    if (got != (ssize_t)len) {
        free(data);
        swarm_reply_error(s, id, SWD_CTX_RUN, SWD_ERR_BUSY, "cannot read the snapshot");
        return;
    }
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_SNAPSHOT_CHUNK;
    m.u.snapshot_chunk.snapshot_updates = g->snapshot_updates;
    m.u.snapshot_chunk.chunk = g->chunk;
    m.u.snapshot_chunk.n_chunks = (uint32_t)n_chunks;
    m.u.snapshot_chunk.total_bytes = total;
    m.u.snapshot_chunk.len = len;
    m.u.snapshot_chunk.data = data;
    uint8_t *buf = NULL;
    size_t blen = 0;
    int rc = swd_wire_seal(&m, s->run_id, s->self, s->sk, &buf, &blen);
    free(data);
    if (rc != 0) {
        swarm_reply_error(s, id, SWD_CTX_RUN, SWD_ERR_BUSY, "cannot seal the chunk");
        return;
    }
    swd_net_reply(s->net, id, buf, blen);
    free(buf);
}

static void swarm_serve_hello(swd_swarm *s, uint64_t id, const swd_msg *req)
{
    (void)req;
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_WELCOME;
    m.context = SWD_CTX_JOIN;
    swd_welcome *w = &m.u.welcome;
    w->run_spec = s->runspec_json;
    w->run_spec_len = s->runspec_len;
    swd_member_info members[SWD_WIRE_MAX_MEMBERS];
    w->members = members;
    w->n_members = swarm_member_list(s, members, SWD_WIRE_MAX_MEMBERS, true);
    if (swarm_vv_entries(&s->vv, &w->vv, &w->n_vv) != 0) {
        swd_net_reply(s->net, id, NULL, 0);
        return;
    }
    w->ledger_updates = s->last.ledger_count;
    if (s->last.ckpt_count != UINT64_MAX && s->last.ckpt_count > 0) {
        w->snapshot_bytes = swarm_snapshot_bytes(s, s->last.ckpt_count);
        if (w->snapshot_bytes) w->snapshot_updates = s->last.ckpt_count;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = swd_wire_seal(&m, s->run_id, s->self, s->sk, &buf, &len);
    free(w->vv);
    if (rc != 0) {
        swd_net_reply(s->net, id, NULL, 0);
        return;
    }
    swd_net_reply(s->net, id, buf, len);
    free(buf);
}

void swarm_on_sync_req(swd_swarm *s, swd_net_event *ev)
{
    uint8_t sender[SW_ID_BYTES];
    uint64_t now = swarm_now_ms();
    /* A refusal goes out in the context the request claims: a joiner has no
     * run id yet and could not read a run-context Error. */
    swd_context ctx = SWD_CTX_RUN;
    bool peeked = swd_wire_peek(ev->data, ev->len, sender, &ctx) == 0;
    if (peeked && swd_members_banned(s->members, sender)) {
        swarm_drop(s, SWD_DROP_BANNED, sender);
        swarm_reply_error(s, ev->id, ctx, SWD_ERR_REFUSED, "banned");
        return;
    }
    if (peeked && !swd_members_rate_ok(s->members, sender, now)) {
        swarm_drop(s, SWD_DROP_RATE_LIMITED, sender);
        swarm_reply_error(s, ev->id, ctx, SWD_ERR_BUSY, "rate limited");
        return;
    }
    swd_msg m;
    swd_drop drop;
    if (swd_wire_open(ev->data, ev->len, s->run_id, &m, &drop) != 0) {
        swarm_drop(s, drop, peeked ? sender : NULL);
        swarm_reply_error(s, ev->id, ctx, SWD_ERR_BAD_REQUEST, swd_drop_name(drop));
        return;
    }
    switch (m.type) {
    case SWD_MSG_HELLO:
        swarm_serve_hello(s, ev->id, &m);
        /* A running node's Hello carries its identity and addresses: listen
         * to it at once.  (The startup Hello, before the joiner's sockets
         * exist, is signed with a throwaway key and carries none.) */
        if (m.u.hello.pub_addr[0] && m.u.hello.sync_addr[0]) {
            swd_members_add(s->members, m.sender, m.u.hello.pub_addr, m.u.hello.sync_addr, false,
                            now);
            swarm_subscribe_all(s);
        }
        break;
    case SWD_MSG_GET_UPDATES: {
        /* A request proves liveness, but a peer that left stays left (its
         * last requests may still arrive after its Leave). */
        const swd_peer *q = swd_members_find(s->members, m.sender);
        if (!q || q->state != SWD_PEER_LEFT) swarm_seen(s, m.sender);
        swarm_serve_get_updates(s, ev->id, &m.u.get_updates);
        break;
    }
    case SWD_MSG_GET_SNAPSHOT:
        swarm_serve_snapshot(s, ev->id, &m.u.get_snapshot);
        break;
    default:
        swarm_drop(s, SWD_DROP_UNEXPECTED, m.sender);
        swarm_reply_error(s, ev->id, SWD_CTX_RUN, SWD_ERR_BAD_REQUEST, "not a request");
        break;
    }
    swd_msg_fini(&m);
}

/* ------------------------------------------------------------ replies */

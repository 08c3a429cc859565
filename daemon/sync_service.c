/* The node's answers on its sync socket (sync_service.h). */
#include "sync_service.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "state.h"

typedef struct sync_collect {
    swd_updates *u;
    size_t bytes;
} sync_collect;

static int sync_collect_entry(void *ctx, const uint8_t *bytes, size_t len)
{
    sync_collect *c = ctx;
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

static void sync_serve_get_updates(swd_sync_service *svc, uint64_t id, const swd_get_updates *g)
{
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_UPDATES;
    uint8_t *env[SWD_WIRE_MAX_UPDATES_BATCHES];
    size_t env_len[SWD_WIRE_MAX_UPDATES_BATCHES];
    m.u.updates.env = env;
    m.u.updates.env_len = env_len;
    sync_collect c = {.u = &m.u.updates};
    sw_diag d = {{0}};
    uint64_t max = g->max_steps ? g->max_steps : svc->ae_max_steps;
    int rc =
        sw_archive_fetch(svc->archive, g->origin, g->first_step, max, SWD_WIRE_MAX_UPDATES_BATCHES,
                         SWD_WIRE_MAX_MSG - (64u << 10), sync_collect_entry, &c, NULL, &d);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (rc == 0) rc = swd_link_seal(svc->link, &m, &buf, &len);
    for (size_t i = 0; i < m.u.updates.n; i++)
        free(env[i]);
    if (rc != 0) {
        swd_link_reply_error(svc->link, id, SWD_CTX_RUN, SWD_ERR_BUSY, "cannot read the archive");
        return;
    }
    swd_link_reply_sealed(svc->link, id, buf, len);
    free(buf);
}

/* The newest checkpoint is the snapshot a member offers; its file is
 * immutable once renamed into place (a newer one may replace it). */
static int sync_snapshot_path(const swd_sync_service *svc, uint64_t count, char *path, size_t size)
{
    char name[64];
    snprintf(name, sizeof name, "checkpoints/ckpt-%020" PRIu64 ".swck", count);
    return sw_path_join(path, size, svc->state_dir, name);
}

static uint64_t sync_snapshot_bytes(const swd_sync_service *svc, uint64_t count)
{
    char path[SW_STATE_PATH_MAX];
    struct stat sb;
    if (sync_snapshot_path(svc, count, path, sizeof path) != 0 || stat(path, &sb) != 0) return 0;
    return (uint64_t)sb.st_size;
}

static void sync_serve_snapshot(swd_sync_service *svc, uint64_t id, const swd_get_snapshot *g)
{
    char path[SW_STATE_PATH_MAX];
    int fd = -1;
    struct stat sb;
    if (g->snapshot_updates == 0 ||
        sync_snapshot_path(svc, g->snapshot_updates, path, sizeof path) != 0 ||
        (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &sb) != 0) {
        if (fd >= 0) close(fd);
        swd_link_reply_error(svc->link, id, SWD_CTX_RUN, SWD_ERR_NOT_FOUND,
                             "no such snapshot (a newer checkpoint replaced it): hello again");
        return;
    }
    uint64_t total = (uint64_t)sb.st_size;
    uint64_t n_chunks = (total + SWD_WIRE_MAX_CHUNK - 1) / SWD_WIRE_MAX_CHUNK;
    if (n_chunks == 0) n_chunks = 1;
    if (g->chunk >= n_chunks || n_chunks > UINT32_MAX) {
        close(fd);
        swd_link_reply_error(svc->link, id, SWD_CTX_RUN, SWD_ERR_BAD_REQUEST, "no such chunk");
        return;
    }
    uint64_t off = (uint64_t)g->chunk * SWD_WIRE_MAX_CHUNK;
    size_t len = (size_t)(total - off < SWD_WIRE_MAX_CHUNK ? total - off : SWD_WIRE_MAX_CHUNK);
    uint8_t *data = malloc(len ? len : 1);
    ssize_t got = data ? pread(fd, data, len, (off_t)off) : -1;
    close(fd);
    if (got != (ssize_t)len) {
        free(data);
        swd_link_reply_error(svc->link, id, SWD_CTX_RUN, SWD_ERR_BUSY, "cannot read the snapshot");
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
    int rc = swd_link_seal(svc->link, &m, &buf, &blen);
    free(data);
    if (rc != 0) {
        swd_link_reply_error(svc->link, id, SWD_CTX_RUN, SWD_ERR_BUSY, "cannot seal the chunk");
        return;
    }
    swd_link_reply_sealed(svc->link, id, buf, blen);
    free(buf);
}

static void sync_serve_hello(swd_sync_service *svc, uint64_t id)
{
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_WELCOME;
    m.context = SWD_CTX_JOIN;
    swd_welcome *w = &m.u.welcome;
    w->run_spec = (char *)svc->runspec_json; /* only read: sealing copies it */
    w->run_spec_len = svc->runspec_len;
    swd_member_info members[SWD_WIRE_MAX_MEMBERS];
    w->members = members;
    w->n_members = swd_gossip_list(svc->gossip, members, SWD_WIRE_MAX_MEMBERS, true);
    if (swd_vv_entries(&svc->view->vv, &w->vv, &w->n_vv) != 0) {
        swd_link_reply_sealed(svc->link, id, NULL, 0);
        return;
    }
    w->ledger_updates = svc->view->last.ledger_count;
    if (svc->view->last.ckpt_count != UINT64_MAX && svc->view->last.ckpt_count > 0) {
        w->snapshot_bytes = sync_snapshot_bytes(svc, svc->view->last.ckpt_count);
        if (w->snapshot_bytes) w->snapshot_updates = svc->view->last.ckpt_count;
    }
    swd_link_reply(svc->link, id, &m);
    free(w->vv);
}

void swd_sync_serve(swd_sync_service *svc, uint64_t id, const uint8_t *data, size_t len)
{
    swd_link *l = svc->link;
    uint8_t sender[SW_ID_BYTES];
    /* A refusal goes out in the context the request claims: a joiner has no
     * run id yet and could not read a run-context Error. */
    swd_context ctx = SWD_CTX_RUN;
    bool peeked = swd_wire_peek(data, len, sender, &ctx) == 0;
    if (peeked && swd_gossip_banned(svc->gossip, sender)) {
        swd_link_drop(l, SWD_DROP_BANNED, sender);
        swd_link_reply_error(l, id, ctx, SWD_ERR_REFUSED, "banned");
        return;
    }
    if (peeked && !swd_gossip_rate_ok(svc->gossip, sender)) {
        swd_link_drop(l, SWD_DROP_RATE_LIMITED, sender);
        swd_link_reply_error(l, id, ctx, SWD_ERR_BUSY, "rate limited");
        return;
    }
    swd_msg m;
    swd_drop drop;
    if (swd_wire_open(data, len, l->run_id, &m, &drop) != 0) {
        swd_link_drop(l, drop, peeked ? sender : NULL);
        swd_link_reply_error(l, id, ctx, SWD_ERR_BAD_REQUEST, swd_drop_name(drop));
        return;
    }
    switch (m.type) {
    case SWD_MSG_HELLO:
        sync_serve_hello(svc, id);
        /* A running node's Hello carries its identity and addresses: listen
         * to it at once.  (The startup Hello, before the joiner's sockets
         * exist, is signed with a throwaway key and carries none.) */
        if (m.u.hello.pub_addr[0] && m.u.hello.sync_addr[0])
            swd_gossip_on_hello(svc->gossip, m.sender, m.u.hello.pub_addr, m.u.hello.sync_addr);
        break;
    case SWD_MSG_GET_UPDATES:
        swd_gossip_heard(svc->gossip, m.sender);
        sync_serve_get_updates(svc, id, &m.u.get_updates);
        break;
    case SWD_MSG_GET_SNAPSHOT:
        sync_serve_snapshot(svc, id, &m.u.get_snapshot);
        break;
    default:
        swd_link_drop(l, SWD_DROP_UNEXPECTED, m.sender);
        swd_link_reply_error(l, id, SWD_CTX_RUN, SWD_ERR_BAD_REQUEST, "not a request");
        break;
    }
    swd_msg_fini(&m);
}

/* The node's signed voice on the sockets (link.h). */
#include "link.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpt2.h"
#include "log.h"

static int net_publish(void *ctx, const uint8_t *buf, size_t len)
{
    return swd_net_publish(ctx, buf, len);
}

static int net_reply(void *ctx, uint64_t id, const uint8_t *buf, size_t len)
{
    return swd_net_reply(ctx, id, buf, len);
}

static int net_request(void *ctx, const char *addr, const uint8_t *buf, size_t len,
                       uint32_t timeout_ms, uint64_t *id)
{
    return swd_net_request(ctx, addr, buf, len, timeout_ms, id);
}

static int net_subscribe(void *ctx, const char *pub_addr, sw_diag *d)
{
    return swd_net_subscribe(ctx, pub_addr, d);
}

static void net_stats(void *ctx, swd_net_stats *out)
{
    swd_net_get_stats(ctx, out);
}

static uint64_t clock_now_ms(void *ctx)
{
    (void)ctx;
    return swd_clock_ms();
}

void swd_link_init(swd_link *l, swd_net *net, const uint8_t self[SW_ID_BYTES],
                   const unsigned char *sk, const uint8_t run_id[SW_ID_BYTES])
{
    memset(l, 0, sizeof *l);
    l->ops = (swd_link_ops){.publish = net_publish,
                            .reply = net_reply,
                            .request = net_request,
                            .subscribe = net_subscribe,
                            .stats = net_stats,
                            .now_ms = clock_now_ms};
    l->ctx = net;
    memcpy(l->self, self, SW_ID_BYTES);
    l->sk = sk;
    memcpy(l->run_id, run_id, SW_ID_BYTES);
}

uint64_t swd_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

double swd_clock_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t swd_link_now_ms(const swd_link *l)
{
    return l->ops.now_ms(l->ctx);
}

void swd_hex(const uint8_t id[SW_ID_BYTES], char out[SWD_HEX])
{
    sw_digest_hex(id, out);
}

void swd_link_drop(swd_link *l, swd_drop d, const uint8_t *sender)
{
    l->dropped[d]++;
    if (swd_log_enabled(SWD_LOG_DEBUG)) {
        char hex[SWD_HEX] = "unknown";
        if (sender) swd_hex(sender, hex);
        swd_log(SWD_LOG_DEBUG, "message dropped", "reason=%s sender=%.12s", swd_drop_name(d), hex);
    }
}

int swd_link_seal(const swd_link *l, const swd_msg *m, uint8_t **buf, size_t *len)
{
    return swd_wire_seal(m, l->run_id, l->self, l->sk, buf, len);
}

int swd_link_publish_sealed(swd_link *l, const uint8_t *buf, size_t len)
{
    int rc = l->ops.publish(l->ctx, buf, len);
    l->last_pub_ms = swd_link_now_ms(l);
    return rc;
}

int swd_link_publish(swd_link *l, const swd_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = swd_link_seal(l, m, &buf, &len);
    if (rc != 0) return rc;
    rc = swd_link_publish_sealed(l, buf, len);
    free(buf);
    return rc;
}

void swd_link_reply_sealed(swd_link *l, uint64_t id, const uint8_t *buf, size_t len)
{
    l->ops.reply(l->ctx, id, buf, len);
}

void swd_link_reply(swd_link *l, uint64_t id, const swd_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (swd_link_seal(l, m, &buf, &len) == 0) {
        l->ops.reply(l->ctx, id, buf, len);
        free(buf);
    } else {
        l->ops.reply(l->ctx, id, NULL, 0);
    }
}

void swd_link_reply_error(swd_link *l, uint64_t id, swd_context ctx, swd_error_code code,
                          const char *text)
{
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_ERROR;
    m.context = ctx;
    m.u.error.code = code;
    snprintf(m.u.error.message, sizeof m.u.error.message, "%s", text);
    swd_link_reply(l, id, &m);
}

void swd_link_reply_json(swd_link *l, uint64_t id, json_t *reply)
{
    char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    json_decref(reply);
    if (text)
        l->ops.reply(l->ctx, id, (const uint8_t *)text, strlen(text));
    else
        l->ops.reply(l->ctx, id, NULL, 0);
    free(text);
}

int swd_link_request(swd_link *l, const char *addr, const swd_msg *m, uint32_t timeout_ms,
                     uint64_t *id)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = swd_link_seal(l, m, &buf, &len);
    if (rc != 0) return rc;
    rc = l->ops.request(l->ctx, addr, buf, len, timeout_ms, id);
    free(buf);
    return rc;
}

int swd_link_subscribe(swd_link *l, const char *pub_addr, sw_diag *d)
{
    return l->ops.subscribe(l->ctx, pub_addr, d);
}

void swd_link_stats(const swd_link *l, swd_net_stats *out)
{
    memset(out, 0, sizeof *out);
    l->ops.stats(l->ctx, out);
}

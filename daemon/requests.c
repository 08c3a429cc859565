/* Outgoing sync requests in flight (requests.h). */
#include "requests.h"

#include <string.h>

#include "log.h"

swd_req *swd_requests_send(swd_requests *t, swd_link *l, swd_req_kind kind, const char *addr,
                           const swd_msg *m, const uint8_t *origin, const uint8_t *peer)
{
    swd_req *r = NULL;
    for (size_t i = 0; i < SWD_REQUESTS_MAX && !r; i++)
        if (t->slot[i].kind == SWD_REQ_NONE) r = &t->slot[i];
    if (!r || kind == SWD_REQ_NONE) return NULL;
    uint32_t timeout =
        kind == SWD_REQ_HELLO ? SWD_REQUESTS_HELLO_TIMEOUT_MS : SWD_REQUESTS_AE_TIMEOUT_MS;
    uint64_t id;
    if (swd_link_request(l, addr, m, timeout, &id) != 0) return NULL;
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->id = id;
    r->sent_ms = swd_link_now_ms(l);
    if (origin) memcpy(r->origin, origin, SW_ID_BYTES);
    if (peer) memcpy(r->peer, peer, SW_ID_BYTES);
    return r;
}

bool swd_requests_take(swd_requests *t, uint64_t id, swd_req *out)
{
    for (size_t i = 0; i < SWD_REQUESTS_MAX; i++)
        if (t->slot[i].kind != SWD_REQ_NONE && t->slot[i].id == id) {
            *out = t->slot[i];
            t->slot[i].kind = SWD_REQ_NONE;
            return true;
        }
    return false;
}

bool swd_requests_pending_origin(const swd_requests *t, const uint8_t origin[SW_ID_BYTES])
{
    for (size_t i = 0; i < SWD_REQUESTS_MAX; i++)
        if (t->slot[i].kind == SWD_REQ_GET_UPDATES &&
            memcmp(t->slot[i].origin, origin, SW_ID_BYTES) == 0)
            return true;
    return false;
}

size_t swd_requests_expire(swd_requests *t, uint64_t now_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < SWD_REQUESTS_MAX; i++)
        if (t->slot[i].kind != SWD_REQ_NONE &&
            now_ms - t->slot[i].sent_ms > 2 * (uint64_t)SWD_REQUESTS_AE_TIMEOUT_MS + 1000) {
            swd_log(SWD_LOG_WARN, "a request got no reply event: slot reclaimed", NULL);
            t->slot[i].kind = SWD_REQ_NONE;
            n++;
        }
    return n;
}

size_t swd_requests_in_flight(const swd_requests *t)
{
    size_t n = 0;
    for (size_t i = 0; i < SWD_REQUESTS_MAX; i++)
        n += t->slot[i].kind != SWD_REQ_NONE;
    return n;
}

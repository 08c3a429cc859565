/* The loop thread's copy of the worker's state (worker_view.h). */
#include "worker_view.h"

#include <stdlib.h>
#include <string.h>

void swd_worker_view_refresh(swd_worker_view *v, swd_worker *wk)
{
    swd_worker_copy_vv(wk, &v->vv_gen, &v->vv);
    swd_worker_copy_digest(wk, &v->digest_gen, v->digest, &v->digest_count, &v->digest_vv);
}

void swd_worker_view_fini(swd_worker_view *v)
{
    sw_vv_fini(&v->vv);
    sw_vv_fini(&v->digest_vv);
}

uint64_t swd_vv_prefix(const sw_vv *vv, const uint8_t origin[SW_ID_BYTES])
{
    size_t lo = 0, hi = vv->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = memcmp(vv->o[mid].origin, origin, SW_ID_BYTES);
        if (c == 0) return vv->o[mid].prefix;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

int swd_vv_entries(const sw_vv *vv, swd_vv_entry **out, size_t *n)
{
    size_t k = 0, cap = vv->n < SWD_WIRE_MAX_VV ? vv->n : SWD_WIRE_MAX_VV;
    swd_vv_entry *e = cap ? calloc(cap, sizeof *e) : NULL;
    if (cap && !e) return SW_ENOMEM;
    for (size_t i = 0; i < vv->n && k < cap; i++) {
        if (vv->o[i].prefix == 0) continue;
        memcpy(e[k].origin, vv->o[i].origin, SW_ID_BYTES);
        e[k].count = vv->o[i].prefix;
        k++;
    }
    *out = e;
    *n = k;
    return 0;
}

bool swd_vv_exact(const sw_vv *vv)
{
    for (size_t i = 0; i < vv->n; i++)
        if (vv->o[i].n_extra) return false;
    return true;
}

/*
 * Fuzzes the swarm's message decoder (daemon/wire.c).  Random bytes almost
 * never carry a valid Ed25519 signature, so each input is used twice:
 *   1. as an envelope from the network, as is (envelope decoding, the
 *      signature check on garbage);
 *   2. as the BODY of an envelope the harness signs with a fixed key, once in
 *      each context, so the body decoder and every field bound are reached.
 * Whatever opens must re-seal and open again to an equal message type: what
 * a receiver accepts, a sender can send.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "swarm.pb-c.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned char fuzz_pk[crypto_sign_PUBLICKEYBYTES], fuzz_sk[crypto_sign_SECRETKEYBYTES];
static uint8_t fuzz_run[SW_ID_BYTES];
static int fuzz_ready;

static void fuzz_check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_wire: invariant broken: %s\n", what);
        abort();
    }
}

static void fuzz_open_and_reseal(const uint8_t *buf, size_t len)
{
    swd_msg m;
    swd_drop drop;
    if (swd_wire_open(buf, len, fuzz_run, &m, &drop) != 0) {
        fuzz_check(drop < SWD_DROP_COUNT, "drop reason in range");
        return;
    }
    /* Only our own key signs here, so re-sealing with it is legitimate. */
    if (memcmp(m.sender, fuzz_pk, SW_ID_BYTES) == 0) {
        uint8_t *again = NULL;
        size_t again_len = 0;
        fuzz_check(swd_wire_seal(&m, fuzz_run, fuzz_pk, fuzz_sk, &again, &again_len) == 0,
                   "an opened message seals");
        swd_msg m2;
        fuzz_check(swd_wire_open(again, again_len, fuzz_run, &m2, &drop) == 0,
                   "a sealed message opens");
        fuzz_check(m2.type == m.type, "the type survives a round trip");
        swd_msg_fini(&m2);
        free(again);
    }
    swd_msg_fini(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fuzz_ready) {
        fuzz_check(sodium_init() >= 0, "sodium_init");
        unsigned char seed[crypto_sign_SEEDBYTES] = {7};
        crypto_sign_seed_keypair(fuzz_pk, fuzz_sk, seed);
        memset(fuzz_run, 0x5a, sizeof fuzz_run);
        fuzz_ready = 1;
    }
    fuzz_open_and_reseal(data, size);
    if (size > SWD_WIRE_MAX_MSG - 256) return 0;

    /* The input as a body, signed in each context (Hello and Welcome open
     * only in the join context, everything else only in the run context). */
    for (int join = 0; join <= 1; join++) {
        uint8_t ctx[SW_ID_BYTES];
        swd_wire_context_bytes(join ? SWD_CTX_JOIN : SWD_CTX_RUN, fuzz_run, ctx);
        uint8_t *signed_msg = malloc(SW_ID_BYTES + size + 1);
        fuzz_check(signed_msg != NULL, "malloc");
        memcpy(signed_msg, ctx, SW_ID_BYTES);
        if (size) memcpy(signed_msg + SW_ID_BYTES, data, size);
        uint8_t sig[crypto_sign_BYTES];
        crypto_sign_detached(sig, NULL, signed_msg, SW_ID_BYTES + size, fuzz_sk);
        free(signed_msg);

        Swarmtune__V1__Envelope env = SWARMTUNE__V1__ENVELOPE__INIT;
        env.sender.data = fuzz_pk;
        env.sender.len = sizeof fuzz_pk;
        env.body.data = (uint8_t *)data;
        env.body.len = size;
        env.signature.data = sig;
        env.signature.len = sizeof sig;
        env.context =
            join ? SWARMTUNE__V1__CONTEXT__CONTEXT_JOIN : SWARMTUNE__V1__CONTEXT__CONTEXT_RUN;
        size_t len = swarmtune__v1__envelope__get_packed_size(&env);
        uint8_t *buf = malloc(len ? len : 1);
        fuzz_check(buf != NULL, "malloc");
        swarmtune__v1__envelope__pack(&env, buf);
        fuzz_open_and_reseal(buf, len);
        free(buf);
    }
    return 0;
}

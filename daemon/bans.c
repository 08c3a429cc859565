/* Bans for equivocation, with their proofs (bans.h). */
#include "bans.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "fileio.h"
#include "log.h"
#include "state.h"

static void bans_write(swd_gossip *g, const char *state_dir, const uint8_t origin[SW_ID_BYTES],
                       uint64_t step, const char *proof_json)
{
    if (swd_gossip_banned(g, origin)) return;
    swd_gossip_ban(g, origin);
    char hex[SWD_HEX], dir[SW_STATE_PATH_MAX], name[SWD_HEX + 16], path[SW_STATE_PATH_MAX] = "";
    swd_hex(origin, hex);
    sw_diag d = {{0}};
    if (sw_path_join(dir, sizeof dir, state_dir, "bans") == 0 && sw_mkdir(dir, 0700, &d) == 0) {
        snprintf(name, sizeof name, "%s.json", hex);
        if (sw_path_join(path, sizeof path, dir, name) == 0)
            sw_file_write_atomic(path, proof_json, strlen(proof_json), 0644, &d);
    }
    swd_log(SWD_LOG_WARN, "origin banned: two different signed updates for one step",
            "origin=%s step=%" PRIu64 " proof=%s", hex, step, path);
}

void swd_bans_record(swd_gossip *g, const char *state_dir, const sw_update *held,
                     const sw_update *got, const uint8_t *held_env, size_t held_len,
                     const uint8_t *got_env, size_t got_len)
{
    char hex[SWD_HEX];
    swd_hex(held->origin, hex);
    json_t *o = json_pack("{s:s,s:I,s:{s:i,s:f},s:{s:i,s:f}}", "origin", hex, "step",
                          (json_int_t)held->step, "held", "q", held->q, "scale",
                          (double)held->scale, "got", "q", got->q, "scale", (double)got->scale);
    const uint8_t *envs[2] = {held_env, got_env};
    size_t lens[2] = {held_len, got_len};
    const char *keys[2] = {"held_envelope", "got_envelope"};
    for (int i = 0; i < 2 && o; i++) {
        if (!envs[i]) continue;
        char *h = malloc(2 * lens[i] + 1);
        if (!h) continue;
        sodium_bin2hex(h, 2 * lens[i] + 1, envs[i], lens[i]);
        json_object_set_new(o, keys[i], json_string(h));
        free(h);
    }
    char *text = o ? json_dumps(o, JSON_INDENT(1)) : NULL;
    json_decref(o);
    bans_write(g, state_dir, held->origin, held->step, text ? text : "{}");
    free(text);
}

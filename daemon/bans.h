/*
 * bans: an origin caught signing two different updates for one step
 * (equivocation) is banned for good, with the proof kept where an operator
 * and anyone else can check it: <state>/bans/<origin hex>.json holds both
 * updates and, when at hand, both signed envelopes (hex), verifiable with
 * the origin's key and the run id.
 */
#ifndef SWD_BANS_H
#define SWD_BANS_H

#include <stddef.h>
#include <stdint.h>

#include "gossip.h"
#include "update.h"

/* Bans held's origin in the membership and writes the proof (envelopes may
 * be NULL).  An origin already banned keeps its first proof. */
void swd_bans_record(swd_gossip *g, const char *state_dir, const sw_update *held,
                     const sw_update *got, const uint8_t *held_env, size_t held_len,
                     const uint8_t *got_env, size_t got_len);

#endif

#!/usr/bin/python3
"""Guarantee: replay.

The base model plus the ledger, replayed from scratch, gives the same weights
as the checkpointed state.  A node trains with frequent checkpoints; then:
  - tests/tools/replay_check rebuilds, for every checkpoint kept, base model +
    ledger prefix [0, checkpoint's count) and compares the sw_fixed digest with
    the checkpoint's own; and the daemon's rebuild (newest checkpoint + ledger
    suffix) with base + the whole ledger;
  - copies of the state dir with no checkpoints at all, with only the older
    checkpoint (so a ledger suffix is replayed onto it), and with the newest
    checkpoint corrupted (it must be skipped, never used) export
    byte-identical F32 models.
Exits non-zero on any failure.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import nodeutil as nu
from nodeutil import check

STEPS = 40
CKPT_EVERY = 7
REPLAY_CHECK = os.path.join(nu.BUILD, "tests", "replay_check")


def replay_check(state_dir, what):
    p = subprocess.run([REPLAY_CHECK, state_dir], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=300)
    rows = [json.loads(x) for x in p.stdout.decode().splitlines() if x.strip()]
    for r in rows:
        print(f"      {what}: {r['what']}: {r['updates']} updates, checkpoint "
              f"{r['checkpoint'][:16]}.. replayed {r['replayed'][:16]}.. "
              f"{'equal' if r['equal'] else 'DIFFERENT'} ({r['seconds']:.2f} s)")
    check(p.returncode == 0 and rows and all(r["equal"] for r in rows),
          f"{what}: replay_check: base + ledger replay == checkpointed state ({len(rows)} comparisons)",
          p.stderr.decode("utf-8", "replace"))
    return rows


def main():
    t0 = time.time()
    if not nu.require_binaries(REPLAY_CHECK):
        return 1
    root = nu.tmpdir("sw_node_replay_")
    d = os.path.join(root, "node")
    cfg = nu.default_config(os.path.join(d, "state"), max_steps=STEPS)
    cfg["node"]["checkpoint_every"] = CKPT_EVERY
    node = nu.Node(d, cfg)
    rc, secs = node.run(timeout=180)
    if not check(rc == 0, f"swarmd --until-done: exit 0 ({STEPS} steps, {secs:.1f} s)",
                 node.log_text(30)):
        return nu.finish("node_replay", t0)
    ckdir = os.path.join(node.state_dir, "checkpoints")
    ckpts = sorted(glob.glob(os.path.join(ckdir, "ckpt-*.swck")))
    check(len(ckpts) >= 2, f"{len(ckpts)} checkpoints kept: {[os.path.basename(c) for c in ckpts]}")
    rows = replay_check(node.state_dir, "state")
    check(any(r["what"] != "state" and r["updates"] > 0 for r in rows),
          "a checkpoint holding updates was compared with its replay")
    ref = nu.export(node.state_dir, os.path.join(root, "export-ref"))
    if ref is None or len(ckpts) < 1:
        return nu.finish("node_replay", t0)

    variants = []
    v = nu.copy_state(node.state_dir, os.path.join(root, "no-checkpoints"))
    shutil.rmtree(os.path.join(v, "checkpoints"))
    variants.append(("no checkpoints: base + whole ledger", v))
    if len(ckpts) >= 2:
        v = nu.copy_state(node.state_dir, os.path.join(root, "older-checkpoint"))
        os.unlink(os.path.join(v, "checkpoints", os.path.basename(ckpts[-1])))
        variants.append(("older checkpoint + ledger suffix", v))
        replay_check(v, "older checkpoint")
    v = nu.copy_state(node.state_dir, os.path.join(root, "corrupt-newest"))
    p = os.path.join(v, "checkpoints", os.path.basename(ckpts[-1]))
    with open(p, "r+b") as f:
        f.seek(os.path.getsize(p) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x01]))
    variants.append(("newest checkpoint corrupted (one bit)", v))

    for what, sd in variants:
        out = nu.export(sd, sd + "-export")
        if out:
            same, why = nu.same_export(ref, out)
            check(same, f"{what}: export byte-identical ({why})", why)
        if out and "corrupted" in what:
            check(os.path.basename(ckpts[-1]) in nu.last_export_stderr,
                  f"{what}: export warns about {os.path.basename(ckpts[-1])}",
                  nu.last_export_stderr)
    return nu.finish("node_replay", t0)


if __name__ == "__main__":
    sys.exit(main())

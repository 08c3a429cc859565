#!/usr/bin/python3
"""Guarantee: crash safety.

A reference node trains to max_steps uninterrupted.  A second node (fresh
state dir, same config and identity key) is started and SIGKILLed again and
again at random moments drawn from a seeded RNG: right after exec, during
startup and replay, and at random delays after it logs "swarmd started"
(training), with checkpoints every 3 steps so that many kills land inside
checkpoint writes and ledger appends.  After some kills a torn ledger tail is
also injected (a partial or checksum-failing last record, exactly what a
write cut short leaves), which the next start must truncate.  Then the node
runs to the end with --until-done.

Checked after every kill: the ledger (read-only, as ledger_dump shows it) is a
prefix of the reference ledger (same updates, same order) and never shorter
than after the previous kill: no update that reached the ledger is lost, and
no step number is reused with other content.  At the end: the node's own step
numbers are exactly 0..N-1, once each; the ledger equals the reference's; the
F32 export is byte-identical to the reference export; no checkpoint
temporary file is left behind.  Exits non-zero on any failure.
"""
import os
import random
import struct
import sys
import time

import nodeutil as nu
from nodeutil import check

STEPS = 60
CKPT_EVERY = 3
KILLS = int(os.environ.get("SW_CRASH_KILLS", "24"))
MAX_KILLS = 3 * KILLS  # kills that land before training are cheap; bound the loop anyway
SEED = int(os.environ.get("SW_CRASH_SEED", "20240603"))
LEDGER_HEADER = 64
UPDATE_BYTES = 45


def config(d, key):
    cfg = nu.default_config(os.path.join(d, "state"), max_steps=STEPS)
    cfg["node"]["identity"] = key
    cfg["node"]["checkpoint_every"] = CKPT_EVERY
    cfg["node"]["checkpoint_interval_s"] = 0
    return cfg


def float_ts(line):
    """Seconds of the day of a log line's ts=...T12:34:56.789Z."""
    t = line.split("ts=", 1)[1].split(" ", 1)[0].split("T", 1)[1].rstrip("Z")
    h, m, sec = t.split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)


def updates(dump):
    return [r for r in dump if "summary" not in r]


def summary(dump):
    return next((r for r in dump if "summary" in r), {})


def wait_for_line(node, needle, timeout):
    """Polls the log until needle appears (True), the process exits or time is up."""
    end = time.monotonic() + timeout
    with open(node.log, "rb") as f:
        f.seek(node.log_offset)
        buf = b""
        while time.monotonic() < end:
            chunk = f.read()
            if chunk:
                buf += chunk
                if needle in buf:
                    return True
            elif node.proc.poll() is not None:
                return False
            else:
                time.sleep(0.002)
    return False


def tmp_files(state_dir):
    found = []
    for dirpath, _, files in os.walk(state_dir):
        found += [os.path.join(dirpath, f) for f in files if ".tmp" in f]
    return found


def inject_torn_tail(ledger, rng):
    """Appends what an interrupted append leaves: a cut record, or a full-size
    record whose checksum fails.  Returns the number of bytes appended."""
    count = rng.randint(1, 3)
    body = struct.pack("<II", count, 1) + os.urandom(UPDATE_BYTES * count + 16)
    if rng.random() < 0.5:
        body = body[:rng.randint(1, len(body) - 1)]
    with open(ledger, "ab") as f:
        f.write(body)
    return len(body)


def main():
    t0 = time.time()
    if not nu.require_binaries(nu.LEDGER_DUMP):
        return 1
    rng = random.Random(SEED)
    root = nu.tmpdir("sw_node_crash_")
    key = os.path.join(root, "identity.key")

    # The uninterrupted reference.
    ref = nu.Node(os.path.join(root, "ref"), config(os.path.join(root, "ref"), key))
    rc, ref_secs = ref.run(timeout=300)
    if not check(rc == 0, f"reference run: exit 0 ({ref_secs:.1f} s, {STEPS} steps)",
                 ref.log_text(30)):
        return nu.finish("node_crash", t0)
    ref_export = nu.export(ref.state_dir, os.path.join(root, "ref", "export"))
    ref_dump = nu.ledger_dump(ref.state_dir)
    if ref_export is None or ref_dump is None:
        return nu.finish("node_crash", t0)
    ref_updates = updates(ref_dump)
    # Seconds per training step, checkpoint writes included (from the log).
    started = [float_ts(line) for line in ref.log_text().splitlines() if 'msg="swarmd started"' in line]
    stopped = [float_ts(line) for line in ref.log_text().splitlines() if 'msg=stopped' in line]
    per_step = (stopped[-1] - started[-1]) / STEPS if started and stopped else ref_secs / STEPS
    print(f"      reference: {per_step * 1000:.0f} ms per step (checkpoints every {CKPT_EVERY} included)")
    check(len(ref_updates) == STEPS, f"reference ledger holds {len(ref_updates)} == {STEPS} updates")

    # The same run, killed again and again.
    d = os.path.join(root, "crash")
    node = nu.Node(d, config(d, key))
    ledger = os.path.join(node.state_dir, "ledger")
    prev = 0
    kills = started_kills = in_ckpt = torn_seen = injected = prefix_bad = shrunk = 0
    expect_next = {}  # start number -> updates in the ledger before it
    injected_sizes = []
    done = False
    while kills < MAX_KILLS and not done:
        if kills >= KILLS and started_kills >= KILLS // 2:
            break
        node.log_offset = os.path.getsize(node.log) if os.path.exists(node.log) else 0
        expect_next[node.starts] = prev
        node.start(until_done=True)
        mode = rng.random()
        if kills < 3 or mode < 0.15:
            # During exec, configuration, model and data loading, the lock,
            # the first start's max_scale calibration and state creation,
            # checkpoint loading and ledger replay.
            delay = rng.uniform(0, 1.5 if kills < 3 else 0.05)
            time.sleep(delay)
            where = "startup"
        else:
            # After training starts: short delays land in the first appends and
            # checkpoint writes, longer ones anywhere in the run.
            # Bounded by the time the rest of the run takes, so most kills
            # land before the end.
            rest = max(0.05, per_step * (STEPS - prev))
            delay = rng.uniform(0, 0.03) if mode < 0.45 else rng.uniform(0, min(1.0, 0.5 * rest))
            if not wait_for_line(node, b'msg="swarmd started"', 60):
                rc = node.wait(120)
                done = rc == 0
                check(done, f"start {node.starts}: ran to the end (exit {rc}) before the kill",
                      node.log_text(20))
                break
            time.sleep(delay)
            where = "training"
        if node.proc.poll() is not None:
            rc = node.wait(10)
            done = rc == 0
            check(done, f"start {node.starts}: finished (exit {rc}) before its kill",
                  node.log_text(20))
            break
        node.kill9()
        kills += 1
        started_kills += where == "training"
        tmp_after = [p for p in tmp_files(node.state_dir) if "checkpoints" in p]
        if tmp_after:
            in_ckpt += 1
        dump = nu.ledger_dump(node.state_dir) if os.path.exists(ledger) else []
        if dump is None:
            break
        got = updates(dump)
        if summary(dump).get("truncated_bytes", 0):
            torn_seen += 1
        if got != ref_updates[:len(got)]:
            prefix_bad += 1
            diff = next((i for i, (x, y) in enumerate(zip(got, ref_updates)) if x != y),
                        len(ref_updates))
            check(False, f"kill {kills}: ledger is a prefix of the reference ledger",
                  f"{len(got)} updates; first difference at index {diff}")
        if len(got) < prev:
            shrunk += 1
            check(False, f"kill {kills}: ledger shrank from {prev} to {len(got)} updates")
        prev = max(prev, len(got))
        if os.path.exists(ledger) and os.path.getsize(ledger) >= LEDGER_HEADER and kills % 4 == 0:
            injected_sizes.append(inject_torn_tail(ledger, rng))
            injected += 1
        print(f"      kill {kills:2d} ({where:8s} +{delay * 1000:6.1f} ms): ledger {len(got):3d} "
              f"updates{', checkpoint tmp file present' if tmp_after else ''}"
              f"{', torn tail' if summary(dump).get('truncated_bytes', 0) else ''}", flush=True)

    check(prefix_bad == 0 and shrunk == 0,
          f"after each of {kills} kills the ledger was a growing prefix of the reference")
    # A run that ends before all its kills (the machine sped up) still needs many.
    check(kills >= (KILLS // 2 if done else KILLS),
          f"{kills} SIGKILLs delivered ({started_kills} after training started)")
    if not done:
        t1 = time.monotonic()
        node.log_offset = os.path.getsize(node.log)
        expect_next[node.starts] = prev
        node.start(until_done=True)
        rc = node.wait(300)
        check(rc == 0, f"final restart runs to the end: exit 0 ({time.monotonic() - t1:.1f} s)",
              node.log_text(30))
    log = node.log_text()
    # Each start resumes right after the last update that reached the ledger.
    resumed = []
    start = None
    for line in log.splitlines():
        if line.startswith("### start "):
            start = int(line.split()[2].rstrip(":"))
        elif 'msg="swarmd started"' in line and start is not None:
            kv = dict(x.split("=", 1) for x in line.split() if "=" in x)
            resumed.append((start, int(kv.get("next_update", -1)), int(kv.get("ledger_updates", -1))))
    bad = [r for r in resumed if not (r[1] == r[2] == expect_next.get(r[0]))]
    check(len(resumed) >= kills // 2 and not bad,
          f"{len(resumed)} starts reached training, each at next_update == ledger updates "
          f"== the count before it (no step number skipped or reused)",
          f"(start, next_update, ledger_updates) not matching {expect_next}: {bad}")
    torn = [int(line.split(" torn_bytes=", 1)[1].split()[0]) for line in log.splitlines()
            if 'msg="swarmd started"' in line and " torn_bytes=" in line]
    torn = [t for t in torn if t]
    torn_fixed = len(torn)
    print(f"      {kills} kills: {in_ckpt} left a checkpoint temp file (killed mid-write), "
          f"{torn_seen} left a torn ledger tail, {injected} torn tails injected; "
          f"{node.starts} starts, {torn_fixed} of them truncated a torn tail")
    check((torn_fixed >= 1 or not injected) and all(t in injected_sizes for t in torn),
          f"starts truncated torn tails of {torn} bytes, each exactly an injected tail "
          f"({injected_sizes})")

    dump = nu.ledger_dump(node.state_dir)
    if dump is not None:
        got = updates(dump)
        steps = sorted(r["step"] for r in got)
        check(steps == list(range(STEPS)),
              f"own step numbers are exactly 0..{STEPS - 1}, once each ({len(got)} updates)",
              f"steps: {steps}")
        check(got == ref_updates, "ledger identical to the uninterrupted run's (origin, step, q, scale)")
        check(summary(dump).get("truncated_bytes", 1) == 0, "no torn tail left in the final ledger")
    out = nu.export(node.state_dir, os.path.join(d, "export"))
    if out:
        same, why = nu.same_export(ref_export, out)
        check(same, f"export byte-identical to the uninterrupted run's ({why})", why)
        check(nu.model_digest(out) == nu.model_digest(ref_export), "equal model digests")
    left = tmp_files(node.state_dir)
    check(not left, "no temporary file left in the state dir", "\n".join(left))
    return nu.finish("node_crash", t0)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""An independent decoder reads a live swarm's PUB traffic.

A founder and a joiner train together (the founder with batch_max_ms 60000,
so it publishes only full 64-step batches).  `nngcat --sub` captures the
founder's PUB socket for a bounded time, printing every message with --hex
(each byte as \\xHH: exact).  Every captured message is then read with
python3-protobuf (proto/swarm.proto compiled by protoc) and python3-nacl
only (tests/ref/wireutil.py), nothing from daemon/wire.c:

  - it parses as an Envelope whose Ed25519 signature verifies over
    run_id || body, the run id being BLAKE2b-256 of the founder's
    runspec.json; its sender is the founder's node id (from status);
  - UpdateBatch: every q byte in -127..127, 0 < scale <= the run spec's
    max_scale, 64 steps each, consecutive across the capture, starting on
    a batch boundary;
  - Announce: pub_addr and sync_addr are the founder's (status), seq grows,
    the version vector names the founder (and only swarm members), its own
    count is the announced step and runs ahead of the batches published
    before it by less than one batch; the member list carries the joiner
    with the joiner's addresses;
  - bytes per update on the wire, (sum of batch envelope sizes + 8 bytes of
    nng TCP framing each) / updates, is printed and must be under 3.
"""
import json
import os
import select
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import nodeutil as nu  # noqa: E402
from nodeutil import check  # noqa: E402
import wireutil as wu  # noqa: E402

NNGCAT = "/usr/bin/nngcat"
CAPTURE_S = 4  # seconds of traffic captured at least (and 3 batches)
BATCH = 64  # the daemon's default batch_max_steps


def parse_hex_lines(text):
    """nngcat --hex output: one "\\xHH\\xHH..." line per message.  A last line
    without its newline (cut by the capture's end) is left out."""
    msgs = []
    lines = text.split("\n")
    for line in lines[:-1]:
        if not line:
            continue
        if not (line.startswith('"') and line.endswith('"')):
            raise ValueError("unexpected nngcat line: %r" % line[:80])
        body = line[1:-1]
        if len(body) % 4 or any(body[i:i + 2] != "\\x" for i in range(0, len(body), 4)):
            raise ValueError("not \\xHH bytes: %r" % line[:80])
        msgs.append(bytes(int(body[i + 2:i + 4], 16) for i in range(0, len(body), 4)))
    return msgs


def capture(url, run_id, min_s, min_batches, max_s, alive=()):
    """Messages published at url (nngcat --sub, which flushes every message):
    at least min_s seconds and until min_batches batches arrived, at most
    max_s seconds (nodeutil.Exited at once if a process of alive exits);
    nngcat is then stopped with SIGTERM."""
    p = subprocess.Popen([NNGCAT, "--sub", "--dial", url, "--subscribe", "", "--hex",
                          "--count", "5000"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    buf, batches = b"", 0
    try:
        while True:
            el = time.monotonic() - t0
            if el >= max_s or (el >= min_s and batches >= min_batches):
                break
            ready, _, _ = select.select([p.stdout], [], [], 0.2)
            if not ready:
                nu.check_alive(alive)
                continue
            chunk = os.read(p.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            buf += chunk
            done = buf[:buf.rfind(b"\n") + 1]
            # count batches in the lines complete so far
            batches = 0
            for m in parse_hex_lines(done.decode("ascii")):
                try:
                    batches += wu.open_envelope(m, run_id).kind == "batch"
                except Exception:  # noqa: BLE001 - judged later
                    pass
    finally:
        p.terminate()
        try:
            rest, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            rest, _ = p.communicate()
    return parse_hex_lines((buf + rest).decode("ascii")), time.monotonic() - t0


def main():
    t0 = time.time()
    if not nu.require_binaries() or not os.access(NNGCAT, os.X_OK):
        return 1
    root = nu.tmpdir("swarm-decode-")
    shards = nu.shard(os.path.join(nu.DATA, "topic-train.jsonl"), 2, root)
    fcfg = nu.swarm_config(os.path.join(root, "f", "state"), data=shards[0], max_steps=1000000,
                           batch_size=1, seq_len=64, seed=1)
    # full batches only; no pacing stall while the founder holds 63 unpublished steps
    fcfg["node"].update({"batch_max_ms": 60000, "max_staleness": 1000000})
    founder = nu.Node(os.path.join(root, "f"), fcfg)
    founder.start(until_done=False)
    if not check(nu.wait_until(lambda: nu.status(founder.state_dir), 120,
                               alive=(founder,)) is not None,
                 "founder answers status", founder.log_text(30)):
        return nu.finish("swarm_decode", t0)
    jcfg = nu.swarm_config(os.path.join(root, "j", "state"), bootstrap=nu.sync_addr(fcfg),
                           data=shards[1], seed=2, batch_size=1, seq_len=64)
    for k in ("max_steps", "lr", "eps"):
        jcfg["train"].pop(k)
    jcfg["node"]["max_staleness"] = 1000000
    joiner = nu.Node(os.path.join(root, "j"), jcfg)
    joiner.start(until_done=False)

    fst = nu.status(founder.state_dir)
    fid = bytes.fromhex(fst["node"]["id"])
    runspec, run_id = wu.read_runspec(founder.state_dir)
    max_scale = json.loads(runspec)["train"]["max_scale"]
    check(run_id.hex() == fst["node"]["run_id"],
          f"run id = BLAKE2b-256(runspec.json) = status run_id {run_id.hex()[:16]}")
    jst = nu.wait_until(lambda: (lambda s: s if s and fst["node"]["id"] in
                                 s["model"]["version_vector"] else None)(nu.status(joiner.state_dir)),
                        120, every=0.3, alive=(founder, joiner))
    if not check(jst is not None, "the joiner joins and holds founder updates", joiner.log_text(20)):
        return nu.finish("swarm_decode", t0)
    jid = jst["node"]["id"]
    nu.wait_until(lambda: (lambda s: s and jid in s["model"]["version_vector"])(
        nu.status(founder.state_dir)), 60, every=0.3, alive=(founder, joiner))

    before = nu.status(founder.state_dir)
    msgs, secs = capture(fst["node"]["pub_addr"], run_id, CAPTURE_S, 3, 120,
                         alive=(founder, joiner))
    after = nu.status(founder.state_dir)
    print(f"      captured {len(msgs)} messages in {secs:.1f} s; founder step "
          f"{before['node']['step']} -> {after['node']['step']}")

    opened, bad = [], []
    for i, m in enumerate(msgs):
        try:
            opened.append(wu.open_envelope(m, run_id))
        except Exception as e:  # noqa: BLE001
            bad.append((i, len(m), repr(e)))
    check(msgs and not bad, f"all {len(msgs)} captured messages parse and verify over "
          "run_id || body (Python protobuf + nacl)", bad[:5])
    check(all(o.sender == fid and o.ctx == "run" for o in opened),
          f"every sender is the founder {fid.hex()[:12]}, run context")
    kinds = {}
    for o in opened:
        kinds[o.kind] = kinds.get(o.kind, 0) + 1
    print(f"      kinds: {kinds}")
    check(set(kinds) <= {"batch", "announce"}, "only batches and announces on a training PUB")

    batches = [o for o in opened if o.kind == "batch"]
    announces = [o for o in opened if o.kind == "announce"]
    if not check(len(batches) >= 2 and len(announces) >= 2,
                 f"{len(batches)} batches and {len(announces)} announces captured (>= 2 each)",
                 founder.log_text(10)):
        return nu.finish("swarm_decode", t0)

    # update batches
    qs_ok = all(all(b != 0x80 for b in o.msg.q) for o in batches)
    check(qs_ok, "every q byte is an int8 in -127..127 (no 0x80)")
    scales = [o.msg.scale for o in batches]
    check(all(s > 0 and s == s and s <= max_scale for s in scales),
          f"every scale in (0, max_scale {max_scale}]: {min(scales):.4g}..{max(scales):.4g}")
    check(all(len(o.msg.q) == BATCH for o in batches),
          f"every batch holds {BATCH} steps ({sorted({len(o.msg.q) for o in batches})})")
    firsts = [o.msg.first_step for o in batches]
    check(firsts[0] % BATCH == 0 and all(b - a == BATCH for a, b in zip(firsts, firsts[1:])),
          f"batches consecutive from step {firsts[0]}: {firsts}")

    # announces against the batches published before each, and status
    seqs = [o.msg.seq for o in announces]
    check(all(b > a for a, b in zip(seqs, seqs[1:])), f"announce seq strictly increases "
          f"({len(seqs)} announces)")
    check(all(o.msg.pub_addr == fst["node"]["pub_addr"] and
              o.msg.sync_addr == fst["node"]["sync_addr"] for o in announces),
          f"every announce carries the founder's addresses {fst['node']['pub_addr']}, "
          f"{fst['node']['sync_addr']}")
    members = {fid.hex(), jid}
    check(all({e.origin.hex() for e in o.msg.vv} <= members and
              fid in {e.origin for e in o.msg.vv} for o in announces),
          "every announce's version vector names the founder and only swarm members")
    covered, seen_batch, lead_ok, step_ok = None, False, True, True
    leads = []
    for o in opened:
        if o.kind == "batch":
            covered = o.msg.first_step + len(o.msg.q)
            seen_batch = True
            continue
        own = next((e.count for e in o.msg.vv if e.origin == fid), 0)
        # own updates count once published: at most the announced step
        step_ok &= own <= o.msg.step
        if seen_batch:
            leads.append(own - covered)
            lead_ok &= 0 <= own - covered < BATCH
    check(step_ok, "every announce's own version-vector count (what it published) is at most its step")
    check(lead_ok and leads, f"the batches cover the founder's steps: each announce after a batch "
          f"is 0..{BATCH - 1} steps ahead of the published end (leads {min(leads)}..{max(leads)})")
    last_vv = {e.origin.hex(): e.count for e in announces[-1].msg.vv}
    check(before["node"]["step"] <= last_vv.get(fid.hex(), 0) <= after["node"]["step"] and
          jid in last_vv,
          f"the last announce's own count {last_vv.get(fid.hex())} lies between the status steps "
          f"around the capture and it holds joiner updates ({last_vv.get(jid)})")
    jm = [m for m in announces[-1].msg.members if m.id.hex() == jid]
    check(jm and jm[0].pub_addr == jst["node"]["pub_addr"] and
          jm[0].sync_addr == jst["node"]["sync_addr"] and jm[0].alive,
          "the last announce gossips the joiner, alive, with its own addresses")
    check(all(len(o.msg.digest) in (0, 32) for o in announces), "digests are empty or 32 bytes")

    # bytes per update
    env_bytes = sum(o.size for o in batches)
    updates = sum(len(o.msg.q) for o in batches)
    per = (env_bytes + wu.NNG_TCP_FRAME * len(batches)) / updates
    sizes = sorted({o.size for o in batches})
    print(f"      {len(batches)} batch envelopes of {sizes} bytes, {updates} updates: "
          f"({env_bytes} + {wu.NNG_TCP_FRAME} x {len(batches)}) / {updates} = "
          f"{per:.3f} bytes per update")
    check(per < 3, f"bytes per update {per:.3f} < 3")

    for n in (founder, joiner):
        n.proc.terminate()
    for n in (founder, joiner):
        check(n.wait(60) == 0, f"{os.path.basename(n.root)} stops with exit 0 on SIGTERM",
              n.log_text(10))
    return nu.finish("swarm_decode", t0)


if __name__ == "__main__":
    sys.exit(nu.run_test(main))

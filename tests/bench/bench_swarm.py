#!/usr/bin/python3
"""Swarm benchmark: bytes on the wire per update, and how long a joiner takes
to catch up by replay and by snapshot, measured in the same run.

1. Wire cost (loopback, steady state).  Three swarmd nodes train the fixture
   model on three shards of topic-train.jsonl (batch 4, seq_len 64, 1 thread
   each), full update batches (batch_max_steps 64, batch_max_ms 60000),
   heartbeat_ms 1000, max_staleness 256 (the default 8 is below the 64-step
   batches: every node would stall lag_timeout_ms for each peer batch).
   (a) The update stream: the founder's PUB socket is captured with nngcat
       (--format msgpack: exact message boundaries); every message is decoded
       with protobuf (protoc --python_out of proto/swarm.proto) and told apart
       (batch, announce, leave).  bytes/update = (batch envelope bytes + 8 per
       message for nng's TCP frame header) / updates in them.
   (b) Everything one receiving node takes in: net.bytes_in (payload of the
       SUB, sync REP and REQ sockets) per net.updates_in, between two status
       samples while all three train (not from startup), with and without
       8 bytes per message (net.msgs_in) of framing.  It includes the other
       nodes' announces and heartbeats and the anti-entropy exchanges.
2. Catch-up of a new joiner with catch_up = replay, then = snapshot (forced),
   each against the same founder state: time from the joiner's start to the
   first status poll (every 0.2 s) at which it has applied every update the
   founder holds.  The joiner trains as soon as it is admitted (its own
   max_steps, adopted from the run), so its version vector never equals the
   founder's while the measure runs: "caught up" is its count equal to the
   founder's for every one of the founder's origins.  The joiner publishes
   none of its own updates meanwhile (batch_max_steps 1024, batch_max_ms 1 h),
   so the second joiner meets the same founder ledger as the first.
   (a) The fixture model: the founder is part 1's founder restarted alone,
       its ledger holding the three nodes' updates, its newest checkpoint
       (written on stop) holding all of them.
   (b) A random GPT-2-small-shaped 124M model (swarmctl model init, with the
       fixture's GPT-2 tokenizer files): a founder trains a few steps
       (batch 1, seq_len 16, 2 threads, checkpoint_every 8); joiners use
       2 threads too.
   Next to each measured time: the joiner's own "catch-up plan" estimates
   (replay_s, snapshot_s, daemon/catchup.c), and the ratio snapshot/replay.

Run: meson test -C build --benchmark --suite bench swarm -v
SW_BENCH_SWARM_STEPS (default 640) sets part 1's max_steps;
SW_BENCH_SWARM_124M_STEPS (default 24) the 124M founder's.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "ref"))
from benchutil import ensure_124m  # noqa: E402
import nodeutil as nu  # noqa: E402

SRC = nu.SOURCE
BUILD = nu.BUILD
STEPS = int(os.environ.get("SW_BENCH_SWARM_STEPS", "640"))
STEPS_124M = int(os.environ.get("SW_BENCH_SWARM_124M_STEPS", "24"))
BATCH_STEPS = 64
FRAME = 8  # nng's TCP SP frame header: a 64-bit length


def fail(msg, *nodes):
    print(f"bench_swarm: {msg}", file=sys.stderr)
    for n in nodes:
        print(f"--- {n.log}\n{n.log_text(20)}", file=sys.stderr)
    sys.exit(1)


def compile_proto(tmp):
    out = os.path.join(tmp, "py")
    os.makedirs(out, exist_ok=True)
    subprocess.run(["protoc", "--proto_path=" + os.path.join(SRC, "proto"),
                    "--python_out=" + out, "swarm.proto"], check=True)
    sys.path.insert(0, out)
    import swarm_pb2  # noqa: E402
    return swarm_pb2


def read_msgpack_bins(path):
    """The messages nngcat --format msgpack wrote: a sequence of msgpack bin
    objects (bin8 0xc4, bin16 0xc5, bin32 0xc6, big-endian lengths)."""
    with open(path, "rb") as f:
        data = f.read()
    out, i = [], 0
    widths = {0xc4: 1, 0xc5: 2, 0xc6: 4}
    while i < len(data):
        w = widths.get(data[i])
        if w is None or i + 1 + w > len(data):
            fail(f"{path}: not a msgpack bin at byte {i}")
        n = int.from_bytes(data[i + 1:i + 1 + w], "big")
        if i + 1 + w + n > len(data):
            break  # a message cut by the capture's end
        out.append(data[i + 1 + w:i + 1 + w + n])
        i += 1 + w + n
    return out


def node_cfg(root, name, bootstrap, data, seed, **train):
    cfg = nu.swarm_config(os.path.join(root, name, "state"), bootstrap=bootstrap, data=data,
                          seed=seed, **train)
    cfg["node"]["heartbeat_ms"] = 1000
    if bootstrap:  # joiners set only node-local keys: they adopt the run spec
        for k in ("max_steps", "lr", "eps"):
            cfg["train"].pop(k, None)
    return cfg


def status_of(node, timeout=10):
    """The node's status; fails at once when its process has exited."""
    s = nu.status(node.state_dir, timeout=timeout)
    if s is None and node.proc.poll() is not None:
        fail(f"{node.root}: swarmd exited with {node.proc.returncode}", node)
    return s


def start(root, name, cfg):
    node = nu.Node(os.path.join(root, name), cfg)
    node.start(until_done=False)
    if not nu.wait_until(lambda: status_of(node) is not None, 120, every=0.2):
        fail(f"node {name} does not answer swarmctl status", node)
    return node


def stop(nodes):
    for n in nodes:
        if n.proc and n.proc.poll() is None:
            n.proc.terminate()
    for n in nodes:
        if n.proc and n.wait(60) is None:
            fail(f"{n.root}: no exit within 60 s of SIGTERM", n)


def wire_cost(root, shards, pb):
    """Part 1; returns (figures, the founder's Node)."""
    nodes = []
    fcfg = node_cfg(root, "a", "", shards[0], 1, max_steps=STEPS, batch_size=4, seq_len=64,
                    max_scale=1.0)
    keys = {"batch_max_steps": BATCH_STEPS, "batch_max_ms": 60000, "max_staleness": 256}
    fcfg["node"].update(keys)
    founder = start(root, "a", fcfg)
    nodes.append(founder)
    cap_path = os.path.join(root, "a-pub.msgpack")
    cap_file = open(cap_path, "wb")
    cap = subprocess.Popen(["nngcat", "--sub", "--dial", fcfg["node"]["listen"], "--subscribe", "",
                            "--format", "msgpack"], stdout=cap_file, stderr=subprocess.PIPE)
    cap_file.close()
    nu._children.append(cap)
    time.sleep(0.3)
    if cap.poll() is not None:
        fail(f"nngcat exited: {cap.stderr.read().decode(errors='replace')}")
    for i, name in enumerate("bc"):
        cfg = node_cfg(root, name, nu.sync_addr(fcfg), shards[i + 1], i + 2, batch_size=4,
                       seq_len=64)
        cfg["node"].update(keys)
        nodes.append(start(root, name, cfg))
    b = nodes[1]

    # steady state: every node past its first batches, none near its end
    lo, hi = BATCH_STEPS + 16, STEPS - BATCH_STEPS - 16
    first = last = None
    t_end = time.monotonic() + 900
    while time.monotonic() < t_end:
        sts = [status_of(n) for n in nodes]
        if all(sts):
            steps = [s["node"]["step"] for s in sts]
            if first is None and min(steps) >= lo and max(steps) < hi:
                first = (time.monotonic(), sts[1])
            elif first is not None and max(steps) >= hi:
                last = (time.monotonic(), sts[1])
                break
        time.sleep(0.5)
    if first is None or last is None:
        fail("no steady-state window (all nodes past step %d, none past %d)" % (lo, hi), *nodes)
    dirs = [n.state_dir for n in nodes]
    def all_done():
        for n in nodes:
            if n.proc.poll() is not None:
                fail(f"{n.root}: swarmd exited with {n.proc.returncode}", n)
        s = nu.converged(dirs)
        return s if s and all(x["node"]["state"] == "done" for x in s) else None

    done = nu.wait_until(all_done, 900, every=0.5)
    if not done:
        fail("the three nodes do not reach max_steps and one version vector", *nodes)
    time.sleep(1.5)  # the founder's last announces
    a_st = nu.status(founder.state_dir)
    cap.send_signal(signal.SIGTERM)
    cap.wait(timeout=10)
    nu._children.remove(cap)
    stop(nodes)

    kinds = {}
    batch_bytes = batch_updates = full = 0
    for m in read_msgpack_bins(cap_path):
        env = pb.Envelope.FromString(m)
        body = pb.Body.FromString(env.body)
        kind = body.WhichOneof("msg")
        c = kinds.setdefault(kind, [0, 0])
        c[0] += 1
        c[1] += len(m)
        if kind == "batch":
            batch_bytes += len(m)
            batch_updates += len(body.batch.q)
            full += len(body.batch.q) == BATCH_STEPS
    n_batches = kinds.get("batch", [0, 0])[0]
    if batch_updates != a_st["net"]["updates_out"] or n_batches != a_st["net"]["batches_out"]:
        fail(f"capture: {n_batches} batches / {batch_updates} updates, but the founder's status "
             f"says {a_st['net']['batches_out']} / {a_st['net']['updates_out']}")
    (t0, s0), (t1, s1) = first, last
    d = {k: s1["net"][k] - s0["net"][k] for k in ("bytes_in", "msgs_in", "updates_in")}
    fig = {
        "batches": n_batches, "full_batches": full, "updates": batch_updates,
        "batch_bytes": batch_bytes,
        "per_update": (batch_bytes + FRAME * n_batches) / batch_updates,
        "per_update_noframe": batch_bytes / batch_updates,
        "kinds": kinds,
        "window_s": t1 - t0, "window_steps": (s0["node"]["step"], s1["node"]["step"]),
        "in": d,
        "in_per_update": (d["bytes_in"] + FRAME * d["msgs_in"]) / d["updates_in"],
        "in_per_update_noframe": d["bytes_in"] / d["updates_in"],
        "ledger": done[0]["ledger"]["updates"],
    }
    return fig, founder


PLAN_RE = re.compile(r"msg=\"?catch-up plan\"?.*?choice=(\w+) replay_s=(\S+) snapshot_s=(\S+) "
                     r"ledger_updates=(\d+) snapshot_updates=(\d+) snapshot_bytes=(\d+)")


def catch_up(root, label, founder, mode, data, threads, train):
    """One joiner against the running founder; returns its figures."""
    fst = nu.status(founder.state_dir)
    target = fst["model"]["version_vector"]
    cfg = node_cfg(root, f"{label}-{mode}", nu.sync_addr(founder.cfg), data, 7, threads=threads,
                   **train)
    cfg["model"]["path"] = founder.cfg["model"]["path"]
    cfg["node"].update({"catch_up": mode, "batch_max_steps": 1024, "batch_max_ms": 3600000})
    node = nu.Node(os.path.join(root, f"{label}-{mode}"), cfg)
    node.start(until_done=False)

    def caught_up():
        s = status_of(node, timeout=5)
        if s is None:
            return None
        vv = s["model"]["version_vector"]
        return s if all(vv.get(o) == c for o, c in target.items()) else None

    s = nu.wait_until(caught_up, 600, every=0.2)
    t = time.monotonic() - node.started_at
    if not s:
        fail(f"joiner ({mode}) did not catch up within 600 s", node, founder)
    node.kill9()
    text = node.log_text()
    m = PLAN_RE.search(text)
    if not m:
        fail("no catch-up plan line in the joiner's log", node)
    plan = {"choice": m.group(1), "replay_s": float(m.group(2)), "snapshot_s": float(m.group(3)),
            "ledger_updates": int(m.group(4)), "snapshot_updates": int(m.group(5)),
            "snapshot_bytes": int(m.group(6))}
    used_snapshot = "snapshot: downloaded and verified" in text
    if used_snapshot != (mode == "snapshot"):
        fail(f"joiner ({mode}): snapshot used = {used_snapshot}", node)
    return {"t": t, "plan": plan, "own_steps": s["node"]["step"]}


def model_124m(root):
    """The random 124M model with the fixture's GPT-2 tokenizer files beside it."""
    src = ensure_124m(BUILD)
    d = os.path.join(root, "gpt2-124m")
    os.makedirs(d)
    for name in ("model.safetensors", "config.json"):
        os.symlink(os.path.join(src, name), os.path.join(d, name))
    for name in ("vocab.json", "merges.txt"):
        os.symlink(os.path.join(nu.FIXTURE_MODEL, name), os.path.join(d, name))
    return d


def main():
    t_start = time.monotonic()
    if not nu.require_binaries():
        return 1
    root = nu.tmpdir("bench-swarm-")
    pb = compile_proto(root)
    shards = nu.shard(os.path.join(nu.DATA, "topic-train.jsonl"), 3, root)
    topic = os.path.join(nu.DATA, "topic-train.jsonl")

    wire, founder = wire_cost(root, shards, pb)
    print(f"part 1 done ({time.monotonic() - t_start:.0f} s)", flush=True)

    rows = []
    # 2a: part 1's founder, restarted alone; its stop checkpoint holds its whole ledger
    founder.start(until_done=False)
    if not nu.wait_until(lambda: status_of(founder) is not None, 120, every=0.2):
        fail("the restarted founder does not answer", founder)
    fst = nu.status(founder.state_dir)
    small = {"batch_size": 4, "seq_len": 64}
    for mode in ("replay", "snapshot"):
        rows.append(("fixture 7.3M", fst["ledger"], mode,
                     catch_up(root, "fix", founder, mode, shards[1], 1, small)))
    stop([founder])
    print(f"part 2a done ({time.monotonic() - t_start:.0f} s)", flush=True)

    # 2b: a 124M founder trains a few steps, checkpointing every 8
    mdir = model_124m(root)
    big = {"batch_size": 1, "seq_len": 16}
    cfg = node_cfg(root, "big", "", topic, 1, max_steps=STEPS_124M, max_scale=1.0, threads=2,
                   **big)
    cfg["model"]["path"] = mdir
    cfg["node"]["checkpoint_every"] = 8
    t0 = time.monotonic()
    big_founder = start(root, "big", cfg)
    st = nu.wait_until(lambda: (lambda s: s if s and s["node"]["state"] == "done" and
                                s["net"]["updates_out"] == STEPS_124M and
                                s["ledger"]["checkpoint_updates"] == STEPS_124M else None)(
                                    status_of(big_founder)), 900, every=0.5)
    if not st:
        fail("the 124M founder does not finish", big_founder)
    t_train = time.monotonic() - t0
    for mode in ("replay", "snapshot"):
        rows.append(("gpt2 124M", st["ledger"], mode,
                     catch_up(root, "big", big_founder, mode, topic, 2, big)))
    stop([big_founder])

    print()
    print(f"## Wire cost: 3 nodes, fixture model, batch 4 x 64 tokens, max_steps {STEPS}, "
          f"batch_max_steps {BATCH_STEPS}, heartbeat_ms 1000, loopback")
    print()
    print("| stream | messages | updates | bytes | bytes/update (+8 B/msg framing) | without framing |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| (a) founder's PUB: batch envelopes ({wire['full_batches']} of {wire['batches']} "
          f"full) | {wire['batches']} | {wire['updates']} | {wire['batch_bytes']} | "
          f"{wire['per_update']:.3f} | {wire['per_update_noframe']:.3f} |")
    i = wire["in"]
    print(f"| (b) node b, all swarm sockets in, steady state ({wire['window_s']:.0f} s, its steps "
          f"{wire['window_steps'][0]}..{wire['window_steps'][1]}) | {i['msgs_in']} | "
          f"{i['updates_in']} | {i['bytes_in']} | {wire['in_per_update']:.3f} | "
          f"{wire['in_per_update_noframe']:.3f} |")
    others = ", ".join(f"{k} {c[0]} x {c[1] / c[0]:.0f} B" for k, c in sorted(wire["kinds"].items()))
    print()
    print(f"Founder's PUB over the whole run, by kind (count x mean envelope bytes): {others}.")
    print(f"(b)/(a) = {wire['in_per_update'] / wire['per_update']:.2f}: node b takes in two "
          "peers' announces/heartbeats and anti-entropy besides their batches.")
    print()
    print(f"## Catch-up of a new joiner (124M founder: {STEPS_124M} steps, batch 1 x 16 tokens, "
          f"2 threads, trained in {t_train:.0f} s incl. load)")
    print()
    print("| model | founder ledger / checkpoint updates | catch_up | measured s | plan: replay_s | "
          "plan: snapshot_s | snapshot MB | auto would pick | joiner's own steps meanwhile |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for label, ledger, mode, r in rows:
        p = r["plan"]
        auto = "snapshot" if 0 <= p["snapshot_s"] < p["replay_s"] else "replay"
        print(f"| {label} | {ledger['updates']} / {ledger['checkpoint_updates']} | {mode} | "
              f"{r['t']:.2f} | {p['replay_s']:.3g} | {p['snapshot_s']:.3g} | "
              f"{p['snapshot_bytes'] / 1e6:.0f} | {auto} | {r['own_steps']} |")
    print()
    for label in ("fixture 7.3M", "gpt2 124M"):
        t = {mode: r["t"] for lab, _, mode, r in rows if lab == label}
        p = next(r["plan"] for lab, _, _, r in rows if lab == label)
        faster = "snapshot" if t["snapshot"] < t["replay"] else "replay"
        auto = "snapshot" if 0 <= p["snapshot_s"] < p["replay_s"] else "replay"
        print(f"{label}: snapshot/replay measured {t['snapshot'] / t['replay']:.2f}, estimated "
              f"{p['snapshot_s'] / p['replay_s']:.2f}; faster here: {faster}; auto picks: {auto}"
              f"{'' if faster == auto else ' (MISPICK on loopback)'}")
    print(f"\nbench_swarm: {time.monotonic() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
       nodes' announces and heartbeats and the anti-entropy exchanges: the
       PUB sockets of a and c are captured too (same window, timestamped as
       read), which splits b's intake into their batches, their announces,
       and the rest (b's sync REP requests and REQ replies).
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
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "ref"))
from benchutil import ensure_124m, require  # noqa: E402
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


class Capture:
    """Every message a node publishes, timestamped: nngcat subscribed to its
    PUB with --format msgpack (one msgpack bin object per message, so the
    boundaries are exact), read by a thread as it arrives."""

    def __init__(self, url):
        self.msgs = []  # (monotonic seconds, message bytes)
        self.proc = subprocess.Popen(["nngcat", "--sub", "--dial", url, "--subscribe", "",
                                      "--format", "msgpack"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        nu._children.append(self.proc)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        time.sleep(0.3)
        if self.proc.poll() is not None:
            fail(f"nngcat --dial {url} exited: {self.proc.stderr.read().decode(errors='replace')}")

    def _read(self):
        buf = b""
        widths = {0xc4: 1, 0xc5: 2, 0xc6: 4}  # bin8, bin16, bin32; big-endian lengths
        while True:
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                return
            t = time.monotonic()
            buf += chunk
            while buf:
                w = widths.get(buf[0])
                if w is None:
                    self.bad = buf[:16]
                    return
                if len(buf) < 1 + w:
                    break
                n = int.from_bytes(buf[1:1 + w], "big")
                if len(buf) < 1 + w + n:
                    break
                self.msgs.append((t, buf[1 + w:1 + w + n]))
                buf = buf[1 + w + n:]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        nu._children.remove(self.proc)
        self.thread.join(timeout=10)
        if getattr(self, "bad", None) is not None:
            fail(f"nngcat wrote something other than msgpack bin objects: {self.bad!r}")


def tally(pb, msgs, t0=None, t1=None):
    """{kind: [messages, envelope bytes, updates]} of the messages in [t0, t1)."""
    out = {}
    for t, m in msgs:
        if t0 is not None and not t0 <= t < t1:
            continue
        body = pb.Body.FromString(pb.Envelope.FromString(m).body)
        kind = body.WhichOneof("msg")
        c = out.setdefault(kind, [0, 0, 0])
        c[0] += 1
        c[1] += len(m)
        if kind == "batch":
            c[2] += len(body.batch.q)
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
    caps = {"a": Capture(fcfg["node"]["listen"])}
    for i, name in enumerate("bc"):
        cfg = node_cfg(root, name, nu.sync_addr(fcfg), shards[i + 1], i + 2, batch_size=4,
                       seq_len=64)
        cfg["node"].update(keys)
        nodes.append(start(root, name, cfg))
        if name == "c":
            caps["c"] = Capture(cfg["node"]["listen"])

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
    for c in caps.values():
        c.stop()
    stop(nodes)

    kinds = tally(pb, caps["a"].msgs)
    n_batches, batch_bytes, batch_updates = kinds.get("batch", [0, 0, 0])
    if batch_updates != a_st["net"]["updates_out"] or n_batches != a_st["net"]["batches_out"]:
        fail(f"capture: {n_batches} batches / {batch_updates} updates, but the founder's status "
             f"says {a_st['net']['batches_out']} / {a_st['net']['updates_out']}")
    full = sum(1 for _, m in caps["a"].msgs
               if len(pb.Body.FromString(pb.Envelope.FromString(m).body).batch.q) == BATCH_STEPS)
    (t0, s0), (t1, s1) = first, last
    d = {k: s1["net"][k] - s0["net"][k] for k in ("bytes_in", "msgs_in", "updates_in")}
    # what b's SUB socket took in over the window: a's and c's PUB messages
    sub = {}
    for c in ("a", "c"):
        for kind, v in tally(pb, caps[c].msgs, t0, t1).items():
            w = sub.setdefault(kind, [0, 0, 0])
            for j in range(3):
                w[j] += v[j]
    fig = {
        "batches": n_batches, "full_batches": full, "updates": batch_updates,
        "batch_bytes": batch_bytes,
        "per_update": (batch_bytes + FRAME * n_batches) / batch_updates,
        "per_update_noframe": batch_bytes / batch_updates,
        "kinds": kinds, "capture_s": caps["a"].msgs[-1][0] - caps["a"].msgs[0][0],
        "window_s": t1 - t0, "window_steps": (s0["node"]["step"], s1["node"]["step"]),
        "in": d, "sub": sub,
        "in_per_update": (d["bytes_in"] + FRAME * d["msgs_in"]) / d["updates_in"],
        "in_per_update_noframe": d["bytes_in"] / d["updates_in"],
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

    up = []

    def caught_up():
        s = status_of(node, timeout=5)
        if s is None:
            return None
        if not up:
            up.append(time.monotonic() - node.started_at)
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
    return {"t": t, "up": up[0], "plan": plan, "own_steps": s["node"]["step"]}


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
    require("bench swarm", modules=("google.protobuf",), tools=("nngcat", "protoc"))
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
    w = wire
    i = w["in"]
    nu_in = i["updates_in"]

    def row(name, msgs, updates, nbytes, per):
        framed = (nbytes + FRAME * msgs) / per
        print(f"| {name} | {msgs} | {updates} | {nbytes} | {framed:.2f} | {nbytes / per:.2f} |")

    print("| stream | messages | updates | bytes | B/update incl. 8 B/msg framing | "
          "B/update without |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    row(f"(a) a's PUB, batch envelopes ({w['full_batches']} of {w['batches']} full), whole run",
        w["batches"], w["updates"], w["batch_bytes"], w["updates"])
    row(f"(b) b, all swarm sockets in, steady state {w['window_s']:.1f} s (b's steps "
        f"{w['window_steps'][0]}..{w['window_steps'][1]})", i["msgs_in"], nu_in, i["bytes_in"],
        nu_in)
    sub_msgs = sub_bytes = 0
    for kind, (m, nb, u) in sorted(w["sub"].items()):
        row(f"&nbsp;&nbsp;of which a's + c's PUB: {kind} (nngcat, same window)", m, u or "-", nb,
            nu_in)
        sub_msgs += m
        sub_bytes += nb
    row("&nbsp;&nbsp;of which sync + REQ (the rest: anti-entropy)", i["msgs_in"] - sub_msgs, "-",
        i["bytes_in"] - sub_bytes, nu_in)
    print()
    kinds = ", ".join(f"{k} {c[0]} x {c[1] / c[0]:.0f} B" for k, c in sorted(w["kinds"].items()))
    print(f"a's PUB over the whole run ({w['capture_s']:.0f} s), count x mean envelope bytes: "
          f"{kinds}.  b received {nu_in / w['window_s']:.1f} updates/s and "
          f"{(i['bytes_in'] + FRAME * i['msgs_in']) / w['window_s']:.0f} B/s in the window; "
          f"(b)/(a) = {w['in_per_update'] / w['per_update']:.1f}.")
    print()
    print(f"## Catch-up of a new joiner (124M founder: {STEPS_124M} steps, batch 1 x 16 tokens, "
          f"2 threads, trained in {t_train:.0f} s incl. load)")
    print()
    print("| model | founder ledger / checkpoint updates | catch_up | measured s | "
          "(status up at s) | plan: replay_s | plan: snapshot_s | snapshot MB | "
          "auto would pick | joiner's own steps meanwhile |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for label, ledger, mode, r in rows:
        p = r["plan"]
        auto = "snapshot" if 0 <= p["snapshot_s"] < p["replay_s"] else "replay"
        print(f"| {label} | {ledger['updates']} / {ledger['checkpoint_updates']} | {mode} | "
              f"{r['t']:.2f} | {r['up']:.2f} | {p['replay_s']:.3g} | {p['snapshot_s']:.3g} | "
              f"{p['snapshot_bytes'] / 1e6:.0f} | {auto} | {r['own_steps']} |")
    print()
    print("measured: from the joiner's start to the first 0.2 s status poll at which it has "
          "applied every update the founder holds; status up: its first answer (model loaded, "
          "snapshot downloaded if any).")
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

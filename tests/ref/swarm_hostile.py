#!/usr/bin/python3
"""Hostile traffic against a training swarm node, on every socket it has.

A victim node founds a run and an honest peer joins it; both train (small
batches, max_steps far away) during the whole attack, so the victim keeps
receiving real updates.  Messages are built here with python3-protobuf and
python3-nacl (tests/ref/wireutil.py), independent of daemon/wire.c.

Sync service (REP), one `nngcat --req` round trip each: garbage and a
truncated envelope (malformed), a flipped signature bit and another run's
message (bad_signature), a Hello with a 300-byte address and a correctly
signed GetUpdates with a 33-byte origin (bad_field): each gets an Error reply
that verifies under the run id and names its drop reason, and
net.dropped.<reason> grows.  A valid Hello gets a Welcome whose run_spec
hashes to the run id, and a valid GetUpdates still gets the victim's own
verifiable batches.

PUB/SUB: an attacker identity sends the victim a signed Hello naming its own
PUB address (a pub0 listener spoken here at the nng TCP wire level, so the
test knows when the victim has subscribed and exactly what it was sent).
Then it publishes garbage (malformed), a replayed Announce seq (replay), a
batch above max_scale (bad_update), a batch at step 2^62 (absurd_step), a
valid batch (accepted: in the victim's version vector), the same batch again
(duplicate), the same steps with other q (equivocation: banned, bans/<id>.json
written, "banned": true in status, later messages counted as banned); a
fresh identity floods 3000 Announces (rate_limited); a third signs under
another run id (bad_signature).

Control socket: garbage, non-object JSON, no cmd, unknown cmd: each answers
{"error":...}; status still works.

Throughout, the victim keeps training and answering status.  At the end both
nodes stop on SIGTERM with exit 0, the victim's ledger opens (ledger_dump)
and holds only the two honest origins' updates plus exactly the attacker's
one valid batch, and `swarmctl model export` of its state succeeds.
"""
import json
import os
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import nodeutil as nu  # noqa: E402
from nodeutil import check  # noqa: E402
import wireutil as wu  # noqa: E402

NNGCAT = "/usr/bin/nngcat"
MAX_SCALE = 1.0
COUNTER_WAIT = 45  # seconds for a drop counter to move (a loaded machine: a bound, not a pace)
REQ_WAIT = 15  # seconds for the victim to answer one request
# The daemons every wait depends on (victim and honest peer, once started):
# if one dies, the wait fails at once with its last log lines.
WATCH = []


def nngcat_req(url, data, tmp, timeout=REQ_WAIT):
    """One REQ round trip with nngcat: the reply bytes, or None."""
    path = os.path.join(tmp, "req.bin")
    with open(path, "wb") as f:
        f.write(data)
    try:
        p = subprocess.run([NNGCAT, "--req", "--dial", url, "--file", path, "--raw",
                            "--recv-timeout", str(timeout), "--send-timeout", str(timeout)],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        return None
    return p.stdout if p.returncode == 0 and p.stdout else None


def dropped(state_dir):
    st = nu.status(state_dir)
    return st["net"]["dropped"] if st else None


def wait_counter(state_dir, reason, before, at_least=1):
    """Polls status until net.dropped.reason >= before + at_least: the value, or None."""
    def grown():
        d = dropped(state_dir)
        return d[reason] if d and d[reason] >= before + at_least else None
    return nu.wait_until(grown, COUNTER_WAIT, every=0.2, alive=WATCH)


class Victim:
    def __init__(self, node):
        self.node = node
        self.dir = node.state_dir
        self.last_step = -1

    def still_training(self, what):
        """Status answers and the step moved since the last call."""
        def moved():
            st = nu.status(self.dir)
            return st if st and st["node"]["step"] > self.last_step else None
        st = nu.wait_until(moved, 60, every=0.2, alive=WATCH)
        ok = check(st is not None and st["node"]["state"] in ("training", "syncing"),
                   f"after {what}: victim answers status and trains (step "
                   f"{st['node']['step'] if st else '?'} > {self.last_step})",
                   self.node.log_text(15))
        if st:
            self.last_step = st["node"]["step"]
        return ok


def expect_drop(v, reason, send, what, at_least=1):
    """Runs send() and checks that net.dropped.reason grows by at_least."""
    before = dropped(v.dir)
    if before is None:
        return check(False, f"{what}: status before", v.node.log_text(10))
    send()
    got = wait_counter(v.dir, reason, before[reason], at_least)
    return check(got is not None, f"{what}: net.dropped.{reason} {before[reason]} -> {got}",
                 json.dumps(dropped(v.dir)))


# ---------------------------------------------------------------- sync service

def attack_sync(v, url, run_id, runspec, self_id, tmp):
    pb = wu.proto()
    k = wu.key("sync attacker")
    good = wu.seal(k, run_id, "get_updates",
                   pb.GetUpdates(origin=self_id, first_step=0, max_steps=64))

    def error_reply(reply, reason, what, ctx="run"):
        """The reply is an Error from the victim naming reason, in the context
        the request claimed (join for a Hello: a joiner has no run id yet)."""
        try:
            o = wu.open_envelope(reply, run_id)
        except Exception as e:  # noqa: BLE001
            return check(False, f"{what}: the reply verifies", repr(e))
        return check(o.kind == "error" and o.sender == self_id and o.ctx == ctx and
                     o.msg.code == pb.ERROR_BAD_REQUEST and o.msg.message == reason,
                     f"{what}: Error BAD_REQUEST \"{o.msg.message if o.kind == 'error' else o.kind}\""
                     f" signed by the victim in the {ctx} context", (o.kind, o.ctx))

    env = pb.Envelope.FromString(good)
    bad_sig = bytearray(env.signature)
    bad_sig[10] ^= 0x04
    flipped = pb.Envelope(sender=env.sender, body=env.body, signature=bytes(bad_sig)).SerializeToString()
    other_run = wu.seal(k, os.urandom(32), "get_updates",
                        pb.GetUpdates(origin=self_id, first_step=0, max_steps=64))
    long_addr = wu.seal(k, None, "hello", pb.Hello(pub_addr="tcp://127.0.0.1:1" + "0" * 283,
                                                    sync_addr="tcp://127.0.0.1:2"), join=True)
    # a GetUpdates with a 33-byte origin, correctly signed
    origin33 = wu.seal(k, run_id, "get_updates",
                       pb.GetUpdates(origin=self_id + b"\x00", first_step=0, max_steps=1))
    check(len(pb.Body.FromString(pb.Envelope.FromString(long_addr).body).hello.pub_addr) == 300,
          "the long Hello carries a 300-byte pub_addr")
    cases = [
        ("malformed", b"\xff\x00garbage\x07" * 9, "sync: 99 garbage bytes"),
        ("malformed", good[:len(good) - 10], f"sync: GetUpdates cut to {len(good) - 10} of {len(good)} bytes"),
        ("bad_signature", flipped, "sync: GetUpdates with one signature bit flipped"),
        ("bad_signature", other_run, "sync: GetUpdates signed under another run id"),
        ("bad_field", long_addr, "sync: Hello with a 300-byte pub_addr"),
        ("bad_field", origin33, "sync: GetUpdates with a 33-byte origin"),
    ]
    for reason, data, what in cases:
        replies = []
        if expect_drop(v, reason, lambda: replies.append(nngcat_req(url, data, tmp)), what):
            if check(replies[0] is not None, f"{what}: an answer within {REQ_WAIT} s"):
                error_reply(replies[0], reason, what, "join" if "Hello" in what else "run")
    v.still_training("the sync attacks")

    # a valid Hello (no addresses: a joiner's startup Hello) gets a Welcome
    hello = wu.seal(wu.key(), None, "hello", pb.Hello(), join=True)
    reply = nngcat_req(url, hello, tmp)
    try:
        o = wu.open_envelope(reply, run_id) if reply else None
    except Exception as e:  # noqa: BLE001
        o = None
        check(False, "sync: the Welcome verifies", repr(e))
    if check(o is not None and o.kind == "welcome" and o.ctx == "join" and o.sender == self_id,
             "sync: a valid Hello gets a join-context Welcome signed by the victim"):
        w = o.msg
        check(wu.run_id_of(w.run_spec) == run_id and w.run_spec == runspec,
              f"sync: Welcome.run_spec ({len(w.run_spec)} bytes) is runspec.json and hashes to "
              f"the run id {run_id.hex()[:16]}")
        check(any(m.id == self_id for m in w.members) and
              any(e.origin == self_id and e.count > 0 for e in w.vv),
              f"sync: Welcome lists the victim among {len(w.members)} members and "
              f"{len(w.vv)} vv origins")

    # and it still serves a valid GetUpdates
    reply = nngcat_req(url, good, tmp)
    try:
        o = wu.open_envelope(reply, run_id) if reply else None
        inner = [wu.open_envelope(b, run_id) for b in o.msg.batches] if o and o.kind == "updates" else []
    except Exception as e:  # noqa: BLE001
        o, inner = None, []
        check(False, "sync: the Updates reply and its batches verify", repr(e))
    steps = [s for b in inner for s in range(b.msg.first_step, b.msg.first_step + len(b.msg.q))]
    check(o is not None and o.kind == "updates" and inner and
          all(b.kind == "batch" and b.sender == self_id for b in inner) and steps[0] == 0 and
          steps == list(range(len(steps))),
          f"sync: a valid GetUpdates afterwards gets {len(inner)} of the victim's batches, "
          f"steps 0..{steps[-1] if steps else '?'} consecutive, each verified")


# ---------------------------------------------------------------- PUB/SUB

def batch(k, run_id, first, scale, q):
    pb = wu.proto()
    return wu.seal(k, run_id, "batch", pb.UpdateBatch(first_step=first, scale=scale, q=bytes(q)))


def announce(k, run_id, seq, pub="", sync=""):
    """An Announce saying "done": a "training" peer that holds back nothing
    would stall the victim's pacing for lag_timeout_ms (by design), slowing
    the test without testing anything here."""
    pb = wu.proto()
    return wu.seal(k, run_id, "announce",
                   pb.Announce(seq=seq, pub_addr=pub, sync_addr=sync,
                               state=pb.NODE_STATE_DONE, step=0, loss=float("nan")))


def attack_pubsub(v, sync_url, run_id, tmp):
    """Returns (attacker id, its valid batch's q, scale) for the ledger check."""
    pb = wu.proto()
    atk = wu.key("pub attacker")
    atk_id = wu.pk(atk)
    hexid = atk_id.hex()
    pub = wu.SpPub()
    # a port that refuses every connection while the attack lasts
    dead_sock, dead_port = nu.dead_port()
    dead_sync = f"tcp://127.0.0.1:{dead_port}"
    try:
        hello = wu.seal(atk, None, "hello", pb.Hello(pub_addr=pub.url, sync_addr=dead_sync),
                        join=True)
        reply = nngcat_req(sync_url, hello, tmp)
        check(reply is not None and wu.open_envelope(reply, run_id).kind == "welcome",
              "pub: the attacker's Hello (its own addresses) is welcomed")
        if not check(pub.accept(COUNTER_WAIT),
                     f"pub: the victim subscribes to the attacker's {pub.url}"):
            return atk_id, None, None

        expect_drop(v, "malformed", lambda: pub.send(b"\x0a\xff\xff\xff" + b"\x00" * 60),
                    "pub: garbage")
        before = dropped(v.dir)
        pub.send(announce(atk, run_id, 1000, pub.url, dead_sync))
        seen = nu.wait_until(lambda: next((p for p in (nu.status(v.dir) or {}).get("peers", [])
                                           if p["id"] == hexid and p["state"] == "alive"), None),
                             COUNTER_WAIT, every=0.2, alive=WATCH)
        check(seen is not None and sum(dropped(v.dir).values()) == sum(before.values()),
              "pub: the attacker's Announce seq 1000 is accepted (peer alive, nothing dropped)")
        expect_drop(v, "replay", lambda: pub.send(announce(atk, run_id, 999, pub.url, dead_sync)),
                    "pub: Announce seq 999 after 1000")
        expect_drop(v, "replay", lambda: pub.send(announce(atk, run_id, 1000, pub.url, dead_sync)),
                    "pub: Announce seq 1000 again")
        # A version vector is a claim: one nobody can serve (2^40 updates of an
        # unknown origin) must neither stall the victim nor make it "syncing".
        liar = wu.seal(atk, run_id, "announce",
                       pb.Announce(seq=1001, pub_addr=pub.url, sync_addr=dead_sync,
                                   state=pb.NODE_STATE_DONE, step=0, loss=float("nan"),
                                   vv=[pb.VersionEntry(origin=os.urandom(32), count=1 << 40)]))
        pub.send(liar)
        # The victim goes on training: its step grows (by 3, however long that
        # takes here) and it says "training" (taken in, it would say "syncing").
        st_a = nu.status(v.dir)
        states = []

        def grew():
            st = nu.status(v.dir)
            if st:
                states.append(st["node"]["state"])
            return st if st and st_a and st["node"]["step"] >= st_a["node"]["step"] + 3 else None
        st_b = nu.wait_until(grew, COUNTER_WAIT, every=0.2, alive=WATCH)
        check(st_a and st_b and st_b["node"]["state"] == "training",
              "pub: an Announce claiming 2^40 updates nobody serves leaves the victim training "
              f"(step {st_a and st_a['node']['step']} -> {st_b and st_b['node']['step']}; states "
              f"seen {sorted(set(states))})",
              json.dumps([st_a and st_a["node"], st_b and st_b["node"]]))
        q = [((i * 37) % 255) - 127 for i in range(64)]
        q_bytes = [x & 0xff for x in q]
        expect_drop(v, "bad_update", lambda: pub.send(batch(atk, run_id, 0, 2 * MAX_SCALE, q_bytes)),
                    f"pub: batch at scale {2 * MAX_SCALE} > max_scale {MAX_SCALE}")
        expect_drop(v, "absurd_step", lambda: pub.send(batch(atk, run_id, 1 << 62, 0.5, q_bytes)),
                    "pub: batch at first_step 2^62")

        st0 = nu.status(v.dir)
        good = batch(atk, run_id, 0, 0.5, q_bytes)
        pub.send(good)
        held = nu.wait_until(lambda: (lambda s: s if s and s["model"]["version_vector"].get(hexid) == 64
                                      else None)(nu.status(v.dir)), COUNTER_WAIT, every=0.2,
                             alive=WATCH)
        check(held is not None and held["net"]["updates_in"] >= st0["net"]["updates_in"] + 64,
              "pub: the attacker's valid 64-step batch is accepted (64 in the victim's version vector)",
              json.dumps(held["model"]["version_vector"] if held else None))
        expect_drop(v, "duplicate", lambda: pub.send(good), "pub: the same batch again")

        q2 = list(q_bytes)
        q2[5] = (q2[5] + 1) & 0xff if q2[5] != 0x7f else 0
        evil = batch(atk, run_id, 0, 0.5, q2)
        expect_drop(v, "equivocation", lambda: pub.send(evil),
                    "pub: the same steps with another q at step 5")
        ban = os.path.join(v.dir, "bans", hexid + ".json")
        proof = nu.wait_until(lambda: os.path.exists(ban), COUNTER_WAIT, alive=WATCH)
        try:
            pj = json.load(open(ban)) if proof else {}
        except ValueError:
            pj = {}
        check(pj.get("origin") == hexid and pj.get("step") == 5,
              f"pub: bans/{hexid[:12]}...json names the attacker and step 5", json.dumps(pj)[:300])
        # the proof stands alone: both envelopes verify under the attacker's key
        try:
            envs = [wu.open_envelope(bytes.fromhex(pj[k]), run_id)
                    for k in ("held_envelope", "got_envelope")]
        except Exception as e:  # noqa: BLE001
            envs = []
            check(False, "pub: the proof's two envelopes verify", repr(e))
        if envs:
            check([bytes.fromhex(pj["held_envelope"]), bytes.fromhex(pj["got_envelope"])] ==
                  [good, evil] and all(e.sender == atk_id and e.kind == "batch" for e in envs) and
                  envs[0].msg.q[5] != envs[1].msg.q[5],
                  "pub: the proof holds both signed envelopes verbatim; they verify under the "
                  "attacker's key and differ at step 5")
        peer = next((p for p in nu.status(v.dir)["peers"] if p["id"] == hexid), None)
        check(peer is not None and peer["banned"] is True, "pub: status shows the attacker banned",
              json.dumps(peer))
        expect_drop(v, "banned", lambda: pub.send(announce(atk, run_id, 5000, pub.url, dead_sync)),
                    "pub: the banned attacker's next Announce")
        expect_drop(v, "banned", lambda: pub.send(batch(atk, run_id, 64, 0.5, q_bytes)),
                    "pub: the banned attacker's next batch")
        v.still_training("the PUB attacks")

        flood = wu.key("flooder")
        msgs = [announce(flood, run_id, 1 + i) for i in range(3000)]
        t = time.monotonic()

        def send_flood():
            for m in msgs:
                pub.send(m)
        expect_drop(v, "rate_limited", send_flood,
                    "pub: a fresh identity floods 3000 Announces", at_least=500)
        print(f"      (flood written in {time.monotonic() - t:.2f} s)")
        expect_drop(v, "bad_signature",
                    lambda: pub.send(announce(wu.key("other run"), os.urandom(32), 1)),
                    "pub: an Announce signed under another run id")
        v.still_training("the flood")
        return atk_id, q, 0.5
    finally:
        pub.close()
        dead_sock.close()


# ---------------------------------------------------------------- control socket

def attack_control(v, tmp):
    url = "ipc://" + os.path.join(v.dir, "control.sock")
    for data, what in [(b"garbage{", "garbage"), (b"[1,2,3]", "a JSON array"),
                       (b'"status"', "a JSON string"), (b'{"cmd":5}', "cmd not a string"),
                       (b'{"cmd":"reboot"}', "an unknown command"), (b"\xff\xfe\x00", "binary")]:
        reply = nngcat_req(url, data, tmp)
        try:
            o = json.loads(reply) if reply else None
        except ValueError:
            o = None
        check(isinstance(o, dict) and isinstance(o.get("error"), str) and len(o) == 1,
              f"control: {what} -> {reply.decode('utf-8', 'replace') if reply else None}")
    st = nu.status(v.dir)
    check(st is not None and st["node"]["step"] > 0, "control: status still answers")


def main():
    t0 = time.time()
    if not nu.require_binaries(nu.LEDGER_DUMP) or not os.access(NNGCAT, os.X_OK):
        return 1
    root = nu.tmpdir("swarm-hostile-")
    tmp = os.path.join(root, "msg")
    os.mkdir(tmp)
    shards = nu.shard(os.path.join(nu.DATA, "topic-train.jsonl"), 2, root)
    small = dict(max_steps=1000000, batch_size=1, seq_len=64)
    vcfg = nu.swarm_config(os.path.join(root, "v", "state"), data=shards[0], max_scale=MAX_SCALE,
                           seed=1, **small)
    victim = nu.Node(os.path.join(root, "v"), vcfg)
    victim.start(until_done=False)
    WATCH.append(victim)
    if not check(nu.wait_until(lambda: nu.status(victim.state_dir), 120, alive=WATCH) is not None,
                 "victim answers status", victim.log_text(30)):
        return nu.finish("swarm_hostile", t0)
    hcfg = nu.swarm_config(os.path.join(root, "h", "state"), bootstrap=nu.sync_addr(vcfg),
                           data=shards[1], seed=2, batch_size=1, seq_len=64)
    for k in ("max_steps", "lr", "eps"):
        hcfg["train"].pop(k)
    honest = nu.Node(os.path.join(root, "h"), hcfg)
    honest.start(until_done=False)
    WATCH.append(honest)

    st = nu.status(victim.state_dir)
    self_id = bytes.fromhex(st["node"]["id"])
    sync_url = st["node"]["sync_addr"]
    runspec, run_id = wu.read_runspec(victim.state_dir)
    check(run_id.hex() == st["node"]["run_id"],
          f"run id = BLAKE2b-256(runspec.json) = status run_id {run_id.hex()[:16]}")

    def honest_in():
        sh = nu.status(honest.state_dir)
        sv = nu.status(victim.state_dir)
        if not sh or not sv:
            return None
        n = sv["model"]["version_vector"].get(sh["node"]["id"], 0)
        return (sh["node"]["id"], n) if n > 0 else None
    got = nu.wait_until(honest_in, 120, every=0.3, alive=WATCH)
    if not check(got is not None, "the honest peer joins and the victim holds its updates",
                 honest.log_text(20)):
        return nu.finish("swarm_hostile", t0)
    honest_hex, honest_before = got
    v = Victim(victim)
    v.still_training("the start")

    attack_sync(v, sync_url, run_id, runspec, self_id, tmp)
    atk_id, atk_q, atk_scale = attack_pubsub(v, sync_url, run_id, tmp)
    attack_control(v, tmp)

    st = nu.status(victim.state_dir)
    honest_after = st["model"]["version_vector"].get(honest_hex, 0) if st else 0
    check(honest_after > honest_before,
          f"the victim kept receiving the honest peer's updates ({honest_before} -> {honest_after})")
    v.still_training("every attack")
    print("      victim net.dropped: " + json.dumps({k: x for k, x in st["net"]["dropped"].items() if x}))

    # graceful stop, then the ledger
    WATCH.clear()
    for n in (victim, honest):
        n.proc.terminate()
    for n in (victim, honest):
        check(n.wait(60) == 0, f"{os.path.basename(n.root)} stops with exit 0 on SIGTERM",
              n.log_text(10))
    dump = nu.ledger_dump(victim.state_dir)
    if dump is not None:
        ups = [r for r in dump if "summary" not in r]
        summ = next((r for r in dump if "summary" in r), {})
        by = {}
        for r in ups:
            by.setdefault(r["origin"], []).append(r)
        allowed = {self_id.hex(), honest_hex, atk_id.hex()}
        check(set(by) <= allowed and self_id.hex() in by and honest_hex in by,
              f"victim ledger: {len(ups)} updates from {len(by)} origins, all honest or the "
              f"attacker's ({', '.join(f'{o[:8]}:{len(r)}' for o, r in by.items())})")
        check(summ.get("truncated_bytes", 1) == 0, "victim ledger: no torn tail")
        mine = by.get(atk_id.hex(), [])
        if atk_q is not None:
            want = [(s, atk_q[s], struct.pack(">f", atk_scale).hex()) for s in range(64)]
            check([(r["step"], r["q"], r["scale"]) for r in mine] == want,
                  "victim ledger: the attacker's updates are exactly its one valid batch "
                  "(steps 0..63, q and scale as sent; the equivocating q absent)",
                  [(r["step"], r["q"], r["scale"]) for r in mine][:8])
        own = [r["step"] for r in by.get(self_id.hex(), [])]
        check(own == list(range(len(own))), f"victim ledger: its own steps are 0..{len(own) - 1} in order")
        for o, rs in by.items():
            steps = [r["step"] for r in rs]
            check(len(set(steps)) == len(steps), f"victim ledger: origin {o[:8]} holds each step once")
    nu.export(victim.state_dir, os.path.join(root, "v", "export"))
    return nu.finish("swarm_hostile", t0)


if __name__ == "__main__":
    sys.exit(nu.run_test(main))

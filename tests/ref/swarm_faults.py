"""Three swarmd nodes on loopback under faults: a crash, message loss, a leave.

1. Kill: three nodes train on their own shards; one joiner is SIGKILLed mid-run.
   The two others keep training (their steps grow after the kill), see it
   suspect and then dead, dead no earlier than about dead_after heartbeats of
   silence and no later than twice that after the kill.  Restarted with the
   same config and state dir, it resumes at its own next step (the others never
   hold more of its updates than its ledger does, so no step is reused), catches
   up, and all three end with one version vector holding max_steps of every
   origin, equal digests, byte-identical F32 exports, no duplicate (origin,
   step) in any ledger and no ban.
2. Loss: three nodes each drop 30% of the published messages they receive
   (test_drop_permille); they still train to max_steps and converge.  Drops
   happened on every node, and each received every update of the other
   origins exactly once (net.updates_in), anti-entropy fetching what the drops
   lost.
3. Graceful leave: SIGTERM one node mid-run: it exits 0; the others see it
   "left" within 1 s of its publishing Leave, never back to alive, suspect or
   dead, still "left" after dead_after heartbeats; they hold every update it
   made (its own count in their version vectors) and finish, converged,
   without it.  Restarted (same config and state dir), it catches up and the
   three end identical.

Timings (kill to suspect/dead, SIGTERM to left) are printed.  They, and the
order of the states, come from the observers' own log lines ("peer state
changed", stamped by the daemon when it happens), not from polling them, so a
slow machine or a slow `swarmctl status` moves neither.  Every wait is bounded
(deadlines for a loaded machine) and watches the daemons that must be running,
so one that dies fails the test at once with its last log lines; every daemon
is killed at exit (nodeutil).
"""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import nodeutil as nu  # noqa: E402
from nodeutil import check  # noqa: E402

HEARTBEAT_MS = 200
SUSPECT_AFTER = 3
DEAD_AFTER = 10
BATCH_SIZE = 4
KILL_STEPS = 120  # about 12 s of training for three nodes on a loaded 2-core machine
LOSS_STEPS = 80
LEAVE_STEPS = 60
LEFT_WITHIN = 1.0  # seconds from c's "left the swarm" to a peer's "left", both as logged


def swarm(root, tag, max_steps, **node_keys):
    """A founder and two joiners on their own shards of the topic data,
    started and answering status; [node] keys added from node_keys."""
    d = os.path.join(root, tag)
    os.makedirs(d)
    shards = nu.shard(os.path.join(nu.DATA, "topic-train.jsonl"), 3, d)
    nodes = []
    boot = ""
    for i, name in enumerate("abc"):
        sd = os.path.join(d, name, "state")
        if i == 0:
            cfg = nu.swarm_config(sd, data=shards[0], max_steps=max_steps, batch_size=BATCH_SIZE,
                                  max_scale=1.0, seed=1)
        else:
            # joiners set only node-local keys: they adopt the run spec
            cfg = nu.swarm_config(sd, bootstrap=boot, data=shards[i], batch_size=BATCH_SIZE,
                                  seed=i + 1)
            for k in ("max_steps", "lr", "eps"):
                cfg["train"].pop(k)
        cfg["node"].update({"heartbeat_ms": HEARTBEAT_MS, "suspect_after": SUSPECT_AFTER,
                            "dead_after": DEAD_AFTER})
        cfg["node"].update(node_keys)
        n = nu.Node(os.path.join(d, name), cfg)
        n.name = f"{tag}/{name}"
        n.start(until_done=False)
        nodes.append(n)
        if i == 0:
            if not nu.wait_until(lambda: nu.status(n.state_dir) is not None, 120, alive=(n,)):
                check(False, f"{tag}: founder answers swarmctl status", n.log_text(30))
                return None
            boot = nu.sync_addr(cfg)  # after the wait: a lost port race rebinds it
    return nodes


def statuses(nodes):
    return [nu.status(n.state_dir) for n in nodes]


def all_training_together(nodes, min_step):
    """Statuses when every node trains at min_step or beyond and sees the
    others alive, else None."""
    sts = statuses(nodes)
    if any(s is None for s in sts):
        return None
    for s in sts:
        if s["node"]["state"] != "training" or s["node"]["step"] < min_step:
            return None
        if len([p for p in s["peers"] if p["state"] == "alive"]) != len(nodes) - 1:
            return None
    return sts


def converged_done(nodes, timeout=240):
    """The statuses once every node is done and they have converged (the
    nodes must keep running meanwhile), or None after timeout seconds."""
    dirs = [n.state_dir for n in nodes]

    def pred():
        sts = nu.converged(dirs)
        return sts if sts and all(s["node"]["state"] == "done" for s in sts) else None
    return nu.wait_until(pred, timeout, every=0.5, alive=nodes)


def describe(nodes):
    """One line per node for a failure: state, step, ledger size, version
    vector and peers (ids by their first 8 hex digits)."""
    lines = []
    for n in nodes:
        s = nu.status(n.state_dir)
        if s is None:
            lines.append(f"{n.name}: no status")
            continue
        vv = {o[:8]: c for o, c in s["model"]["version_vector"].items()}
        peers = [(p["id"][:8], p["state"], p["node_state"]) for p in s["peers"]]
        lines.append(f"{n.name} {s['node']['id'][:8]}: {s['node']['state']} step "
                     f"{s['node']['step']} ledger {s['ledger']['updates']} vv {vv} peers {peers} "
                     f"dropped {({k: v for k, v in s['net']['dropped'].items() if v})}")
    return "\n".join(lines)


def peer(st, pid):
    return next((p for p in st["peers"] if p["id"] == pid), None)


def log_wall(line):
    """Wall-clock seconds (UTC epoch) of a log line's ts=YYYY-MM-DDTHH:MM:SS.mmmZ."""
    import calendar
    ts = line.split("ts=", 1)[1].split(" ", 1)[0].rstrip("Z")
    day, t = ts.split("T")
    whole, _, frac = t.partition(".")
    base = calendar.timegm(time.strptime(f"{day}T{whole}", "%Y-%m-%dT%H:%M:%S"))
    return base + float("0." + frac) if frac else base


def changes(node, pid, since):
    """[(wall-clock seconds, from, to)]: the "peer state changed" lines node
    logged about peer pid at or after since (time.time(); log stamps are
    truncated to the millisecond)."""
    out = []
    for line in node.log_text().splitlines():
        if 'msg="peer state changed"' not in line or f" peer={pid[:12]} " not in line:
            continue
        t = log_wall(line)
        if t < since - 0.001:
            continue
        kv = dict(x.split("=", 1) for x in line.split() if "=" in x)
        out.append((t, kv.get("from"), kv.get("to")))
    return out


def until_first(ch, state):
    """The changes up to and including the first one into state."""
    k = next((k for k, x in enumerate(ch) if x[2] == state), None)
    return ch if k is None else ch[:k + 1]


def states_of(ch):
    """The states the changes pass through, the one before the first included."""
    return [ch[0][1]] + [x[2] for x in ch] if ch else []


def all_logged(observers, pid, since, state):
    """Each observer's changes about pid since `since` once every one has
    logged a change into state, else None."""
    chs = [changes(n, pid, since) for n in observers]
    return chs if all(any(x[2] == state for x in ch) for ch in chs) else None


def stop_all(nodes, tag):
    """SIGTERM every running node; each must exit 0."""
    live = [n for n in nodes if n.proc and n.proc.poll() is None]
    for n in live:
        n.proc.terminate()
    codes = [n.wait(30) for n in live]
    check(all(c == 0 for c in codes), f"{tag}: {len(live)} nodes stop with exit 0 on SIGTERM",
          "\n\n".join(f"{n.name}: exit {c}\n{n.log_text(8)}" for n, c in zip(live, codes)))


def same_exports(nodes, tag):
    hashes = []
    for n in nodes:
        out = nu.export(n.state_dir, os.path.join(n.root, "export"))
        hashes.append(nu.model_bytes(out) if out else None)
    check(len(set(hashes)) == 1 and hashes[0] is not None,
          f"{tag}: the {len(nodes)} F32 exports are byte-identical", hashes)


def check_ledgers(nodes, tag, want):
    """Every ledger holds want[origin] updates of each origin, steps 0..n-1
    once each (no duplicate (origin, step))."""
    for n in nodes:
        dump = nu.ledger_dump(n.state_dir)
        if dump is None:
            continue
        ups = [r for r in dump if "summary" not in r]
        seen = {}
        dups = 0
        for r in ups:
            steps = seen.setdefault(r["origin"], set())
            dups += r["step"] in steps
            steps.add(r["step"])
        got = {o: sorted(s) for o, s in seen.items()}
        ok = dups == 0 and set(got) == set(want) and all(
            got[o] == list(range(want[o])) for o in want)
        check(ok, f"{tag}: {n.name} ledger: {len(ups)} updates, steps 0..n-1 of each origin "
              f"once, no duplicate (origin, step)",
              f"duplicates {dups}; counts {({o[:12]: len(s) for o, s in got.items()})}, "
              f"want {({o[:12]: c for o, c in want.items()})}")


def no_bans(sts, tag):
    bad = [(s["node"]["id"][:12], p["id"][:12]) for s in sts for p in s["peers"] if p["banned"]]
    eq = [s["net"]["dropped"].get("equivocation", 0) for s in sts]
    check(not bad and not any(eq), f"{tag}: no peer banned, no equivocation dropped",
          (bad, eq))


def own_steps(state_dir, origin):
    dump = nu.ledger_dump(state_dir)
    if dump is None:
        return None
    return sorted(r["step"] for r in dump if "summary" not in r and r["origin"] == origin)


# ------------------------------------------------------------ 1. kill


def scenario_kill(root):
    tag = "kill"
    nodes = swarm(root, tag, KILL_STEPS)
    if not nodes:
        return
    a, b, c = nodes
    sts = nu.wait_until(lambda: all_training_together(nodes, 25), 180, every=0.2, alive=nodes)
    if not check(sts is not None, f"{tag}: three nodes train together (step >= 25, peers alive)",
                 "\n\n".join(n.log_text(10) for n in nodes)):
        return
    bid = sts[1]["node"]["id"]
    t_kill0 = time.time()  # wall clock, as in the daemons' log stamps
    b.kill9()
    t_kill1 = time.time()  # the kill landed between the two
    t_kill = time.monotonic()
    sts_kill = statuses([a, c])
    b_steps = own_steps(b.state_dir, bid)
    b_count = len(b_steps) if b_steps is not None else -1
    check(b_steps == list(range(b_count)),
          f"{tag}: killed at own step {b_count}: its ledger holds its steps 0..{b_count - 1}",
          b_steps)
    print(f"      killed b at step {b_count}; a at {sts_kill[0] and sts_kill[0]['node']['step']}, "
          f"c at {sts_kill[1] and sts_kill[1]['node']['step']}")

    # a and c: suspect, then dead, as each logged it
    dead_ms = DEAD_AFTER * HEARTBEAT_MS
    chs = nu.wait_until(lambda: all_logged((a, c), bid, t_kill0, "dead"), 60, every=0.2,
                        alive=(a, c)) or [changes(n, bid, t_kill0) for n in (a, c)]
    # b alive at the kill was silent for less than suspect_after heartbeats (and
    # a tick): dead comes no earlier than the rest of dead_after after the kill
    earliest = (dead_ms - (SUSPECT_AFTER + 1) * HEARTBEAT_MS) / 1000
    for ch, name in zip(chs, "ac"):
        ch = until_first(ch, "dead")
        order = states_of(ch)
        t_sus = next((t - t_kill0 for t, _, to in ch if to == "suspect"), None)
        t_dead = next((t - t_kill0 for t, _, to in ch if to == "dead"), None)
        ts = f"{t_sus:.2f} s" if t_sus is not None else "never"
        td = f"{t_dead:.2f} s" if t_dead is not None else "never"
        print(f"      {name} sees b: {' -> '.join(order)}; suspect after {ts}, dead after {td} "
              f"(logged)")
        check(t_dead is not None and t_dead - (t_kill1 - t_kill0) <= 2 * dead_ms / 1000,
              f"{tag}: {name} marks b dead within 2 x dead_after x heartbeat_ms "
              f"({2 * dead_ms / 1000:.1f} s) of the kill ({td})", order)
        check(t_dead is None or t_dead >= earliest,
              f"{tag}: {name} does not mark b dead before ~dead_after heartbeats of silence "
              f"({td} >= {earliest:.1f} s)", td)
        check(order == ["alive", "suspect", "dead"],
              f"{tag}: {name} sees b alive -> suspect -> dead", order)
    last = nu.wait_until(lambda: (lambda s: s if all(x and (peer(x, bid) or {}).get("state") == "dead"
                                                     for x in s) else None)(statuses([a, c])),
                         30, every=0.2, alive=(a, c)) or [None, None]
    for st, name in zip(last, "ac"):
        p = peer(st, bid) if st else None
        seen = p and p["last_seen_ms"]
        check(seen is not None and seen >= dead_ms,
              f"{tag}: {name}'s status shows b dead, last seen {seen} ms ago (>= {dead_ms})",
              describe([a, c]))

    # the survivors keep training: 10 more steps each (or done) after the kill
    def grown():
        sts = statuses([a, c])
        ok = all(x and k and (x["node"]["step"] >= k["node"]["step"] + 10 or
                              x["node"]["state"] == "done") for x, k in zip(sts, sts_kill))
        return sts if ok else None
    sts = nu.wait_until(grown, 120, every=0.2, alive=(a, c))
    check(sts is not None, f"{tag}: a and c keep training after the kill: steps "
          f"{[k and k['node']['step'] for k in sts_kill]} -> "
          f"{sts and [x['node']['step'] for x in sts]} {time.monotonic() - t_kill:.1f} s after it",
          [a.log_text(5), c.log_text(5)])
    sts = statuses([a, c])
    held = [s["model"]["version_vector"].get(bid, 0) if s else None for s in sts]
    check(all(h is not None and h <= b_count for h in held),
          f"{tag}: a and c hold {held} of b's updates, no more than its ledger's {b_count}")

    # restart b: same config, same state dir
    b.log_offset = os.path.getsize(b.log)
    b.start(until_done=False)
    t_restart = time.monotonic()
    back = nu.wait_until(lambda: (lambda s: s if all(x and (peer(x, bid) or {}).get("state") == "alive"
                                                     for x in s) else None)(statuses([a, c])),
                         120, every=0.2, alive=nodes)
    check(back is not None, f"{tag}: a and c see the restarted b alive again "
          f"({time.monotonic() - t_restart:.1f} s after the restart)", b.log_text(20))
    sts = converged_done(nodes)
    t_conv = time.monotonic() - t_restart
    if not check(sts is not None, f"{tag}: all three reach max_steps and one version vector "
                 f"({t_conv:.1f} s after the restart)", describe(nodes)):
        return
    started = [line for line in b.log_text().splitlines() if 'msg="swarmd started"' in line]
    kv = dict(x.split("=", 1) for x in started[-1].split() if "=" in x) if started else {}
    check(kv.get("step") == str(b_count),
          f"{tag}: b's restart resumes at its own step {kv.get('step')} == {b_count} "
          f"(its ledger at the kill)", started[-1:] if started else b.log_text(20))
    vv = sts[0]["model"]["version_vector"]
    ids = [s["node"]["id"] for s in sts]
    check(set(vv) == set(ids) and all(vv[o] == KILL_STEPS for o in ids),
          f"{tag}: the version vector holds {KILL_STEPS} updates of each of the 3 origins "
          f"(b's own: {vv.get(bid)})", vv)
    digests = {s["model"]["digest"] for s in sts}
    check(len(digests) == 1 and None not in digests, f"{tag}: the three digests agree", digests)
    no_bans(sts, tag)
    check_ledgers(nodes, tag, {o: KILL_STEPS for o in ids})
    stop_all(nodes, tag)
    same_exports(nodes, tag)


# ------------------------------------------------------------ 2. loss


def scenario_loss(root):
    tag = "loss"
    nodes = swarm(root, tag, LOSS_STEPS, test_drop_permille=300)
    if not nodes:
        return
    t0 = time.monotonic()
    sts = converged_done(nodes)
    if not check(sts is not None, f"{tag}: with 30% of published messages dropped, three nodes "
                 f"reach max_steps and one version vector ({time.monotonic() - t0:.1f} s)",
                 describe(nodes)):
        return
    vv = sts[0]["model"]["version_vector"]
    ids = [s["node"]["id"] for s in sts]
    check(set(vv) == set(ids) and all(vv[o] == LOSS_STEPS for o in ids),
          f"{tag}: the version vector holds {LOSS_STEPS} updates of each of the 3 origins", vv)
    digests = {s["model"]["digest"] for s in sts}
    check(len(digests) == 1 and None not in digests, f"{tag}: the three digests agree", digests)
    for n, s in zip(nodes, sts):
        net = s["net"]
        others = sum(c for o, c in vv.items() if o != s["node"]["id"])
        print(f"      {n.name}: injected_drops {net['injected_drops']}, msgs_in {net['msgs_in']}, "
              f"updates_in {net['updates_in']}, batches_out {net.get('batches_out')}, "
              f"requests_failed {net.get('requests_failed')}")
        check(net["injected_drops"] > 0, f"{tag}: {n.name} dropped {net['injected_drops']} "
              f"published messages (fault injection active)")
        check(net["updates_in"] == others,
              f"{tag}: {n.name} received each update of the other origins once "
              f"(updates_in {net['updates_in']} == {others})")
    # 30% of ~(LOSS_STEPS / updates per batch) batches per sender: some must have
    # been lost and fetched again by anti-entropy.
    no_bans(sts, tag)
    check_ledgers(nodes, tag, {o: LOSS_STEPS for o in ids})
    stop_all(nodes, tag)
    same_exports(nodes, tag)


# ------------------------------------------------------------ 3. leave


def scenario_leave(root):
    tag = "leave"
    nodes = swarm(root, tag, LEAVE_STEPS)
    if not nodes:
        return
    a, b, c = nodes
    sts = nu.wait_until(lambda: all_training_together(nodes, 12), 180, every=0.2, alive=nodes)
    if not check(sts is not None, f"{tag}: three nodes train together (step >= 12, peers alive)",
                 "\n\n".join(n.log_text(10) for n in nodes)):
        return
    cid = sts[2]["node"]["id"]
    t_term = time.time()  # wall clock, as in the daemons' log stamps
    c.proc.send_signal(signal.SIGTERM)
    rc = c.wait(60)
    t_exit = time.time() - t_term
    check(rc == 0, f"{tag}: c exits 0 on SIGTERM ({t_exit:.2f} s after it)", c.log_text(10))
    left_lines = [line for line in c.log_text().splitlines() if 'msg="left the swarm"' in line]
    c_steps = own_steps(c.state_dir, cid)
    c_count = len(c_steps) if c_steps is not None else -1
    check(c_steps == list(range(c_count)) and c_count >= 12,
          f"{tag}: c stopped with its own steps 0..{c_count - 1} in its ledger")
    check(bool(left_lines), f"{tag}: c logs that it left the swarm", c.log_text(10))
    # a and b mark c left, as each logged it
    nu.wait_until(lambda: all_logged((a, b), cid, t_term, "left"), 60, every=0.2, alive=(a, b))
    # still left once a silence of more than dead_after heartbeats has passed
    # (measured by a and b themselves: last_seen_ms), nothing logged about c since
    silent = (DEAD_AFTER + 2) * HEARTBEAT_MS

    def quiet():
        sts = statuses([a, b])
        ok = all(s and (peer(s, cid) or {}).get("last_seen_ms") is not None and
                 peer(s, cid)["last_seen_ms"] >= silent for s in sts)
        return sts if ok else None
    sts = nu.wait_until(quiet, 60, every=0.2, alive=(a, b)) or statuses([a, b])
    for n, name in zip((a, b), "ab"):
        ch = changes(n, cid, t_term)
        order = states_of(ch)
        tl = next((t for t, _, to in ch if to == "left"), None)
        after_leave = tl - log_wall(left_lines[-1]) if tl and left_lines else None
        print(f"      {name} sees c: {' -> '.join(order)}"
              + (f"; left {tl - t_term:.2f} s after SIGTERM, {after_leave:.2f} s after c "
                 f"published Leave (c exited {t_exit:.2f} s after SIGTERM; logged)"
                 if after_leave is not None else ""))
        check(after_leave is not None and after_leave <= LEFT_WITHIN,
              f"{tag}: {name} shows c left within {LEFT_WITHIN:.0f} s of c leaving", order)
        check(tl is not None and tl - t_term <= 15.0, f"{tag}: ... and within 15 s of the SIGTERM")
        check(order == ["alive", "left"],
              f"{tag}: {name} shows c alive -> left, never back to alive, suspect or dead, "
              f"through {DEAD_AFTER} heartbeats of silence and more", order)
    states = [(peer(s, cid) or {}).get("state") if s else None for s in sts]
    seen = [(peer(s, cid) or {}).get("last_seen_ms") if s else None for s in sts]
    check(states == ["left", "left"],
          f"{tag}: a and b still show c left after {DEAD_AFTER} heartbeats of silence "
          f"(last seen {seen} ms ago)", states)
    # c's last updates went out before its Leave; a and b may still be storing them
    sts = nu.wait_until(lambda: (lambda x: x if all(s and s["model"]["version_vector"].get(cid) ==
                                                    c_count for s in x) else None)(
        statuses([a, b])), 30, every=0.2, alive=(a, b)) or statuses([a, b])
    held = [s["model"]["version_vector"].get(cid) if s else None for s in sts]
    check(held == [c_count, c_count],
          f"{tag}: a and b hold all {c_count} of c's updates", held)
    sts = converged_done([a, b])
    if check(sts is not None, f"{tag}: a and b finish max_steps without c and converge",
             describe([a, b])):
        vv = sts[0]["model"]["version_vector"]
        ids = [s["node"]["id"] for s in sts]
        check(all(vv.get(o) == LEAVE_STEPS for o in ids) and vv.get(cid) == c_count
              and len(vv) == 3, f"{tag}: their version vector: {LEAVE_STEPS} of a and b, "
              f"{c_count} of c", vv)
        check(len({s["model"]["digest"] for s in sts}) == 1, f"{tag}: a and b digests agree")

    # c comes back (same config and state dir): it catches up and finishes
    t_back = time.monotonic()
    c.start(until_done=False)
    sts = converged_done(nodes)
    if check(sts is not None, f"{tag}: c restarted after leaving catches up; all three reach "
             f"max_steps and one version vector ({time.monotonic() - t_back:.1f} s)",
             describe(nodes)):
        vv = sts[0]["model"]["version_vector"]
        check(len(vv) == 3 and all(v == LEAVE_STEPS for v in vv.values()),
              f"{tag}: {LEAVE_STEPS} updates of each origin", vv)
        check(len({s["model"]["digest"] for s in sts}) == 1, f"{tag}: the three digests agree")
        check_ledgers(nodes, tag, {o: LEAVE_STEPS for o in vv})
        stop_all(nodes, tag)
        same_exports(nodes, tag)


def main():
    t0 = time.time()
    if not nu.require_binaries(nu.LEDGER_DUMP):
        return 1
    root = nu.tmpdir("swarm-faults-")
    only = sys.argv[1:] or ["kill", "loss", "leave"]
    for name, fn in (("kill", scenario_kill), ("loss", scenario_loss), ("leave", scenario_leave)):
        if name not in only:
            continue
        t = time.time()
        print(f"# {name}", flush=True)
        fn(root)
        nu.kill_children()
        print(f"      {name}: {time.time() - t:.1f} s", flush=True)
    return nu.finish("swarm_faults", t0)


if __name__ == "__main__":
    sys.exit(nu.run_test(main))

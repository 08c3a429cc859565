"""Every `swarmctl` control verb against live swarmd nodes on loopback.

Node A founds a run, B joins it through A's sync address, C has A's exact
[model]/[train] configuration but no bootstrap (so it founds a run with the
same run id, alone), and D differs in lr (another run).  Then:
  - status --watch --count 2 prints two snapshots;
  - pause A: status says paused, A's step stops growing while B's updates
    are still applied on A;
  - checkpoint A: the path it reports exists;
  - pause B too; once A and B agree, export A (a relative OUT_DIR, made
    absolute by swarmctl): it holds the updates the status digest covers, its
    digest is the one `swarmctl model inspect` prints, a second export is
    identical while the status digest holds, and so is `swarmctl model export`
    of A's state directory; eval A on the topic test set (a
    relative --data): the loss is finite, for the same updates, and equals
    `swarmctl model eval` of the export within 1e-6 relative; status shows
    the agreement in words;
  - resume A and B: A's step grows again;
  - join: D is refused (another run) with the daemon's error and exit 1; C
    joins A; A sees C alive and C sees A alive;
  - leave C: C exits 0 and A shows it left; then asking C fails with exit 1
    and the "no daemon" message; a usage error exits 2.
Every wait is bounded (deadlines for a loaded machine) and watches the
daemons it depends on, so one that dies fails the test at once with its last
log lines; every daemon is killed at exit (nodeutil).
"""
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import nodeutil as nu  # noqa: E402
from nodeutil import check  # noqa: E402

TRAIN = {"max_steps": 100000, "max_scale": 1.0, "batch_size": 4, "seq_len": 32, "seed": 1}
TEST_DATA = "topic-test.jsonl"  # in nu.DATA


def ctl(*args, cwd=None, timeout=120):
    """swarmctl with a working directory (relative paths are the point)."""
    import subprocess
    p = subprocess.run([os.path.abspath(nu.SWARMCTL), *args], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout, cwd=cwd)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def st(node):
    return nu.status(node.state_dir)


def peer_state(node, peer_id):
    s = st(node)
    if s is None:
        return None
    for p in s["peers"]:
        if p["id"] == peer_id:
            return p["state"]
    return None


def main():
    t0 = time.time()
    if not nu.require_binaries():
        return 1
    root = nu.tmpdir("cli-verbs-")
    shards = nu.shard(os.path.join(nu.DATA, "topic-train.jsonl"), 2, root)

    cfg_a = nu.swarm_config(os.path.join(root, "a", "state"), data=shards[0], **TRAIN)
    a = nu.Node(os.path.join(root, "a"), cfg_a)
    a.start(until_done=False)
    if not check(nu.wait_until(lambda: st(a), 120, alive=(a,)), "A answers swarmctl status",
                 a.log_text(20)):
        return nu.finish("cli_verbs", t0)
    boot = nu.sync_addr(cfg_a)

    cfg_b = nu.swarm_config(os.path.join(root, "b", "state"), bootstrap=boot, data=shards[1],
                            **dict(TRAIN, seed=2))
    for k in ("max_steps", "lr", "eps", "max_scale"):
        cfg_b["train"].pop(k, None)
    b = nu.Node(os.path.join(root, "b"), cfg_b)
    # C: A's [model] and [train] exactly, no bootstrap: the same run spec, hence run id
    cfg_c = nu.swarm_config(os.path.join(root, "c", "state"), data=shards[1], **TRAIN)
    c = nu.Node(os.path.join(root, "c"), cfg_c)
    cfg_d = nu.swarm_config(os.path.join(root, "d", "state"), data=shards[1],
                            **dict(TRAIN, lr=2e-4))
    d = nu.Node(os.path.join(root, "d"), cfg_d)
    for n in (b, c, d):
        n.start(until_done=False)
    sts = nu.wait_until(lambda: (lambda x: x if all(x) else None)([st(n) for n in (a, b, c, d)]),
                        120, alive=(a, b, c, d))
    if not check(sts is not None, "B, C and D answer swarmctl status",
                 "\n".join(n.log_text(10) for n in (b, c, d))):
        return nu.finish("cli_verbs", t0)
    sa, sb, sc, sd = sts
    ida, idb, idc = sa["node"]["id"], sb["node"]["id"], sc["node"]["id"]
    check(sc["node"]["run_id"] == sa["node"]["run_id"] and sc["peers"] == [],
          "C founds a run with A's run id, alone", (sc["node"]["run_id"], sc["peers"]))
    check(sd["node"]["run_id"] != sa["node"]["run_id"], "D's run id differs (another lr)")
    ok = nu.wait_until(lambda: peer_state(a, idb) == "alive" and peer_state(b, ida) == "alive" and
                       (st(a) or {"model": {"version_vector": {}}})["model"]["version_vector"]
                       .get(idb, 0) > 0, 120, alive=(a, b, c, d))
    if not check(ok, "A and B see each other alive, and B's updates reach A",
                 a.log_text(10) + "\n" + b.log_text(10)):
        return nu.finish("cli_verbs", t0)

    # status --watch: two snapshots separated by a blank line (stdout is not a tty)
    rc, out, err = ctl("status", "--state-dir", a.state_dir, "--watch", "--count", "2",
                       "--interval-ms", "200")
    check(rc == 0 and out.count("# Node\n") == 2 and "\n\n# Node\n" in out,
          "status --watch --count 2: two snapshots", out[-300:] + err)

    # pause A: it stops making updates, still applies B's
    rc, out, err = ctl("pause", "--state-dir", a.state_dir)
    check(rc == 0 and out == "paused: the node keeps syncing and serving; `swarmctl resume` "
          "restarts training\n", "pause A: exit 0, one line", out + err)

    # checkpoint A.  The trainer thread runs it after the step that may have
    # been in flight when the pause came, and makes no step after that: from
    # its answer on, A's step must not move (however slow the machine).
    rc, out, err = ctl("checkpoint", "--state-dir", a.state_dir, "--json")
    ck = json.loads(out) if rc == 0 else {}
    check(rc == 0 and ck.get("ok") is True and os.path.exists(ck.get("path", "")),
          f"checkpoint A: exit 0, the reported path exists ({ck.get('updates')} updates)",
          out + err)
    s1 = st(a)
    rc, out, _ = ctl("status", "--state-dir", a.state_dir)
    check(s1["node"]["state"] == "paused" and "state:paused" in out.splitlines(),
          "status of A says paused (json and human)", s1["node"]["state"])
    vb1, ap1 = s1["model"]["version_vector"].get(idb, 0), s1["net"]["updates_applied"]
    s2 = nu.wait_until(lambda: (lambda x: x if x and x["model"]["version_vector"].get(idb, 0)
                                >= vb1 + 3 else None)(st(a)), 90, alive=(a, b))
    if check(s2 is not None, "B's updates are still applied on paused A",
             (vb1, st(a)["model"]["version_vector"])):
        check(s2["node"]["step"] == s1["node"]["step"] and
              s2["train"]["updates_made"] == s1["train"]["updates_made"],
              f"A's step stays at {s1['node']['step']} while paused",
              (s1["node"]["step"], s2["node"]["step"]))
        check(s2["net"]["updates_applied"] > ap1, "A's net.updates_applied grows while paused",
              (ap1, s2["net"]["updates_applied"]))

    rc, out, err = ctl("checkpoint", "--state-dir", a.state_dir)
    check(rc == 0 and out.startswith("checkpoint of ") and ": /" in out,
          "checkpoint A (human): one line with the path", out + err)

    # pause B too, so the model stops changing; wait until A and B agree
    rc, out, err = ctl("pause", "--state-dir", b.state_dir)
    check(rc == 0, "pause B: exit 0", err)
    conv = nu.wait_until(lambda: nu.converged([a.state_dir, b.state_dir]), 120, every=0.5,
                         alive=(a, b))
    if not check(conv is not None, "paused A and B reach one version vector",
                 [st(n)["model"] for n in (a, b)]):
        return nu.finish("cli_verbs", t0)
    human = nu.wait_until(lambda: (lambda o: o if "agreement:yes, 1 of 1 peer at the same "
                                   "version vector reports the same digest" in o else None)(
        ctl("status", "--state-dir", a.state_dir)[1]), 60, alive=(a, b))
    check(human is not None, "status of A: agreement yes, in words",
          ctl("status", "--state-dir", a.state_dir)[1])

    # export A to a relative directory: swarmctl makes it absolute
    rc, out, err = ctl("export", "exp-a", "--state-dir", a.state_dir, "--json", cwd=root)
    exp_dir = os.path.join(root, "exp-a")
    ex = json.loads(out) if rc == 0 else {}
    check(rc == 0 and ex.get("out") == exp_dir and
          os.path.exists(os.path.join(exp_dir, "model.safetensors")),
          "export exp-a (relative): written at ROOT/exp-a", out + err)
    s_now = st(a)
    check(ex.get("updates") == s_now["model"]["digest_updates"] == sum(
        s_now["model"]["version_vector"].values()),
        "the export holds the updates the status digest covers", (ex, s_now["model"]))
    check(ex.get("digest") is not None and nu.model_digest(exp_dir) == ex.get("digest"),
          "swarmctl model inspect of the export prints the export's digest")
    # the status digest is sw_fixed_digest (fixed-point weights), the export's
    # sw_gpt2_digest (floats): not comparable with each other, but a second
    # export of the same state gives the same bytes while the status digest holds
    rc, out, err = ctl("export", os.path.join(root, "exp-a2"), "--state-dir", a.state_dir,
                       "--json")
    ex2 = json.loads(out) if rc == 0 else {}
    ok_same, why = nu.same_export(exp_dir, os.path.join(root, "exp-a2")) if rc == 0 else (False,
                                                                                         err)
    check(ex2.get("digest") == ex.get("digest") and ok_same and
          st(a)["model"]["digest"] == s_now["model"]["digest"],
          "a second export of the paused swarm: the same digest and files; the status digest "
          "unchanged", (ex2, why))
    # the offline rebuild from the state directory writes the same file
    off = nu.export(a.state_dir, os.path.join(root, "exp-offline"))
    if off:
        check(nu.model_bytes(off) == nu.model_bytes(exp_dir),
              "swarmctl model export of A's state directory: the same model.safetensors")
    rc, out, err = ctl("export", os.path.join(root, "exp-a16"), "--dtype", "f16", "--state-dir",
                       a.state_dir)
    check(rc == 0 and out.startswith("exported ") and "(F16)" in out and
          os.path.exists(os.path.join(root, "exp-a16", "model.safetensors")),
          "export --dtype f16 (human): one line, written", out + err)

    # eval A on a relative --data; compare with swarmctl model eval of the export
    rc, out, err = ctl("eval", "--data", TEST_DATA, "--state-dir", a.state_dir, "--json",
                       cwd=nu.DATA)
    ev = json.loads(out) if rc == 0 else {}
    loss = ev.get("loss")
    check(rc == 0 and isinstance(loss, float) and math.isfinite(loss),
          f"eval --data {TEST_DATA} (relative): exit 0, loss {loss}", out + err)
    check(ev.get("updates") == ex.get("updates"), "eval scored the exported model's updates",
          (ev.get("updates"), ex.get("updates")))
    ref = nu.evaluate(exp_dir, os.path.join(nu.DATA, TEST_DATA))
    if ref and isinstance(loss, float):
        rel = abs(loss - ref["loss"]) / abs(ref["loss"])
        check(rel <= 1e-6, f"eval loss {loss:.9f} == model eval of the export {ref['loss']:.9f} "
              f"(relative {rel:.2e})")
        check(ev.get("tokens") == ref["tokens"] and ev.get("records") == ref["records"],
              "eval and model eval score the same tokens and records")
    rc, out, err = ctl("eval", "--data", os.path.join(nu.DATA, TEST_DATA), "--state-dir",
                       a.state_dir)
    check(rc == 0 and out.startswith("loss ") and out.count("\n") == 1,
          "eval (human): one line", out + err)
    rc, out, err = ctl("eval", "--data", "/nonexistent/x.jsonl", "--state-dir", a.state_dir)
    check(rc == 1 and "the daemon answered: " in err and "/nonexistent/x.jsonl" in err,
          "eval of a missing file: exit 1 with the daemon's error naming it", err)

    # resume
    step_paused = st(a)["node"]["step"]
    rc, out, err = ctl("resume", "--state-dir", a.state_dir)
    check(rc == 0 and out == "training: the node makes updates again\n",
          "resume A: exit 0, one line", out + err)
    check(ctl("resume", "--state-dir", b.state_dir)[0] == 0, "resume B: exit 0")
    grew = nu.wait_until(lambda: (lambda x: x if x and x["node"]["step"] >= step_paused + 2
                                  else None)(st(a)), 90, alive=(a, b))
    check(grew is not None and grew["node"]["state"] == "training",
          f"A's step grows again after resume (from {step_paused})", st(a)["node"])

    # join: D (another run) is refused with the daemon's error; C joins
    rc, out, err = ctl("join", boot, "--state-dir", d.state_dir)
    print(f"      (D's refused join said: {err.strip()})")
    check(rc == 1 and err.startswith("swarmctl: ") and "the daemon answered: " in err and
          out == "", "join D -> A (another run): exit 1 with the daemon's error", out + err)
    rc, out, err = ctl("join", boot, "--state-dir", c.state_dir)
    print(f"      (C's join said: {out.strip()})")
    check(rc == 0 and out.startswith(f"joined {boot}: the swarm has "),
          "join C -> A: exit 0, one line", out + err)
    ok = nu.wait_until(lambda: peer_state(a, idc) == "alive" and peer_state(c, ida) == "alive",
                       60, alive=(a, c))
    check(ok, "A sees C alive and C sees A alive",
          ([(p["id"][:12], p["state"]) for p in st(a)["peers"]],
           [(p["id"][:12], p["state"]) for p in st(c)["peers"]]))

    # leave: C exits 0, A shows it left
    rc, out, err = ctl("leave", "--state-dir", c.state_dir)
    check(rc == 0 and out.startswith("leaving: "), "leave C: exit 0, one line", out + err)
    check(c.wait(60) == 0, "C exits 0 after leave", c.log_text(15))
    ok = nu.wait_until(lambda: peer_state(a, idc) == "left", 60, alive=(a,))
    check(ok, "A shows C as left", [(p["id"][:12], p["state"]) for p in st(a)["peers"]])

    # failures: no daemon (exit 1, the message), usage (exit 2)
    sock = os.path.join(c.state_dir, "control.sock")
    rc, out, err = ctl("pause", "--state-dir", c.state_dir)
    check(rc == 1 and err == f"swarmctl: no daemon at {sock}: is swarmd running? (see "
          "`systemctl status swarmd`, or pass --control PATH / --state-dir DIR)\n",
          "pause on a node that left: exit 1, 'no daemon at ...'", err)
    rc, out, err = ctl("export", "--state-dir", a.state_dir)
    check(rc == 2 and "missing OUT_DIR" in err, "export without OUT_DIR: exit 2", err)

    for n in (a, b, d):
        n.proc.terminate()
    for n in (a, b, d):
        check(n.wait(60) == 0, f"{os.path.basename(n.root)} stops with exit 0 on SIGTERM",
              n.log_text(10))
    return nu.finish("cli_verbs", t0)


if __name__ == "__main__":
    sys.exit(nu.run_test(main))

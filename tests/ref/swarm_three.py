"""Three swarmd nodes on loopback fine-tune one model together.

Each node trains on its own shard of the topic data.  The first founds the
swarm; the other two join through its sync address and adopt its run spec.
When every node reports the same version vector, the test checks that:
  - their model digests (computed by each node over its own weights) agree;
  - each ledger holds every origin's updates, max_steps of each;
  - their F32 exports are byte-identical.
Then a fourth node joins after the others are done and catches up by
downloading a snapshot (the founder's newest checkpoint, digest-checked, and
the origin-signed updates it holds) and replaying the rest, ending identical; and a joiner whose
configuration sets a different learning rate is refused with exit code 2
and a message naming the key, and so is one with another base model.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import nodeutil as nu  # noqa: E402
from nodeutil import check  # noqa: E402

MAX_STEPS = 40


def main():
    t0 = time.time()
    if not nu.require_binaries():
        return 1
    root = nu.tmpdir("swarm-three-")
    shards = nu.shard(os.path.join(nu.DATA, "topic-train.jsonl"), 3, root)

    nodes = []
    founder_cfg = nu.swarm_config(os.path.join(root, "a", "state"), data=shards[0],
                                  max_steps=MAX_STEPS, max_scale=1.0, seed=1)
    founder = nu.Node(os.path.join(root, "a"), founder_cfg)
    founder.start(until_done=False)
    nodes.append(founder)
    ok = nu.wait_until(lambda: nu.status(founder.state_dir) is not None, 120, alive=nodes)
    if not check(ok, "founder answers swarmctl status", founder.log_text(30)):
        return nu.finish("swarm_three", t0)
    boot = nu.sync_addr(founder_cfg)  # after the wait: a lost port race rebinds it
    for i, name in enumerate(["b", "c"]):
        # joiners set only node-local keys: they adopt lr, max_steps, ... from the swarm
        cfg = nu.swarm_config(os.path.join(root, name, "state"), bootstrap=boot,
                              data=shards[i + 1], seed=i + 2)
        for k in ("max_steps", "lr", "eps"):
            cfg["train"].pop(k)
        node = nu.Node(os.path.join(root, name), cfg)
        node.start(until_done=False)
        nodes.append(node)

    sts = nu.wait_done_converged(nodes)
    if not check(sts is not None, "three nodes reach max_steps and one version vector",
                 "\n\n".join(n.log_text(15) for n in nodes)):
        return nu.finish("swarm_three", t0)
    digests = {s["model"]["digest"] for s in sts}
    check(len(digests) == 1 and None not in digests, "the three digests agree", digests)
    vv = sts[0]["model"]["version_vector"]
    check(len(vv) == 3 and all(c == MAX_STEPS for c in vv.values()),
          f"the version vector holds {MAX_STEPS} updates of each of 3 origins", vv)
    ids = {s["node"]["id"] for s in sts}
    check(ids == set(vv), "every node is an origin of the version vector", (ids, vv))
    peers_ok = all(len([p for p in s["peers"] if p["state"] == "alive"]) == 2 for s in sts)
    check(peers_ok, "each node sees the two others alive",
          [[(p["id"][:12], p["state"]) for p in s["peers"]] for s in sts])

    # a fourth node, joining after the others are done
    cfg_d = nu.swarm_config(os.path.join(root, "d", "state"), bootstrap=boot, data=shards[0],
                            seed=9)
    for k in ("max_steps", "lr", "eps"):
        cfg_d["train"].pop(k)
    # it catches up from a snapshot (the founder's newest checkpoint) plus the
    # rest by replay; it trains too; the others are done and keep serving
    cfg_d["node"]["catch_up"] = "snapshot"
    late = nu.Node(os.path.join(root, "d"), cfg_d)
    late.start(until_done=False)
    nodes.append(late)
    sts = nu.wait_done_converged(nodes)
    if check(sts is not None, "a fourth node joins late, trains and all four converge",
             late.log_text(30)):
        check(len({s["model"]["digest"] for s in sts}) == 1, "the four digests agree")
        check(len(sts[0]["model"]["version_vector"]) == 4, "four origins in the version vector")
    check("snapshot: downloaded and verified" in late.log_text(),
          "the late joiner caught up from a verified snapshot", late.log_text(20))

    # a joiner with a different learning rate is refused
    cfg_bad = nu.swarm_config(os.path.join(root, "e", "state"), bootstrap=boot, data=shards[0],
                              lr=1e-3)
    bad = nu.Node(os.path.join(root, "e"), cfg_bad)
    rc, _ = bad.run(timeout=60)
    text = bad.log_text()
    check(rc == 2, "a joiner with another lr exits 2", text[-2000:])
    check("[train] lr" in text and "0.0001" in text, "its error names [train] lr and the swarm's value",
          text[-2000:])

    # a joiner whose base model differs (same architecture, other weights) is refused
    other = os.path.join(root, "other-model")
    rc, _, err = nu.swarmctl("model", "init", other, "--layers", "4", "--heads", "4", "--embd",
                             "128", "--ctx", "256", "--vocab", "50257", "--tokenizer",
                             nu.FIXTURE_MODEL, "--seed", "7")
    if check(rc == 0, "swarmctl model init writes another base model", err):
        cfg_m = nu.swarm_config(os.path.join(root, "f", "state"), bootstrap=boot, data=shards[0])
        for k in ("max_steps", "lr", "eps"):
            cfg_m["train"].pop(k)
        cfg_m["model"]["path"] = other
        badm = nu.Node(os.path.join(root, "f"), cfg_m)
        rc, _ = badm.run(timeout=60)
        text = badm.log_text()
        check(rc == 2, "a joiner with another base model exits 2", text[-2000:])
        check("[model] path" in text and "digest" in text,
              "its error names [model] path and the digests", text[-2000:])

    # graceful stop of everyone; then the exports must be byte-identical
    for n in nodes:
        n.proc.terminate()
    for n in nodes:
        check(n.wait(60) == 0, f"{os.path.basename(n.root)} stops with exit 0 on SIGTERM",
              n.log_text(10))
    hashes = []
    for n in nodes:
        out = nu.export(n.state_dir, os.path.join(n.root, "export"))
        hashes.append(nu.model_bytes(out) if out else None)
    check(len(set(hashes)) == 1 and hashes[0] is not None,
          "the four F32 exports are byte-identical", hashes)
    return nu.finish("swarm_three", t0)


if __name__ == "__main__":
    sys.exit(nu.run_test(main))

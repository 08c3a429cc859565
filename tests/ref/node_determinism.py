#!/usr/bin/python3
"""Guarantee: deterministic training.

The same configuration, data and identity key give a byte-identical F32 export
(every file, and the same model digest), run after run, in fresh state
directories, whatever the trainer's thread count; the ledgers hold the same
updates.  A different [train] seed (minibatch order) or a different identity
(the origin id seeds every perturbation) gives a different model, and training
changes the model at all.  Exits non-zero on any failure.
"""
import os
import sys
import time

import nodeutil as nu
from nodeutil import check

STEPS = 30


def train(root, name, identity, **train):
    """Fresh state dir, one --until-done run, F32 export; returns (export, node)."""
    d = os.path.join(root, name)
    cfg = nu.default_config(os.path.join(d, "state"), max_steps=STEPS, **train)
    if identity:
        cfg["node"]["identity"] = identity
    node = nu.Node(d, cfg)
    rc, secs = node.run(timeout=180)
    if not check(rc == 0, f"{name}: swarmd --until-done exits 0 ({secs:.1f} s)", node.log_text(30)):
        return None, node
    out = nu.export(node.state_dir, os.path.join(d, "export"))
    return out, node


def main():
    t0 = time.time()
    if not nu.require_binaries(nu.LEDGER_DUMP):
        return 1
    root = nu.tmpdir("sw_node_determinism_")
    key = os.path.join(root, "identity.key")

    a, na = train(root, "run-a", key)
    check(os.path.exists(key), "the shared [node] identity key file was created by the first run")
    b, nb = train(root, "run-b", key)
    c, nc = train(root, "run-c-threads2", key, threads=2)
    s2, _ = train(root, "run-seed2", key, seed=2)
    other, _ = train(root, "run-other-identity", None)
    if None in (a, b, c, s2, other):
        return nu.finish("node_determinism", t0)

    for name, x in [("run-b", b), ("run-c (threads = 2)", c)]:
        same, why = nu.same_export(a, x)
        check(same, f"{name}: export byte-identical to run-a's ({why})", why)
    da, db, dc = nu.model_digest(a), nu.model_digest(b), nu.model_digest(c)
    check(da is not None and da == db == dc, f"equal model digests {da}")
    print(f"      model.safetensors sha256 {nu.model_bytes(a)}")

    la, lb = nu.ledger_dump(na.state_dir), nu.ledger_dump(nb.state_dir)
    if la is not None and lb is not None:
        ua = [r for r in la if "summary" not in r]
        check(len(ua) == STEPS, f"run-a's ledger holds {len(ua)} updates == max_steps {STEPS}")
        check(ua == [r for r in lb if "summary" not in r],
              "run-a and run-b ledgers hold identical updates (origin, step, q, scale bits)")
        qs = [r["q"] for r in ua]
        check(any(q != 0 for q in qs), f"some q != 0 (q = {qs[:12]} ...)")

    base = nu.model_digest(nu.FIXTURE_MODEL)
    check(da != base, "training changed the model (digest differs from the base model's)")
    check(nu.model_bytes(s2) != nu.model_bytes(a) and nu.model_digest(s2) != da,
          "[train] seed = 2 gives a different model")
    check(nu.model_bytes(other) != nu.model_bytes(a) and nu.model_digest(other) != da,
          "a different identity (origin) gives a different model")

    again = nu.export(na.state_dir, os.path.join(root, "run-a", "export-again"))
    if again:
        same, why = nu.same_export(a, again)
        check(same, f"exporting the same state dir twice gives identical files ({why})", why)
    return nu.finish("node_determinism", t0)


if __name__ == "__main__":
    sys.exit(main())

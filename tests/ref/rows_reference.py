#!/usr/bin/python3
"""Training chosen rows of the vocabulary ([train] trainable_tokens), checked from outside.

Two swarmd nodes on loopback train only the rows of wte that the language task's
completions use (`trainable = ^wte`, `trainable_tokens = completions`):
  - the founder resolves `completions` to the four label tokens' ids (the ids the
    tokenizer gives " German", " French", " Spanish", " Italian") and writes them into
    the run spec; the joiner adopts them; the startup line counts 4 x n_embd trainable
    parameters;
  - they end with one version vector and one digest;
  - in the export only those four rows differ from the base (as its fixed-point master
    holds it), every one of them has moved, and every other tensor and row is the base's;
  - a run spec without the key keeps its run id (the golden id of test_runspec), and
    configuration errors name the key: a malformed list, an id outside the vocabulary,
    ids out of order, rows of wte when `trainable` does not select wte.
Exits non-zero on any failure.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402

import nodeutil as nu  # noqa: E402
import np_gpt2  # noqa: E402
from nodeutil import check  # noqa: E402

STEPS = 20
TRAIN = os.path.join(nu.DATA, "lang-train.jsonl")


def label_ids():
    """The token ids of the four completions, by swarmtune's tokenizer (tests/tools)."""
    texts = [" German", " French", " Spanish", " Italian"]
    p = subprocess.run([os.path.join(nu.BUILD, "tests", "tok_batch"), nu.FIXTURE_MODEL],
                       input="".join(json.dumps(t) + "\n" for t in texts).encode(),
                       capture_output=True, check=True, timeout=60)
    ids = [int(x) for line in p.stdout.decode().splitlines()[:4] for x in line.split()]
    return sorted(set(ids))


def rows_config(root, name, bootstrap="", **extra):
    cfg = nu.swarm_config(os.path.join(root, name, "state"), bootstrap, TRAIN, max_steps=STEPS,
                          lr=1e-3, trainable="^wte", trainable_tokens="completions", seq_len=64)
    cfg["train"].update(extra)
    return cfg


def check_swarm(root, ids):
    a_cfg = rows_config(root, "a")
    b_cfg = rows_config(root, "b", nu.sync_addr(a_cfg), seed=2)
    del b_cfg["train"]["trainable_tokens"]  # a joiner leaves it out and adopts the founder's
    a, b, sts = nu.pair_converged(root, a_cfg, b_cfg,
                                  "two nodes training four rows finish and converge")
    if sts is None:
        return
    want = ",".join(map(str, ids))
    for n in (a, b):
        rs = json.load(open(os.path.join(n.state_dir, "runspec.json")))
        check(rs["train"].get("trainable_tokens") == want,
              f"{n.name}'s run spec: trainable_tokens {rs['train'].get('trainable_tokens')} "
              f"(the labels' ids {want})")
    check(f"trainable_params={len(ids) * 128} " in a.log_text(),
          f"startup line: trainable_params={len(ids) * 128} (four rows of 128)")
    nu.stop_all([a, b])
    out = os.path.join(root, "export")
    if nu.export(a.state_dir, out) is None:
        return
    _, base = np_gpt2.load_model(nu.FIXTURE_MODEL)
    _, got = np_gpt2.load_model(out)
    others = [k for k in base if k != "wte.weight"
              if not np.array_equal(np_gpt2.fixed_point(base[k]), got[k])]
    check(not others, f"every tensor but wte is the base's ({others[:3]})")
    grid = np_gpt2.fixed_point(base["wte.weight"])
    changed = sorted(int(r) for r in np.nonzero(np.any(grid != got["wte.weight"], axis=1))[0])
    check(changed == ids, f"exactly the four label rows of wte moved (rows {changed[:8]})")


def check_config_errors(root, ids):
    cases = [
        ("a malformed list", {"trainable_tokens": "4141,x"}, "train.trainable_tokens"),
        ("an id outside the vocabulary", {"trainable_tokens": "50257"}, "train.trainable_tokens"),
        ("ids out of order", {"trainable_tokens": "8200,4141"}, "train.trainable_tokens"),
        ("rows without wte", {"trainable": "^h\\.", "trainable_tokens": "4141"},
         "does not select wte"),
    ]
    for i, (what, extra, want) in enumerate(cases):
        cfg = rows_config(root, f"bad{i}", **extra)
        n = nu.Node(os.path.join(root, f"bad{i}"), cfg)
        rc, _ = n.run(timeout=60)
        check(rc == 2 and want in n.log_text(), f"{what}: exit 2 naming {want}", n.log_text(5))
    # an explicit list works like the resolved one
    cfg = rows_config(root, "explicit", trainable_tokens=",".join(map(str, ids)), max_steps=2)
    del cfg["node"]["bootstrap"]
    n = nu.Node(os.path.join(root, "explicit"), cfg)
    rc, _ = n.run(timeout=120)
    check(rc == 0 and f"trainable_params={len(ids) * 128} " in n.log_text(),
          "an explicit id list: runs, the same four rows", n.log_text(5))


def main():
    t0 = time.time()
    nu.require_binaries()
    root = nu.tmpdir("sw_rows_")
    ids = label_ids()
    check(len(ids) == 4, f"the four labels are one token each ({ids})")
    check_swarm(root, ids)
    check_config_errors(root, ids)
    return nu.finish("rows_reference", t0)


if __name__ == "__main__":
    sys.exit(nu.run_test(main))

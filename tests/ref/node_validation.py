#!/usr/bin/python3
"""Validation while training ([data] valid, [train] eval_every, keep_best).

A solo swarmd on the fixture model, topic data, validating on topic-test.jsonl:
  - it scores at step 0, every eval_every steps and at the last step (log lines
    msg=validation); the last scoring equals `swarmctl model eval` of an export;
  - `swarmctl status --json` shows the latest and the best (valid.*), the human
    `swarmctl status` a "# Validation" section, /metrics the gauges;
  - keep_best: <state>/best/ holds the best scoring's model (eval of it equals
    valid.best_*) and validation.json; a restart keeps that best (it does not
    replace it with a worse one), a damaged validation.json is warned about
    and replaced;
  - bad input is refused before training: a missing valid file (exit 2 naming
    the key), a malformed line (naming FILE:LINE), a file without a record to
    score.
Exits non-zero on any failure.
"""
import json
import os
import re
import sys
import time
import urllib.request

import nodeutil as nu
from nodeutil import check

STEPS = 12
EVERY = 5
VALID = os.path.join(nu.DATA, "topic-test.jsonl")


def close(a, b, rel=1e-9):
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))


def config(root, name, **extra):
    cfg = nu.default_config(os.path.join(root, name, "state"), max_steps=STEPS, lr=3e-4,
                            seq_len=64)
    cfg["data"]["valid"] = VALID
    cfg["train"]["eval_every"] = EVERY
    cfg["train"]["keep_best"] = "true"
    for k, v in extra.items():
        sec, key = k.split("__")
        cfg[sec][key] = v
    return cfg


def check_run(root):
    port = nu.free_port()
    cfg = config(root, "a", node__metrics=f"127.0.0.1:{port}")
    node = nu.Node(os.path.join(root, "a"), cfg)
    node.start(until_done=False)
    # done at STEPS, still serving: read status and metrics, then stop
    st = None
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120 and node.exited() is None:
        st = nu.status(node.state_dir)
        if st and st["node"]["state"] == "done" and st["valid"]["step"] == STEPS:
            break
        time.sleep(0.3)
    if not check(st is not None and st["valid"]["step"] == STEPS,
                 "the node reached its last step and scored it", node.log_text(20)):
        node.kill9()
        return
    v = st["valid"]
    runs = nu.validations(node.log_text())
    steps = [int(r["step"]) for r in runs]
    check(steps == [0, 5, 10, 12], f"scored at steps 0, 5, 10 and the last ({steps})")
    check(v["evals"] == 4 and v["failures"] == 0, f"valid.evals 4, failures 0 ({v['evals']}, "
          f"{v['failures']})")
    last = runs[-1]
    check(close(v["loss"], float(last["loss"]), 1e-6), "valid.loss is the last scoring's")
    check(v["accuracy"] is not None and 0 <= v["accuracy"] <= 1, "valid.accuracy is a share")
    best = max(runs, key=lambda r: (float(r["accuracy"]), -float(r["loss"])))
    check(v["best_step"] == int(best["step"]),
          f"valid.best_step {v['best_step']}: the highest accuracy, ties the lower loss "
          f"(log: {int(best['step'])})")
    check(v["best_dir"] == os.path.join(node.state_dir, "best"), "valid.best_dir is <state>/best")

    rc, human, _ = nu.swarmctl("status", "--state-dir", node.state_dir)
    check(rc == 0 and "# Validation" in human and re.search(r"^best_step:%d$" % v["best_step"],
                                                           human, re.M),
          "swarmctl status shows a '# Validation' section with the best step", human[-800:])
    # /metrics is rendered from the status once a second: wait for the last scoring
    text = ""
    for _ in range(30):
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                          timeout=5).read().decode()
        except OSError as e:
            text = str(e)
        if re.search(r"^swarmd_valid_evals_total 4$", text, re.M):
            break
        time.sleep(0.2)
    m = re.search(r"^swarmd_valid_loss (\S+)$", text, re.M)
    check(m is not None and close(float(m.group(1)), v["loss"], 1e-6),
          "/metrics: swarmd_valid_loss is the status's",
          "\n".join(x for x in text.splitlines() if "valid" in x) or text[:500])
    check(re.search(r"^swarmd_valid_evals_total 4$", text, re.M) is not None,
          "/metrics: swarmd_valid_evals_total 4")
    nu.swarmctl("leave", "--state-dir", node.state_dir)
    check(node.wait(60) == 0, "the node leaves and exits 0")

    # the kept best is the best scoring's model, bit for bit what eval says
    ev = nu.evaluate(v["best_dir"], VALID)
    if ev:
        check(close(ev["loss"], v["best_loss"], 1e-9) and ev["accuracy"] == v["best_accuracy"],
              f"eval of best/ equals valid.best_* (loss {ev['loss']:.6f} vs {v['best_loss']:.6f})")
    meta = json.load(open(os.path.join(v["best_dir"], "validation.json")))
    check(meta["step"] == v["best_step"], "best/validation.json names the best step")

    # the last scoring is what swarmctl model eval says of the final model
    out = nu.export(node.state_dir, os.path.join(root, "a-export"))
    ev = nu.evaluate(out, VALID) if out else None
    if ev:
        check(close(ev["loss"], float(last["loss"]), 1e-6),
              f"the last scoring equals swarmctl model eval of the export ({ev['loss']:.6f})")

    # a restart scores again (at the last step: no better) and keeps the best
    rc, _ = node.run(timeout=120)
    check(rc == 0, "restart: exit 0", node.log_text(10))
    runs2 = nu.validations(node.log_text())[len(runs):]
    meta2 = json.load(open(os.path.join(v["best_dir"], "validation.json")))
    better = [r for r in runs2 if r["best"] == "true"]
    if better:
        check(meta2["step"] == int(better[-1]["step"]), "a better score after the restart "
              "replaced the kept best")
    else:
        check(meta2 == meta, "the restart's scores were not better: the kept best is unchanged")

    # a damaged validation.json: warned about, and the next scoring replaces it
    with open(os.path.join(v["best_dir"], "validation.json"), "w") as f:
        f.write("{not json")
    rc, _ = node.run(timeout=120)
    log = node.log_text()
    check(rc == 0 and "validation.json unreadable" in log,
          "a damaged best/validation.json is warned about", node.log_text(10))
    try:
        json.load(open(os.path.join(v["best_dir"], "validation.json")))
        ok = True
    except ValueError:
        ok = False
    check(ok, "... and replaced by the next scoring")


def check_refusals(root):
    cfg = config(root, "missing")
    cfg["data"]["valid"] = os.path.join(root, "nope.jsonl")
    node = nu.Node(os.path.join(root, "missing"), cfg)
    rc, _ = node.run(timeout=60)
    log = node.log_text()
    check(rc == 2 and ("[data] valid" in log or "data.valid" in log),
          f"a missing [data] valid file: exit 2 naming the key (rc {rc})", node.log_text(5))

    bad = os.path.join(root, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"prompt": "a", "completion": " b"}\n{"prompt": 7}\n')
    cfg = config(root, "bad")
    cfg["data"]["valid"] = bad
    node = nu.Node(os.path.join(root, "bad"), cfg)
    rc, _ = node.run(timeout=60)
    check(rc not in (0, None) and "bad.jsonl:2" in node.log_text(),
          f"a malformed valid file: refused naming FILE:LINE (rc {rc})", node.log_text(5))

    empty = os.path.join(root, "empty.jsonl")
    with open(empty, "w") as f:
        f.write("\n")
    cfg = config(root, "empty")
    cfg["data"]["valid"] = empty
    node = nu.Node(os.path.join(root, "empty"), cfg)
    rc, _ = node.run(timeout=60)
    check(rc not in (0, None) and "[data] valid" in node.log_text() and
          "no record" in node.log_text(),
          f"a valid file without a record: refused (rc {rc})", node.log_text(5))


def main():
    t0 = time.time()
    if not nu.require_binaries():
        return 1
    root = nu.tmpdir("sw_node_validation_")
    check_run(root)
    check_refusals(root)
    return nu.finish("node_validation", t0)


if __name__ == "__main__":
    sys.exit(nu.run_test(main))

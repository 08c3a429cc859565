#!/usr/bin/python3
"""Guarantee: it learns.

Solo swarmd runs on the fixture model (tiny-gpt2-fortunes), scored before
and after with `swarmctl model eval --json` on held-out data:
  - topic: train on topic-train.jsonl (prompt + one completion token, loss on
    the completion only), score topic-test.jsonl: the loss must fall by at
    least TOPIC_MIN_DROP nats, and the multiple-choice accuracy may not fall
    more than TOPIC_MAX_ACC_LOSS records below the base's (1,000 steps teach
    the answer format and the label prior, not reliably the topics: a strict
    accuracy rise is not a property of the method here, so it is not asserted);
  - task: train on task-train.jsonl (language modelling in a domain the model
    never saw), score task-test.jsonl: the loss must fall by at least
    TASK_MIN_DROP nats (zeroth-order methods are slow here);
  - lang: the language-aware base (tiny-gpt2-fortunes-lang), only its four answer
    rows trained (trainable_tokens = completions) on lang-train.jsonl, scored on the
    1,000 records of lang-test.jsonl: accuracy from chance to at least LANG_MIN_ACC
    (five seeds of the learning benchmark reach 0.443-0.490 after 1,000 steps).
The margins are well inside what the runs measure (docs/guarantees.md has
the figures); the step counts are the CI variant.  SW_LEARN_TOPIC_STEPS,
SW_LEARN_TASK_STEPS, SW_LEARN_TOPIC_LR, SW_LEARN_TASK_LR, SW_LEARN_SEED,
SW_LEARN_IDENTITY and SW_LEARN_THREADS override them (longer runs, other
trajectories: docs/guarantees.md).
Exits non-zero on any failure.
"""
import os
import sys
import time

import nodeutil as nu
from nodeutil import check

TOPIC_STEPS = int(os.environ.get("SW_LEARN_TOPIC_STEPS", "1000"))
TASK_STEPS = int(os.environ.get("SW_LEARN_TASK_STEPS", "300"))
THREADS = int(os.environ.get("SW_LEARN_THREADS", "2"))
# The data order seed and the identity (origin id: it seeds every direction).
# Fixed, so the run and its figures are the same every time; other values
# give other trajectories (docs/guarantees.md has their spread).
SEED = int(os.environ.get("SW_LEARN_SEED", "1"))
IDENTITY = os.environ.get("SW_LEARN_IDENTITY", "node_learns")
TOPIC_LR = float(os.environ.get("SW_LEARN_TOPIC_LR", "3e-4"))
TASK_LR = float(os.environ.get("SW_LEARN_TASK_LR", "1e-3"))
TOPIC_MIN_DROP = 5.0
TOPIC_MAX_ACC_LOSS = 3  # records of 73
TASK_MIN_DROP = 0.02
LANG_STEPS = int(os.environ.get("SW_LEARN_LANG_STEPS", "1000"))
LANG_MIN_ACC = 0.35
LANG_MODEL = os.path.join(nu.SOURCE, "models", "tiny-gpt2-fortunes-lang")

RUNS = {
    "topic": dict(train="topic-train.jsonl", test="topic-test.jsonl", steps=TOPIC_STEPS,
                  train_cfg=dict(lr=TOPIC_LR, eps=1e-3, batch_size=8, seq_len=128)),
    "task": dict(train="task-train.jsonl", test="task-test.jsonl", steps=TASK_STEPS,
                 train_cfg=dict(lr=TASK_LR, eps=1e-3, batch_size=8, seq_len=64)),
    "lang": dict(train="lang-train.jsonl", test="lang-test.jsonl", steps=LANG_STEPS,
                 model=LANG_MODEL,
                 train_cfg=dict(lr=1e-3, eps=1e-3, batch_size=8, seq_len=128, trainable="^wte",
                                trainable_tokens="completions")),
}


def learn(root, name, spec):
    d = os.path.join(root, name)
    cfg = nu.default_config(os.path.join(d, "state"), max_steps=spec["steps"], threads=THREADS,
                            **spec["train_cfg"])
    cfg["data"]["train"] = os.path.join(nu.DATA, spec["train"])
    model = spec.get("model", nu.FIXTURE_MODEL)
    cfg["model"]["path"] = model
    cfg["node"]["progress_ms"] = 5000
    cfg["train"]["seed"] = SEED
    key, pk = nu.write_identity(os.path.join(root, name + ".key"), IDENTITY)
    cfg["node"]["identity"] = key
    test = os.path.join(nu.DATA, spec["test"])
    before = nu.evaluate(model, test, THREADS)
    node = nu.Node(d, cfg)
    rc, secs = node.run(timeout=900)
    if not check(rc == 0, f"{name}: swarmd --until-done, {spec['steps']} steps: exit 0 "
                 f"({secs:.1f} s, {spec['steps'] / secs:.1f} steps/s)", node.log_text(30)):
        return None
    log = node.log_text()
    check(f" node={pk} " in log, f"{name}: the node's origin id is the identity file's public key")
    for line in log.splitlines():
        if "calibrated" in line:
            print("      " + line[line.find("msg="):])
    out = nu.export(node.state_dir, os.path.join(d, "export"))
    after = nu.evaluate(out, test, THREADS) if out else None
    if before is None or after is None:
        return None
    acc = ""
    if "accuracy" in before:
        acc = (f", accuracy {before['accuracy']:.3f} ({before['correct']}/{before['records']})"
               f" -> {after['accuracy']:.3f} ({after['correct']}/{after['records']})")
    print(f"      {name}: lr {spec['train_cfg']['lr']:g}, {spec['steps']} steps in {secs:.1f} s ({THREADS} threads): "
          f"{spec['test']} loss {before['loss']:.4f} -> {after['loss']:.4f} "
          f"({after['loss'] - before['loss']:+.4f}){acc}", flush=True)
    return before, after, secs


def main():
    t0 = time.time()
    if not nu.require_binaries():
        return 1
    root = nu.tmpdir("sw_node_learns_")
    r = learn(root, "topic", RUNS["topic"])
    if r:
        before, after, _ = r
        check(after["loss"] <= before["loss"] - TOPIC_MIN_DROP,
              f"topic: test loss fell by {before['loss'] - after['loss']:.3f} >= {TOPIC_MIN_DROP} nats")
        check(after["correct"] >= before["correct"] - TOPIC_MAX_ACC_LOSS,
              f"topic: test accuracy {before['correct']}/{before['records']} -> "
              f"{after['correct']}/{after['records']}, not more than {TOPIC_MAX_ACC_LOSS} "
              "records below the base")
    r = learn(root, "task", RUNS["task"])
    if r:
        before, after, _ = r
        check(after["loss"] <= before["loss"] - TASK_MIN_DROP,
              f"task: test loss fell by {before['loss'] - after['loss']:.4f} >= {TASK_MIN_DROP} nats")
    r = learn(root, "lang", RUNS["lang"])
    if r:
        before, after, _ = r
        check(before["accuracy"] <= 0.26 and after["accuracy"] >= LANG_MIN_ACC,
              f"lang: test accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f} "
              f"(>= {LANG_MIN_ACC}, chance 0.25)")
    return nu.finish("node_learns", t0)


if __name__ == "__main__":
    sys.exit(main())

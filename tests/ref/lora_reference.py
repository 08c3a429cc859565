#!/usr/bin/python3
"""LoRA adapters ([train] adapter = lora) in a swarm, checked from the outside.

Two swarmd nodes on loopback train rank-4 adapters on the fixture model:
  - they end with one version vector and one digest (bit-identical replicas);
  - the run spec carries the adapter keys; `swarmctl status` counts only the
    adapter parameters as trainable;
  - the export is the merged model plus a PEFT adapter in adapter/: NumPy merges
    the adapter into the base by PEFT's formula for GPT-2's Conv1D (fan_in_fan_out:
    W + (alpha / r) (B A)^T) and gets the exported model.safetensors; every tensor
    that carries no adapter is the base's, bit for bit (the base is frozen), and B
    has moved from zero;
  - `swarmctl model eval` of the merged export equals the node's last validation
    scoring (the daemon's forward with adapters is the merged model's);
  - a node restarted from its checkpoint keeps the same digest;
  - configuration errors name the key: lora_rank out of bounds, an unknown target,
    lora_* keys without adapter = lora, a bad adapter name.
Exits non-zero on any failure.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402

import nodeutil as nu  # noqa: E402
import np_gpt2  # noqa: E402
from nodeutil import check  # noqa: E402

STEPS = 25
RANK, ALPHA = 4, 8.0
VALID = os.path.join(nu.DATA, "lang-valid.jsonl")
TARGETS = {"attn.c_attn": (1, 3), "attn.c_proj": (1, 1), "mlp.c_fc": (1, 4),
           "mlp.c_proj": (4, 1)}  # name: (in, out) in units of n_embd


def lora_config(root, name, bootstrap="", **extra):
    cfg = nu.swarm_config(os.path.join(root, name, "state"), bootstrap,
                          os.path.join(nu.DATA, "lang-train.jsonl"), max_steps=STEPS, lr=1e-2,
                          adapter="lora", lora_rank=RANK, lora_alpha=ALPHA, seq_len=64)
    cfg["data"]["valid"] = VALID
    cfg["train"]["eval_every"] = STEPS
    cfg["train"].update(extra)
    return cfg


def check_peft(out, base_dir):
    cfg, base = np_gpt2.load_model(base_dir)
    _, merged = np_gpt2.load_model(out)
    ad_dir = os.path.join(out, "adapter")
    conf = json.load(open(os.path.join(ad_dir, "adapter_config.json")))
    check(conf["peft_type"] == "LORA" and conf["r"] == RANK and conf["lora_alpha"] == ALPHA
          and conf["fan_in_fan_out"] is True, "adapter_config.json: LORA, r, lora_alpha, "
          "fan_in_fan_out")
    check(sorted(conf["target_modules"]) == sorted(TARGETS), "target_modules: the four weights")
    ad, dtypes, _ = np_gpt2.read_safetensors(os.path.join(ad_dir, "adapter_model.safetensors"))
    C = cfg["n_embd"]
    want_names = set()
    worst, moved = 0.0, 0
    scale = ALPHA / RANK
    for l in range(cfg["n_layer"]):
        for t, (fi, fo) in TARGETS.items():
            pre = f"base_model.model.transformer.h.{l}.{t}"
            a, b = ad.get(pre + ".lora_A.weight"), ad.get(pre + ".lora_B.weight")
            want_names |= {pre + ".lora_A.weight", pre + ".lora_B.weight"}
            if a is None or b is None:
                check(False, f"{pre}: lora_A and lora_B present")
                return
            if a.shape != (RANK, fi * C) or b.shape != (fo * C, RANK):
                check(False, f"{pre}: shapes A {a.shape} B {b.shape}")
                return
            moved += int(np.count_nonzero(b))
            name = f"h.{l}.{t}.weight"
            # PEFT, fan_in_fan_out: delta_w = transpose(B @ A) * scaling
            ref = (base[name].astype(np.float64) +
                   scale * (b.astype(np.float64) @ a.astype(np.float64)).T).astype(np.float32)
            worst = max(worst, float(np.max(np.abs(ref - merged[name]))))
    check(set(ad) == want_names and all(v == "F32" for v in dtypes.values()),
          f"adapter_model.safetensors holds exactly the {len(want_names)} adapter tensors, F32")
    check(worst <= 1e-6, f"the export is the base merged with the adapter by PEFT's formula "
          f"(max |diff| {worst:.2e})")
    check(moved > 0, f"training moved B from zero ({moved} non-zero values)")
    adapted = {f"h.{l}.{t}.weight" for l in range(cfg["n_layer"]) for t in TARGETS}
    frozen = [k for k in base if k not in adapted]
    # by value: a fixed-point master holds -0 as 0
    same = [k for k in frozen if np.array_equal(np_gpt2.fixed_point(base[k]), merged[k])]
    check(len(same) == len(frozen), f"every tensor without an adapter is the base's as its "
          f"fixed-point master holds it ({len(same)} of {len(frozen)}: "
          f"{sorted(set(frozen) - set(same))[:3]})")


def check_swarm(root):
    a_cfg = lora_config(root, "a")
    a, b, sts = nu.pair_converged(root, a_cfg, lora_config(root, "b", nu.sync_addr(a_cfg), seed=2),
                                  "two lora nodes finish and converge (one vv, one digest)")
    if sts is None:
        return
    check(sts[0]["model"]["digest"] == sts[1]["model"]["digest"], "one digest on both nodes")
    check(sum(sts[0]["model"]["version_vector"].values()) == 2 * STEPS,
          "each applied both nodes' updates")
    rs = json.load(open(os.path.join(a.state_dir, "runspec.json")))
    tr = rs["train"]
    check(tr.get("adapter") == "lora" and tr.get("lora_rank") == RANK and
          tr.get("lora_alpha") == ALPHA, "the run spec carries adapter, lora_rank, lora_alpha")
    C, L = 128, 4
    want = L * RANK * sum((fi + fo) * C for fi, fo in TARGETS.values())
    check(f"trainable_params={want} " in a.log_text(), f"startup line: trainable_params={want} "
          "(the adapters only)")
    nu.stop_all([a, b])
    out = os.path.join(root, "export")
    if nu.export(a.state_dir, out) is None:
        return
    check(os.path.isdir(os.path.join(out, "adapter")), "the export has adapter/")
    check_peft(out, nu.FIXTURE_MODEL)
    # a solo node: its last validation scores the weights it exports
    c = nu.Node(os.path.join(root, "c"), lora_config(root, "c"))
    rc, _ = c.run(timeout=120)
    out_c = os.path.join(root, "export-c")
    if check(rc == 0, "a solo lora node runs to its last step", c.log_text(5)) and \
            nu.export(c.state_dir, out_c) is not None:
        last = nu.validations(c.log_text())[-1]
        ev = nu.evaluate(out_c, VALID)
        if ev is not None:
            check(abs(ev["loss"] - float(last["loss"])) <= 1e-5 * abs(ev["loss"]) and
                  ev["accuracy"] == float(last["accuracy"]),
                  f"eval of the merged export ({ev['loss']:.6f}, {ev['accuracy']}) equals the "
                  f"node's last validation ({float(last['loss']):.6f}, {last['accuracy']})")
    # a restart from the checkpoint gives the same weights
    digest = sts[0]["model"]["digest"]
    a.start(until_done=False)
    st = nu.wait_until(lambda: (lambda s: s if s and s["node"]["state"] == "done" else None)(
        nu.status(a.state_dir)), 60, alive=[a])
    check(st is not None and st["model"]["digest"] == digest,
          "restarted from its checkpoint: the same digest")
    a.kill9()


def check_config_errors(root):
    cases = [
        ("lora_rank out of bounds", {"lora_rank": 65}, "lora_rank"),
        ("unknown target", {"lora_targets": "attn.c_attn,mlp.fc"}, "lora_targets"),
        ("adapter name", {"adapter": "qlora"}, "adapter"),
    ]
    for i, (what, extra, key) in enumerate(cases):
        cfg = lora_config(root, f"bad{i}", **extra)
        n = nu.Node(os.path.join(root, f"bad{i}"), cfg)
        rc, _ = n.run(timeout=60)
        check(rc == 2 and key in n.log_text() and "state_dir" not in n.log_text(),
              f"{what}: exit 2 naming {key}", n.log_text(5))
    cfg = nu.default_config(os.path.join(root, "plain", "state"), lora_rank=4)
    n = nu.Node(os.path.join(root, "plain"), cfg)
    rc, _ = n.run(timeout=60)
    check(rc == 2 and "only with adapter = lora" in n.log_text(),
          "lora_rank without adapter = lora: exit 2 saying so", n.log_text(5))


def main():
    t0 = time.time()
    nu.require_binaries()
    root = nu.tmpdir("sw_lora_")
    check_swarm(root)
    check_config_errors(root)
    return nu.finish("lora_reference", t0)


if __name__ == "__main__":
    sys.exit(nu.run_test(main))

#!/usr/bin/python3
"""SPSA step benchmark: swarmtune's training step against a PyTorch MeZO step
on the same model, minibatches, sequence length and thread count, measured in
the same run.

One step, both sides: the +eps and -eps losses on one minibatch of 8 records,
the projected gradient, and the update applied to every parameter.
  - swarmtune (tests/bench/bench_spsa): sw_trainer_step (lockstep +/- passes
    over int32 master weights, z from ChaCha20, Rademacher) then sw_fixed_apply
    of the step's own update, as a solo node does.
  - PyTorch (Debian python3-torch, float32, torch.no_grad): MeZO as in its
    reference code: torch.manual_seed(seed), then for every parameter
    z = torch.normal(0, 1) and in-place p += eps z; loss; again with -2 eps;
    loss; again with +eps (restore); then the update regenerating z once more
    (p -= lr g z).  Its loss takes logits only at the scored positions (less
    work than the usual full-vocabulary logits for every position).
Both read exactly the same minibatches (bench_spsa --dump-batches).

Models: the bundled fixture (7.3M, topic-train records at their own lengths,
completion-only loss) and a random GPT-2-small-shaped 124M model (text
records cut to 128 tokens, every position scored).  Threads 1 and 2.  Each
configuration runs in its own process so peak RSS is its own.

Run: meson test -C build --benchmark --suite bench -v   (or: ninja -C build benchmark)
SW_BENCH_SECONDS (default 8) sets the minimum timed seconds per configuration.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import ensure_124m, run_json, require  # noqa: E402

SRC = os.environ.get("SW_SOURCE_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD = os.environ.get("SW_BUILD_ROOT", os.path.join(SRC, "build"))
SECONDS = float(os.environ.get("SW_BENCH_SECONDS", "8"))
BATCH = 8
LR, EPS = 1e-4, 1e-3
N_BATCHES = 64  # dumped minibatches, cycled

TORCH_CHILD = r'''
import json, math, resource, sys, time
path, threads, batches_path, seconds, lr, eps, refdir = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), sys.argv[7]
import os
# OpenBLAS (which this torch calls for sgemm) sizes its own thread pool from the
# environment when it loads: without this, "1 thread" torch still runs sgemm on
# every core.
os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
os.environ["OMP_NUM_THREADS"] = str(threads)
import torch
torch.set_num_threads(threads)
sys.path.insert(0, refdir)
import np_gpt2
import numpy as np
cfg, npparams = np_gpt2.load_model(path)
def W(name):
    return torch.from_numpy(np.ascontiguousarray(npparams[name], dtype=np.float32))
L, H, C, V = cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["vocab_size"]
lneps = cfg.get("layer_norm_epsilon", 1e-5)
wte, wpe = W("wte.weight"), W("wpe.weight")
names = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
         "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
         "mlp.c_proj.weight", "mlp.c_proj.bias"]
layers = [{k: W(f"h.{l}." + k) for k in names} for l in range(L)]
lnf_w, lnf_b = W("ln_f.weight"), W("ln_f.bias")
del npparams
params = [wte, wpe] + [p[k] for p in layers for k in names] + [lnf_w, lnf_b]  # head tied to wte
F = torch.nn.functional
batches = []
for line in open(batches_path):
    b = json.loads(line)
    T = b["T"]
    tok = torch.tensor(b["tokens"], dtype=torch.long).view(-1, T)
    mask = torch.tensor(b["mask"], dtype=torch.bool).view(-1, T)
    batches.append((tok, mask))
def loss_fn(tokens, mask):
    B, T = tokens.shape
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    x = wte[tokens] + wpe[:T]
    for p in layers:
        h = F.layer_norm(x, (C,), p["ln_1.weight"], p["ln_1.bias"], lneps)
        qkv = h @ p["attn.c_attn.weight"] + p["attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, H, C // H).transpose(1, 2)
        k = k.view(B, T, H, C // H).transpose(1, 2)
        v = v.view(B, T, H, C // H).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))
        att = torch.softmax(att.masked_fill(causal, float("-inf")), dim=-1)
        a = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + a @ p["attn.c_proj.weight"] + p["attn.c_proj.bias"]
        h = F.layer_norm(x, (C,), p["ln_2.weight"], p["ln_2.bias"], lneps)
        h = F.gelu(h @ p["mlp.c_fc.weight"] + p["mlp.c_fc.bias"], approximate="tanh")
        x = x + h @ p["mlp.c_proj.weight"] + p["mlp.c_proj.bias"]
    x = F.layer_norm(x, (C,), lnf_w, lnf_b, lneps)
    sel = mask[:, 1:]
    hs = x[:, :-1][sel]                      # (n, C) hidden states before scored tokens
    logits = hs @ wte.T                      # (n, V)
    return F.cross_entropy(logits, tokens[:, 1:][sel])
def perturb(seed, scale):
    torch.manual_seed(seed)
    for p in params:
        z = torch.normal(mean=0, std=1, size=p.size())
        p.add_(z, alpha=scale * eps)
def mezo_step(i):
    tok, mask = batches[i % len(batches)]
    seed = 1000003 * (i + 1)
    perturb(seed, 1.0)
    l1 = loss_fn(tok, mask).item()
    perturb(seed, -2.0)
    l2 = loss_fn(tok, mask).item()
    perturb(seed, 1.0)
    g = (l1 - l2) / (2 * eps)
    torch.manual_seed(seed)
    for p in params:
        z = torch.normal(mean=0, std=1, size=p.size())
        p.add_(z, alpha=-lr * g)
    return 0.5 * (l1 + l2)
def hwm_reset():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024.0
    return -1.0
with torch.no_grad():
    mezo_step(0)
    load_rss = hwm_mb()  # clear_refs resets ru_maxrss too
    hwm_reset()
    losses = []
    t0 = time.monotonic()
    i = 1
    while True:
        losses.append(mezo_step(i))
        i += 1
        t1 = time.monotonic()
        if len(losses) >= 2 and t1 - t0 >= seconds:
            break
rss = max(load_rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
k = min(10, len(losses))
print(json.dumps({"steps_per_s": len(losses) / (t1 - t0), "steps": len(losses), "peak_rss_mb": rss,
                  "step_rss_mb": hwm_mb(), "loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k}))
'''


def long_records(tmp):
    """Text records of ~1000 characters (well over 128 tokens) from base-val."""
    texts = [json.loads(line)["text"] for line in open(os.path.join(SRC, "data", "base-val.jsonl"))]
    blob = "\n".join(texts)
    path = os.path.join(tmp, "long.jsonl")
    with open(path, "w") as fh:
        for i in range(64):
            fh.write(json.dumps({"text": blob[i * 1000:(i + 1) * 1000]}) + "\n")
    return path


def main():
    require("bench spsa", modules=("torch", "numpy"), tools=())
    tok_dir = os.path.join(SRC, "models", "tiny-gpt2-fortunes")
    exe = os.path.join(BUILD, "tests", "bench", "bench_spsa")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        child = os.path.join(tmp, "torch_child.py")
        with open(child, "w") as fh:
            fh.write(TORCH_CHILD)
        models = [("fixture 7.3M", tok_dir, os.path.join(SRC, "data", "topic-train.jsonl"), 0),
                  ("gpt2-124M", ensure_124m(BUILD), long_records(tmp), 128)]
        for label, path, data, seq in models:
            common = [path, data, "--tokenizer", tok_dir, "--batch", str(BATCH), "--seed", "1"]
            if seq:
                common += ["--seq", str(seq)]
            batches = os.path.join(tmp, "batches.jsonl")
            run = subprocess.run([exe] + common + ["--steps", str(N_BATCHES), "--warmup", "0",
                                                   "--dump-batches", batches], capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"bench_spsa: dumping batches failed:\n{run.stderr}")
            for threads in (1, 2):
                ours = run_json([exe] + common + ["--threads", str(threads), "--steps", "2", "--warmup", "1",
                                                  "--seconds", str(SECONDS), "--lr", str(LR), "--eps", str(EPS),
                                                  "--max-scale", "1"], "bench_spsa")
                theirs = run_json(["/usr/bin/python3", child, path, str(threads), batches, str(SECONDS),
                                   str(LR), str(EPS), os.path.join(SRC, "tests", "ref")], "bench_spsa")
                rows.append((label, threads, ours, theirs))
    print(f"SPSA step (+eps and -eps losses, update applied), batch {BATCH}, lr {LR}, eps {EPS}, "
          f">= {SECONDS:g} s per configuration")
    print(f"{'model':<13} {'thr':>3} {'swarmtune st/s':>14} {'torch st/s':>10} {'speed x':>7} "
          f"{'swarmtune MB':>12} {'torch MB':>9} {'RSS ratio':>9} {'(stepping MB)':>16}")
    for label, threads, ours, theirs in rows:
        print(f"{label:<13} {threads:>3} {ours['steps_per_s']:>14.3f} {theirs['steps_per_s']:>10.3f} "
              f"{ours['steps_per_s'] / theirs['steps_per_s']:>7.2f} {ours['peak_rss_mb']:>12.0f} "
              f"{theirs['peak_rss_mb']:>9.0f} {ours['peak_rss_mb'] / theirs['peak_rss_mb']:>9.2f} "
              f"{ours['step_rss_mb']:>7.0f} / {theirs['step_rss_mb']:<7.0f}")
    print("peak RSS is the whole process (loading included); 'stepping MB' is the peak while stepping "
          "(swarmtune / torch).")
    print("Mean (L+ + L-)/2 of the first and last (up to) 10 timed steps, a check that the work is real "
          "(the two sides draw different directions):")
    for label, threads, ours, theirs in rows:
        print(f"  {label} {threads} thr: swarmtune {ours['loss_first']:.3f}/{ours['loss_last']:.3f} "
              f"({ours['steps']} steps), torch {theirs['loss_first']:.3f}/{theirs['loss_last']:.3f} "
              f"({theirs['steps']} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

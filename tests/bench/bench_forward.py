#!/usr/bin/python3
"""Forward-pass benchmark: swarmtune against PyTorch on the same model,
batch, sequence length and thread count, measured in the same run.

For each model (the bundled fixture and a random GPT-2-small-shaped 124M
model) and each thread count (1, 2) it runs, in separate processes so peak
RSS is per configuration:
  - tests/bench/bench_forward (swarmtune: forward + masked NLL)
  - the same computation in PyTorch (torch.no_grad, float32)
and prints tokens/s, peak RSS and the ratios swarmtune/PyTorch.

Run: meson test -C build --benchmark --suite bench -v   (or: ninja -C build benchmark)
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import ensure_124m, run_json, require  # noqa: E402

SRC = os.environ.get("SW_SOURCE_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD = os.environ.get("SW_BUILD_ROOT", os.path.join(SRC, "build"))
SECONDS = int(os.environ.get("SW_BENCH_SECONDS", "4"))
BATCH, SEQ = 8, 128

TORCH_CHILD = r'''
import json, math, os, resource, sys, time
threads = int(sys.argv[2]); B = int(sys.argv[3]); T = int(sys.argv[4]); seconds = float(sys.argv[5])
import os
# OpenBLAS (which this torch calls for sgemm) sizes its own thread pool from the
# environment when it loads: without this, "1 thread" torch still runs sgemm on
# every core.
os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
os.environ["OMP_NUM_THREADS"] = str(threads)
import torch
torch.set_num_threads(threads)
sys.path.insert(0, sys.argv[6])
import np_gpt2
import numpy as np
cfg, params = np_gpt2.load_model(sys.argv[1])
def W(name):
    return torch.from_numpy(np.ascontiguousarray(params[name], dtype=np.float32))
L, H, C, V = cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["vocab_size"]
eps = cfg.get("layer_norm_epsilon", 1e-5)
wte, wpe = W("wte.weight"), W("wpe.weight")
layers = []
for l in range(L):
    p = f"h.{l}."
    layers.append({k: W(p + k) for k in ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
        "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight",
        "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]})
lnf_w, lnf_b = W("ln_f.weight"), W("ln_f.bias")
F = torch.nn.functional
x_state = 12345
ids = []
for i in range(B * T):
    x_state = (x_state * 1664525 + 1013904223) % (1 << 32)
    ids.append((x_state >> 8) % V)
tokens = torch.tensor(ids, dtype=torch.long).view(B, T)
causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
def forward(tokens):
    x = wte[tokens] + wpe[:T]
    for p in layers:
        h = F.layer_norm(x, (C,), p["ln_1.weight"], p["ln_1.bias"], eps)
        qkv = h @ p["attn.c_attn.weight"] + p["attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, H, C // H).transpose(1, 2)
        k = k.view(B, T, H, C // H).transpose(1, 2)
        v = v.view(B, T, H, C // H).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))
        att = torch.softmax(att.masked_fill(causal, float("-inf")), dim=-1)
        a = att @ v
        a = a.transpose(1, 2).reshape(B, T, C)
        x = x + a @ p["attn.c_proj.weight"] + p["attn.c_proj.bias"]
        h = F.layer_norm(x, (C,), p["ln_2.weight"], p["ln_2.bias"], eps)
        h = F.gelu(h @ p["mlp.c_fc.weight"] + p["mlp.c_fc.bias"], approximate="tanh")
        x = x + h @ p["mlp.c_proj.weight"] + p["mlp.c_proj.bias"]
    x = F.layer_norm(x, (C,), lnf_w, lnf_b, eps)
    logits = x[:, :-1] @ wte.T
    return F.cross_entropy(logits.reshape(-1, V), tokens[:, 1:].reshape(-1))
with torch.no_grad():
    loss = forward(tokens)
    iters = 0
    t0 = time.monotonic(); t1 = t0
    while t1 - t0 < seconds or iters < 2:
        loss = forward(tokens)
        iters += 1
        t1 = time.monotonic()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"tokens_per_s": iters * B * T / (t1 - t0), "peak_rss_mb": rss, "loss": float(loss)}))
'''


def main():
    require("bench forward", modules=("torch", "numpy"), tools=())
    models = [("fixture 7.3M", os.path.join(SRC, "models", "tiny-gpt2-fortunes")),
              ("gpt2-124M", ensure_124m(BUILD))]
    env = dict(os.environ)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        child = os.path.join(tmp, "torch_child.py")
        with open(child, "w") as fh:
            fh.write(TORCH_CHILD)
        for label, path in models:
            for threads in (1, 2):
                ours = run_json([os.path.join(BUILD, "tests", "bench", "bench_forward"), path,
                                 "--threads", str(threads), "--batch", str(BATCH), "--seq", str(SEQ),
                                 "--seconds", str(SECONDS)], "bench_forward", env=env)
                theirs = run_json(["/usr/bin/python3", child, path, str(threads), str(BATCH),
                                   str(SEQ), str(SECONDS), os.path.join(SRC, "tests", "ref")], "bench_forward", env=env)
                rows.append((label, threads, ours, theirs))
    print(f"forward pass, batch {BATCH} x {SEQ} tokens, {SECONDS} s per configuration")
    print(f"{'model':<14} {'thr':>3} {'swarmtune tok/s':>16} {'torch tok/s':>12} {'speed ratio':>11} "
          f"{'swarmtune RSS MB':>17} {'torch RSS MB':>13} {'RSS ratio':>9}")
    for label, threads, ours, theirs in rows:
        print(f"{label:<14} {threads:>3} {ours['tokens_per_s']:>16.0f} {theirs['tokens_per_s']:>12.0f} "
              f"{ours['tokens_per_s'] / theirs['tokens_per_s']:>11.2f} {ours['peak_rss_mb']:>17.0f} "
              f"{theirs['peak_rss_mb']:>13.0f} {ours['peak_rss_mb'] / theirs['peak_rss_mb']:>9.2f}")
    for label in dict.fromkeys(r[0] for r in rows):
        one = next(r for r in rows if r[0] == label and r[1] == 1)
        two = next(r for r in rows if r[0] == label and r[1] == 2)
        print(f"{label}: 2 threads / 1 thread = {two[2]['tokens_per_s'] / one[2]['tokens_per_s']:.2f}x (swarmtune), "
              f"{two[3]['tokens_per_s'] / one[3]['tokens_per_s']:.2f}x (torch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

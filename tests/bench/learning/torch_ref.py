#!/usr/bin/python3
"""The learning benchmark's PyTorch references: fine-tunes a GPT-2 directory on a
JSONL task by backpropagation (AdamW, the ceiling) or by MeZO (zeroth-order SPSA,
as the paper's reference does it, in float), and scores the held-out file at fixed
step counts exactly as `swarmctl model eval` does (docs/datasets.md: loss per scored
token; accuracy over the file's distinct completions by total log-probability, a tie
is wrong).

Tokens come from swarmtune's own tokenizer (tests/tok_batch, checked against two
independent encoders by tests/ref/tokenizer_reference.py), so both sides see the
same ids.  One JSON object per scoring goes to stdout:

    {"method": "mezo", "seed": 1, "step": 500, "loss": 1.23, "accuracy": 0.61, ...}

    torch_ref.py --method backprop|mezo|lm --model DIR --train F --test F --steps N
                 --eval-every K [--lr --eps --batch --seq-len --directions --seed
                 --threads --save DIR --trainable REGEX --wte-rows all|labels]

lm is backpropagation on the training file's prompts alone, as text (every token
scored, the completions never seen): continued pretraining on unlabeled text of the
task's kind (models/tiny-gpt2-fortunes-lang/README.md).

Needs SW_BUILD_ROOT (for tests/tok_batch) and SW_SOURCE_ROOT (tests/ref/np_gpt2.py).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--method", choices=["backprop", "mezo", "lm"], required=True)
ap.add_argument("--model", required=True)
ap.add_argument("--train", required=True)
ap.add_argument("--test", required=True)
ap.add_argument("--steps", type=int, required=True)
ap.add_argument("--eval-every", type=int, default=0)
ap.add_argument("--lr", type=float, default=None)
ap.add_argument("--eps", type=float, default=1e-3)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--seq-len", type=int, default=128)
ap.add_argument("--directions", type=int, default=1)
ap.add_argument("--perturbation", choices=["rademacher", "gaussian"], default="rademacher")
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--save", default=None, help="write the final model here (F32)")
ap.add_argument("--trainable", default=None, help="regex over tensor names (h.0.attn.c_attn.weight, wte.weight, ...)")
ap.add_argument("--wte-rows", choices=["all", "labels"], default="all",
                help="labels: only the rows of the completions' tokens of wte move")
args = ap.parse_args()

# OpenBLAS sizes its pool when it loads: set before torch does.
os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
os.environ["OMP_NUM_THREADS"] = str(args.threads)
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(args.threads)
sys.path.insert(0, os.path.join(os.environ["SW_SOURCE_ROOT"], "tests", "ref"))
import np_gpt2  # noqa: E402

F = torch.nn.functional
TOK = os.path.join(os.environ["SW_BUILD_ROOT"], "tests", "tok_batch")


def encode_all(texts):
    inp = "".join(json.dumps(t) + "\n" for t in texts)
    p = subprocess.run([TOK, args.model], input=inp.encode(), capture_output=True, check=True)
    lines = p.stdout.decode().split("\n")
    return [[int(x) for x in line.split()] for line in lines[:len(texts)]]


def read_jsonl(path):
    recs = []
    for line in open(path, encoding="utf-8"):
        if line.strip():
            recs.append(json.loads(line))
    return recs


cfg, npp = np_gpt2.load_model(args.model)
L, H, C = cfg["n_layer"], cfg["n_head"], cfg["n_embd"]
NPOS = cfg["n_positions"]
lneps = cfg.get("layer_norm_epsilon", 1e-5)
names = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
         "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
         "mlp.c_proj.weight", "mlp.c_proj.bias"]
P = {k: torch.tensor(np.ascontiguousarray(v, dtype=np.float32)) for k, v in npp.items()}
del npp
order = ["wte.weight", "wpe.weight"] + [f"h.{i}.{k}" for i in range(L) for k in names] + \
        ["ln_f.weight", "ln_f.bias"]
params = [P[k] for k in order]  # the head is tied to wte


def hidden_states(tokens):
    B, T = tokens.shape
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    x = P["wte.weight"][tokens] + P["wpe.weight"][:T]
    for i in range(L):
        p = lambda k: P[f"h.{i}.{k}"]  # noqa: E731
        h = F.layer_norm(x, (C,), p("ln_1.weight"), p("ln_1.bias"), lneps)
        q, k, v = (h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")).split(C, dim=2)
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))
        att = torch.softmax(att.masked_fill(causal, float("-inf")), dim=-1)
        a = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + a @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        h = F.layer_norm(x, (C,), p("ln_2.weight"), p("ln_2.bias"), lneps)
        h = F.gelu(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"), approximate="tanh")
        x = x + h @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
    return F.layer_norm(x, (C,), P["ln_f.weight"], P["ln_f.bias"], lneps)


def batch_tensors(seqs):
    """seqs: [(ids, first_scored)]: padded tokens and the scored-position mask."""
    T = max(len(ids) for ids, _ in seqs)
    tok = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.bool)
    for b, (ids, first) in enumerate(seqs):
        tok[b, :len(ids)] = torch.tensor(ids)
        mask[b, first:len(ids)] = True
    mask[:, 0] = False
    return tok, mask


def nll(tok, mask):
    """Per scored position: -log p(token | prefix), in mask order (b, t)."""
    x = hidden_states(tok)
    hs = x[:, :-1][mask[:, 1:]]
    logits = hs @ P["wte.weight"].T
    return F.cross_entropy(logits, tok[:, 1:][mask[:, 1:]], reduction="none")


def records(path, max_tokens):
    """[(ids, first_scored, prompt_ids, completion)] as core/dataset.c lays them out."""
    recs = read_jsonl(path)
    prompts = encode_all([r["prompt"] for r in recs])
    comps = encode_all([r["completion"] for r in recs])
    out = []
    for r, p, c in zip(recs, prompts, comps):
        ids = (p + c)[:max_tokens]
        first = max(1, len(p))
        if first < len(ids):
            out.append((ids, first, p, r["completion"]))
    return out


train = records(args.train, args.seq_len)
if args.method == "lm":
    # language modelling on the training file's prompts alone: every token scored,
    # the completions (the labels) never seen
    train = [(p[:args.seq_len], 1) for _, _, p, _ in train if len(p) >= 2]
test = records(args.test, NPOS)
choices = sorted({r[3] for r in test})
choice_ids = dict(zip(choices, encode_all(choices)))
import re as _re  # noqa: E402
sel = [k for k in order if args.trainable is None or _re.search(args.trainable, k)]
params = [P[k] for k in sel]
row_mask = None
if args.wte_rows == "labels":
    rows = sorted({t for ids in choice_ids.values() for t in ids})
    row_mask = torch.zeros(P["wte.weight"].shape[0], 1)
    row_mask[rows] = 1.0
    print(json.dumps({"trainable": sel, "label_rows": rows}), file=sys.stderr)
masks = [row_mask if (k == "wte.weight" and row_mask is not None) else None for k in sel]


def evaluate():
    with torch.no_grad():
        tot, n = 0.0, 0
        for i in range(0, len(test), 64):
            chunk = test[i:i + 64]
            v = nll(*batch_tensors([(ids, first) for ids, first, _, _ in chunk]))
            tot += float(v.double().sum())
            n += v.numel()
        correct = 0
        for i in range(0, len(test), 64):
            chunk = test[i:i + 64]
            seqs, spans = [], []
            for ids, first, p, comp in chunk:
                for c in choices:
                    s = (p + choice_ids[c])[:NPOS]
                    seqs.append((s, max(1, len(p))))
            tok, mask = batch_tensors(seqs)
            v = nll(tok, mask)
            counts = mask[:, 1:].sum(dim=1).tolist()
            sums, k = [], 0
            for cnt in counts:
                sums.append(-float(v[k:k + cnt].double().sum()))
                k += cnt
            for j, (_, _, _, comp) in enumerate(chunk):
                sc = sums[j * len(choices):(j + 1) * len(choices)]
                mine = sc[choices.index(comp)]
                correct += all(mine > s for ci, s in enumerate(sc) if choices[ci] != comp)
        return tot / n, correct / len(test)


rng = np.random.default_rng(args.seed)
perm, pos = rng.permutation(len(train)), 0


def minibatch():
    global perm, pos
    out = []
    for _ in range(args.batch):
        if pos == len(perm):
            perm, pos = rng.permutation(len(train)), 0
        out.append(train[perm[pos]][:2])
        pos += 1
    return batch_tensors(out)


def mean_loss(tok, mask):
    return nll(tok, mask).mean()


def report(step, t0, train_loss):
    loss, acc = evaluate()
    print(json.dumps({"method": args.method, "seed": args.seed, "step": step, "loss": loss,
                      "accuracy": acc, "train_loss": train_loss, "lr": args.lr,
                      "seconds": time.monotonic() - t0}), flush=True)


def run_backprop():
    """AdamW on the task (method backprop) or on the prompts as text (method lm)."""
    lr = args.lr or 1e-4
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if row_mask is not None:
        P["wte.weight"].register_hook(lambda g: g * row_mask)
    t0 = time.monotonic()
    report(0, t0, None)
    for step in range(1, args.steps + 1):
        tok, mask = minibatch()
        opt.zero_grad()
        loss = mean_loss(tok, mask)
        loss.backward()
        opt.step()
        if args.eval_every and step % args.eval_every == 0 or step == args.steps:
            report(step, t0, float(loss))


def direction(gen, p):
    if args.perturbation == "rademacher":
        return torch.randint(0, 2, p.shape, generator=gen, dtype=torch.int8).float() * 2 - 1
    return torch.randn(p.shape, generator=gen)


def directions_of(seed):
    """z for every parameter, drawn once per direction (the four moves reuse it)."""
    gen = torch.Generator().manual_seed(seed)
    return [direction(gen, p) if m is None else direction(gen, p) * m for p, m in zip(params, masks)]


def perturb(zs, scale):
    for p, z in zip(params, zs):
        p.add_(z, alpha=scale)


def run_mezo():
    lr = args.lr or 3e-4
    t0 = time.monotonic()
    report(0, t0, None)
    with torch.no_grad():
        for step in range(1, args.steps + 1):
            tok, mask = minibatch()
            ls = []
            for k in range(args.directions):
                zs = directions_of((args.seed * 1000003 + step) * 64 + k)
                perturb(zs, args.eps)
                lp = float(mean_loss(tok, mask))
                perturb(zs, -2 * args.eps)
                lm = float(mean_loss(tok, mask))
                perturb(zs, args.eps)
                g = (lp - lm) / (2 * args.eps)
                if not math.isfinite(g):
                    g = 0.0
                perturb(zs, -lr * g / args.directions)
                ls.append(0.5 * (lp + lm))
            if args.eval_every and step % args.eval_every == 0 or step == args.steps:
                report(step, t0, sum(ls) / len(ls))


(run_mezo if args.method == "mezo" else run_backprop)()
if args.save:
    os.makedirs(args.save, exist_ok=True)
    out = {k: P[k].detach().numpy() for k in order}
    np_gpt2.save_model(args.save, cfg, out, dtype="F32")

#!/usr/bin/python3
"""The learning benchmark: how much better at a task fine-tuning makes the bundled
model, by method, over seeds.

For one JSONL task (prompt/completion; held-out accuracy is multiple choice over its
distinct completions, docs/datasets.md) it fine-tunes with
  backprop  PyTorch AdamW (the ceiling; tests/bench/learning/torch_ref.py)
  mezo      PyTorch MeZO, float zeroth-order SPSA at swarmd's settings
  swarmd    one swarmd node (fixed-point, one-byte updates)
  swarmN    N swarmd nodes on loopback, each on its shard of the training data,
            at equal total updates (N nodes x steps/N own steps each)
  lora      one swarmd node training LoRA adapters ([train] adapter = lora, the base
            frozen) at --lora-lr, --lora-rank, --lora-alpha
  rows      one swarmd node training only the rows of wte that the completions use
            (trainable = ^wte, trainable_tokens = completions) at --rows-lr
and scores the held-out file at fixed step counts (swarmd: `[data] valid`, the
scorings of its log; a swarm: its first node, at total updates = N x own step).
Every configuration runs over --seeds data orders and identities (origin ids seed
every direction).  Prints, per method and step count, held-out loss and accuracy as
min / median / max, the share of backpropagation's accuracy gain each reaches, the
swarm's speed-up (updates, and steps per node, each swarm needs to reach the solo's
final median loss and accuracy; efficiency = the solo's updates / the swarm's: 1.0 is
a swarm of N needing N times fewer steps per node), and draws the curves to
learning-<task>.png (median, min-max band) beside learning-<task>.json; --report
JSON prints and draws an earlier run's again.

    meson test -C build --benchmark --suite bench learning -v     (the defaults below)
    SW_SOURCE_ROOT=. SW_BUILD_ROOT=build /usr/bin/python3 tests/bench/learning/run.py \\
        --task lang --steps 3000 --seeds 5 --methods backprop,mezo,swarmd,swarm2

Needs PyTorch and matplotlib (deploy/install-deps.sh bench).  Runs two jobs at a
time (one thread each; results do not depend on threads), a swarm alone.
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Absolute: the nodes' configs sit in their own directories.
SOURCE = os.path.abspath(os.environ.get("SW_SOURCE_ROOT", os.path.join(HERE, "..", "..", "..")))
BUILD = os.path.abspath(os.environ.get("SW_BUILD_ROOT", os.path.join(SOURCE, "build")))
os.environ.update(SW_SOURCE_ROOT=SOURCE, SW_BUILD_ROOT=BUILD)
sys.path.insert(0, os.path.join(SOURCE, "tests", "ref"))
import nodeutil as nu  # noqa: E402

TASKS = {
    "lang": ("lang-train.jsonl", "lang-test.jsonl"),
    "topic": ("topic-train.jsonl", "topic-test.jsonl"),
}

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--task", default="lang", choices=sorted(TASKS))
ap.add_argument("--model", default=None, help="the base model directory (default: the bundled one)")
ap.add_argument("--steps", type=int, default=3000, help="total updates (per-direction steps)")
ap.add_argument("--eval-every", type=int, default=500)
ap.add_argument("--seeds", type=int, default=5)
ap.add_argument("--methods", default="backprop,mezo,swarmd,swarm2,swarm3,swarm4")
ap.add_argument("--lr", type=float, default=3e-4, help="zeroth-order learning rate")
ap.add_argument("--eps", type=float, default=1e-3)
ap.add_argument("--backprop-lr", type=float, default=3e-4)
ap.add_argument("--backprop-steps", type=int, default=500)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--seq-len", type=int, default=128)
ap.add_argument("--jobs", type=int, default=2)
ap.add_argument("--out", default=os.path.join(BUILD, "learning"))
ap.add_argument("--train-extra", default="", help="extra [train] keys for swarmd: k=v,k=v")
ap.add_argument("--lora-lr", type=float, default=1e-2, help="learning rate of the lora method")
ap.add_argument("--lora-rank", type=int, default=8)
ap.add_argument("--lora-alpha", type=float, default=16)
ap.add_argument("--rows-lr", type=float, default=1e-3, help="learning rate of the rows method")
ap.add_argument("--report", default=None, metavar="JSON",
                help="print and draw the figures of an earlier run's learning-<task>.json")
args = ap.parse_args()

MODEL = os.path.abspath(args.model) if args.model else nu.FIXTURE_MODEL
TRAIN = os.path.join(nu.DATA, TASKS[args.task][0])
TEST = os.path.join(nu.DATA, TASKS[args.task][1])
os.makedirs(args.out, exist_ok=True)


def nodes_of(method):
    """swarmd, lora and rows: 1, swarmN: N, a PyTorch method: None."""
    if method in ("swarmd", "lora", "rows"):
        return 1
    return int(method[5:]) if method.startswith("swarm") else None


def torch_job(method, seed):
    steps = args.backprop_steps if method == "backprop" else args.steps
    every = max(1, steps // 10) if method == "backprop" else args.eval_every
    lr = args.backprop_lr if method == "backprop" else args.lr
    cmd = ["/usr/bin/python3", os.path.join(HERE, "torch_ref.py"), "--method", method,
           "--model", MODEL, "--train", TRAIN, "--test", TEST, "--steps", str(steps),
           "--eval-every", str(every), "--lr", str(lr), "--eps", str(args.eps),
           "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--seed", str(seed)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    if p.returncode != 0:
        raise RuntimeError(f"{method} seed {seed}: {p.stderr[-2000:]}")
    return [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


def swarmd_config(root, k, n, seed, data, every, bootstrap, method):
    lr = {"lora": args.lora_lr, "rows": args.rows_lr}.get(method, args.lr)
    cfg = nu.swarm_config(os.path.join(root, f"n{k}", "state"), bootstrap, data,
                          max_steps=args.steps // n, lr=lr, eps=args.eps,
                          batch_size=args.batch, seq_len=args.seq_len, seed=seed * 100 + k,
                          threads=1)
    # The shipped heartbeat and batching, not the fast ones of the tests.
    for key in ("heartbeat_ms", "batch_max_ms"):
        del cfg["node"][key]
    cfg["node"].update({"progress_ms": 0, "checkpoint_every": 0})
    cfg["model"]["path"] = MODEL
    cfg["data"]["valid"] = TEST
    cfg["train"]["eval_every"] = every
    if method == "lora":
        cfg["train"].update(adapter="lora", lora_rank=args.lora_rank, lora_alpha=args.lora_alpha)
    if method == "rows":
        cfg["train"].update(trainable="^wte", trainable_tokens="completions")
    for kv in filter(None, args.train_extra.split(",")):
        key, val = kv.split("=", 1)
        cfg["train"][key] = val
    return cfg


def swarm_job(n, seed, name):
    """n swarmd nodes (n = 1: solo); the first node's scorings, at total updates."""
    root = tempfile.mkdtemp(prefix=f"sw_learn_{n}_{seed}_", dir=args.out)
    shards = nu.shard(TRAIN, n, root) if n > 1 else [TRAIN]
    every = max(1, args.eval_every // n)
    procs, logs = [], []
    founder_sync = None
    try:
        for k in range(n):
            cfg = swarmd_config(root, k, n, seed, shards[k], every, founder_sync if k else "",
                                name)
            if k == 0:
                founder_sync = nu.sync_addr(cfg)
            d = os.path.join(root, f"n{k}")
            os.makedirs(d, exist_ok=True)
            key, _ = nu.write_identity(os.path.join(d, "id.key"), f"learn-{args.task}-{seed}-{k}")
            cfg["node"]["identity"] = key
            ini = nu.write_config(os.path.join(d, "swarmd.ini"), cfg)
            log = os.path.join(d, "swarmd.log")
            logs.append(log)
            with open(log, "wb") as lf:
                procs.append(subprocess.Popen([nu.SWARMD, "--config", ini, "--until-done"],
                                              stdin=subprocess.DEVNULL, stdout=lf, stderr=lf))
            if k == 0 and n > 1:
                time.sleep(1.0)  # the founder writes the run spec the others adopt
        for p in procs:
            rc = p.wait(timeout=7200)
            if rc != 0:
                raise RuntimeError(f"swarm{n} seed {seed}: a node exited {rc}: "
                                   + open(logs[procs.index(p)]).read()[-1500:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    with open(logs[0], errors="replace") as f:
        pts = nu.validations(f.read())
    shutil.rmtree(root, ignore_errors=True)
    return [{"method": name, "seed": seed, "step": int(v["step"]) * n, "loss": float(v["loss"]),
             "accuracy": None if v["accuracy"] == "none" else float(v["accuracy"])} for v in pts]


def job(method, seed):
    t0 = time.monotonic()
    n = nodes_of(method)
    pts = torch_job(method, seed) if n is None else swarm_job(n, seed, method)
    print(f"  {method} seed {seed}: {len(pts)} scorings, {time.monotonic() - t0:.0f} s, final "
          f"loss {pts[-1]['loss']:.3f} accuracy {pts[-1]['accuracy']}", flush=True)
    return pts


def spread(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return "-"
    return f"{xs[0]:.3f} / {statistics.median(xs):.3f} / {xs[-1]:.3f}"


def main():
    methods = [m for m in args.methods.split(",") if m]
    seeds = list(range(1, args.seeds + 1))
    t0 = time.monotonic()
    if args.report:
        saved = json.load(open(args.report))
        args.task = saved["args"]["task"]
        print(f"learning benchmark: the figures of {args.report}")
        report(saved["results"], [m for m in saved["args"]["methods"].split(",") if m])
        return 0
    print(f"learning benchmark: task {args.task} ({os.path.basename(TRAIN)} -> "
          f"{os.path.basename(TEST)}), {args.steps} updates, lr {args.lr:g}, eps {args.eps:g}, "
          f"batch {args.batch}, seeds {seeds}, methods {methods}", flush=True)
    # Each finished job is saved at once; a rerun with the same settings keeps what
    # the file already holds for a (method, seed) and runs only the rest.
    path = os.path.join(args.out, f"learning-{args.task}.json")
    settings = {k: v for k, v in vars(args).items() if k not in ("methods", "seeds", "jobs",
                                                                  "out", "report")}
    results = []
    if os.path.exists(path):
        saved = json.load(open(path))
        if {k: saved["args"].get(k) for k in settings} == settings:
            results = saved["results"]
            print(f"  kept from {path}: {sorted({(r['method'], r['seed']) for r in results})}")
    done = {(r["method"], r["seed"]) for r in results}
    lock = threading.Lock()

    def run(ms):
        pts = job(*ms)
        with lock:
            results.extend(pts)
            kept = sorted({r["method"] for r in results} | set(methods))
            with open(path + ".tmp", "w") as f:
                json.dump({"args": dict(vars(args), methods=",".join(kept)),
                           "results": results}, f, indent=1)
            os.replace(path + ".tmp", path)

    todo = [(m, s) for m in methods for s in seeds if (m, s) not in done]
    alone = [(m, s) for m, s in todo if (nodes_of(m) or 0) > 1]
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as ex:
        list(ex.map(run, [ms for ms in todo if ms not in alone]))
    for ms in alone:
        run(ms)
    results = [r for r in results if r["method"] in methods and r["seed"] in seeds]
    report(results, methods)
    print(f"\n{time.monotonic() - t0:.0f} s in all; figures: {args.out}")
    return 0


def updates_to(pts, key, target, better):
    """The first update count at which pts (sorted by step) reach target, linearly
    interpolated between two scorings; None if they never do."""
    prev = None
    for r in pts:
        v = r[key]
        if v is not None and better(v, target):
            if prev is None or prev[key] is None:
                return r["step"]
            f = (prev[key] - target) / (prev[key] - v) if prev[key] != v else 1.0
            return prev["step"] + f * (r["step"] - prev["step"])
        prev = r
    return None


def speedup(by, methods):
    """The swarm's promise: updates (all nodes') to reach the solo's final median
    loss and accuracy, per node and against the solo."""
    if "swarmd" not in by:
        return
    final = by["swarmd"][max(by["swarmd"])]
    targets = [("loss", statistics.median(r["loss"] for r in final), lambda v, t: v <= t)]
    accs = [r["accuracy"] for r in final if r["accuracy"] is not None]
    if accs:
        targets.append(("accuracy", statistics.median(accs), lambda v, t: v >= t))
    start = by["swarmd"].get(0, [])
    for key, target, better in targets:
        first = [r[key] for r in start if r[key] is not None]
        base = statistics.median(first) if first else None
        if base is not None and (target == base or not better(target, base)):
            print(f"\nthe solo's final median {key} {target:.3f} is no better than the base's: "
                  "no speed-up to measure")
            continue
        print(f"\nto the solo's final median {key} {target:.3f} ({max(by['swarmd'])} updates):")
        solo = None
        swarms = (m for m in methods if m in by and m.startswith("swarm"))
        for m in sorted(swarms, key=nodes_of):
            n = nodes_of(m)
            per_seed = {}
            for step in sorted(by[m]):
                for r in by[m][step]:
                    per_seed.setdefault(r["seed"], []).append(r)
            got = [updates_to(sorted(v, key=lambda r: r["step"]), key, target, better)
                   for v in per_seed.values()]
            reached = sorted(u for u in got if u is not None)
            if not reached:
                print(f"  {m:10} not reached by any of {len(got)} seeds")
                continue
            med = statistics.median(reached)
            if m == "swarmd":
                solo = med
            eff = f", efficiency {solo / med:.2f}" if solo else ""
            print(f"  {m:10} {len(reached)}/{len(got)} seeds; updates {reached[0]:.0f} / {med:.0f} / "
                  f"{reached[-1]:.0f}; steps per node {med / n:.0f} (median){eff}")


def report(results, methods):
    by = {}
    for r in results:
        by.setdefault(r["method"], {}).setdefault(r["step"], []).append(r)
    base = statistics.median(r["accuracy"] for r in results if r["step"] == 0) if any(
        r["step"] == 0 for r in results) else None
    print(f"\n{'method':10} {'updates':>8}  {'loss min / median / max':>26}  "
          f"{'accuracy min / median / max':>28}")
    for m in methods:
        for step in sorted(by.get(m, {})):
            rs = by[m][step]
            print(f"{m:10} {step:8d}  {spread([r['loss'] for r in rs]):>26}  "
                  f"{spread([r['accuracy'] for r in rs]):>28}  ({len(rs)} seeds)")
    if "backprop" in by and base is not None:
        bp_final = statistics.median(r["accuracy"] for r in by["backprop"][max(by["backprop"])])
        gain = bp_final - base
        print(f"\nbase accuracy {base:.3f}; backprop {bp_final:.3f} (median, "
              f"{max(by['backprop'])} steps): gain {gain:+.3f}")
        for m in methods:
            if m == "backprop" or m not in by:
                continue
            fin = statistics.median(r["accuracy"] for r in by[m][max(by[m])])
            share = (fin - base) / gain if gain > 0 else float("nan")
            print(f"  {m:10} median {fin:.3f} at {max(by[m])} updates: {100 * share:.0f}% of "
                  "backprop's gain")
    speedup(by, methods)
    plot(by, methods, base)


def plot(by, methods, base):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for m in methods:
        if m not in by:
            continue
        steps = sorted(by[m])
        for i, key in enumerate(("accuracy", "loss")):
            vals = [[r[key] for r in by[m][s] if r[key] is not None] for s in steps]
            med = [statistics.median(v) for v in vals]
            n = len({r["seed"] for s in steps for r in by[m][s]})
            line, = ax[i].plot(steps, med, marker="o", ms=3, label=f"{m} ({n} seeds)")
            ax[i].fill_between(steps, [min(v) for v in vals], [max(v) for v in vals],
                               color=line.get_color(), alpha=0.15)
    ax[0].axhline(0.25, color="grey", ls=":", lw=1, label="chance")
    ax[0].set_ylabel("held-out accuracy")
    ax[1].set_ylabel("held-out loss (nats/token)")
    ax[1].set_yscale("log")
    for a in ax:
        a.set_xlabel("updates (steps x directions; a swarm: all nodes')")
        a.grid(alpha=0.3)
    ax[0].legend(fontsize=8)
    fig.suptitle(f"{args.task}: held-out scores, median and min-max over seeds")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, f"learning-{args.task}.png"), dpi=110)


if __name__ == "__main__":
    sys.exit(main())

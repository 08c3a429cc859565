"""eval_reference: `swarmctl model eval` against an independent evaluation in NumPy.

The reference reads the JSONL with Python's json module, tokenizes with our
tokenizer through tests/tok_batch (the tokenizer has its own reference check),
runs the float64 GPT-2 of np_gpt2.py, and applies the rules of
docs/datasets.md on its own: text records score positions 1..n-1,
prompt/completion records score the completion's tokens, everything is cut to
n_positions tokens, records with nothing to score are dropped, and a record is
correct when its own completion's total log-probability is strictly greater
than every other distinct completion's.

Data: the fixture's task-test.jsonl (loss) and topic-test.jsonl (loss and
accuracy), plus two files written here from the fixture's text that exercise
truncation, dropped records, empty prompts and multi-token candidates cut by
the context.  For each: identical record, token, dropped and truncated
counts, |loss - ref| <= 1e-4 * ref, identical number of correct records.
Exits non-zero on any mismatch.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import np_gpt2  # noqa: E402

BUILD = os.environ.get("SW_BUILD_ROOT", "build")
SOURCE = os.environ.get("SW_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.environ.get("SW_MODEL_DIR", os.path.join(SOURCE, "models", "tiny-gpt2-fortunes"))
DATA = os.environ.get("SW_DATA_DIR", os.path.join(SOURCE, "data"))
SWARMCTL = os.path.join(BUILD, "cli", "swarmctl")
TOK_BATCH = os.path.join(BUILD, "tests", "tok_batch")
LOSS_RTOL = 1e-4
MAX_CHOICES = 64  # SW_EVAL_MAX_CHOICES

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def read_jsonl(path):
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip(" \t\r\n") == "":
                continue
            records.append(json.loads(line))
    return records


def encode_all(strings):
    """Token ids of each string, through tok_batch (one JSON string per line)."""
    inp = "".join(json.dumps(s) + "\n" for s in strings)
    out = subprocess.run([TOK_BATCH, MODEL], input=inp.encode(), stdout=subprocess.PIPE,
                         check=True).stdout.decode()
    lines = out.split("\n")[:len(strings)]
    assert len(lines) == len(strings), "tok_batch printed too few lines"
    return [[int(x) for x in ln.split()] for ln in lines]


class Reference:
    def __init__(self):
        self.cfg, self.params = np_gpt2.load_model(MODEL)
        self.cache = {}

    def logprob(self, seq, first):
        """Sum of log p(seq[t] | seq[:t]) over t in first..len-1."""
        if len(seq) <= first:
            return 0.0
        # Rows first-1..len-2 of the logits depend only on seq[:len-1] (causal).
        key = tuple(seq[:-1])
        if key not in self.cache:
            logits = np_gpt2.forward(self.cfg, self.params, list(key))
            m = logits.max(axis=-1, keepdims=True)
            self.cache[key] = logits - (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))
        lp = self.cache[key]
        return float(sum(lp[t - 1, seq[t]] for t in range(first, len(seq))))

    def evaluate(self, path):
        P = self.cfg["n_positions"]
        recs = read_jsonl(path)
        strings = []
        for r in recs:
            strings += [r["text"]] if "text" in r else [r["prompt"], r["completion"]]
        ids = iter(encode_all(strings))
        comps = {}  # completion string -> tokens, in order of first appearance
        kept = []   # (tokens, first, prompt tokens or None, completion string or None)
        dropped = truncated = 0
        for r in recs:
            if "text" in r:
                full, first, prompt, comp = next(ids), 1, None, None
            else:
                prompt, ctoks = next(ids), next(ids)
                comp = r["completion"]
                comps.setdefault(comp, ctoks)
                full, first = prompt + ctoks, max(1, len(prompt))
            toks = full[:P]
            if len(toks) <= first:
                dropped += 1
                continue
            truncated += len(full) > P
            kept.append((toks, first, prompt, comp))
        total, tokens = 0.0, 0
        for toks, first, _, _ in kept:
            total -= self.logprob(toks, first)
            tokens += len(toks) - first
        res = {"loss": total / tokens, "tokens": tokens, "records": len(kept),
               "dropped": dropped, "truncated": truncated}
        if all("text" not in r for r in recs) and 2 <= len(comps) <= MAX_CHOICES:
            correct, margin = 0, math.inf
            for toks, first, prompt, comp in kept:
                scores = {c: self.logprob((prompt + ct)[:P], first) for c, ct in comps.items()}
                other = max(s for c, s in scores.items() if c != comp)
                correct += scores[comp] > other
                margin = min(margin, abs(scores[comp] - other))
            res.update(correct=correct, accuracy=correct / len(kept), choices=len(comps),
                       margin=margin)
        return res


def swarmctl_eval(path, batch):
    out = subprocess.run([SWARMCTL, "model", "eval", "--model", MODEL, "--data", path,
                          "--json", "--batch", str(batch)],
                         stdout=subprocess.PIPE, check=True).stdout
    return json.loads(out)


def compare(ref, name, path, batch):
    t0 = time.time()
    want = ref.evaluate(path)
    t1 = time.time()
    got = swarmctl_eval(path, batch)
    print(f"{name}: reference {t1 - t0:.1f} s; ref loss {want['loss']:.6f} "
          f"ours {got['loss']:.6f}, tokens {want['tokens']}, records {want['records']}, "
          f"dropped {want['dropped']}, truncated {want['truncated']}"
          + (f", correct {want['correct']}/{want['records']} (smallest margin "
             f"{want['margin']:.2e})" if "correct" in want else ""))
    for key in ("tokens", "records", "dropped", "truncated"):
        check(got.get(key) == want[key], f"{name}: {key} {got.get(key)} == {want[key]}")
    rel = abs(got["loss"] - want["loss"]) / want["loss"]
    check(rel <= LOSS_RTOL, f"{name}: loss relative difference {rel:.2e} <= {LOSS_RTOL}")
    check(abs(got["perplexity"] - math.exp(got["loss"])) <= 1e-9 * got["perplexity"],
          f"{name}: perplexity == exp(loss)")
    if "correct" in want:
        check(got.get("correct") == want["correct"] and got.get("choices") == want["choices"],
              f"{name}: correct {got.get('correct')} == {want['correct']}, "
              f"choices {got.get('choices')} == {want['choices']}")
        check(got.get("accuracy") == want["accuracy"],
              f"{name}: accuracy {got.get('accuracy')} == {want['accuracy']}")
    else:
        check("accuracy" not in got, f"{name}: no accuracy reported")


def synthetic_files(tmp):
    """Text and multiple-choice files that run into the 256-token context."""
    texts = [r["text"] for r in read_jsonl(os.path.join(DATA, "base-val.jsonl"))]
    long_text = "\n\n".join(texts[:12])        # several hundred tokens: cut to 256
    mixed = [
        {"text": long_text},
        {"text": texts[20]},
        {"text": "Hello"},                      # one token: dropped
        {"text": ""},                           # dropped
        {"prompt": texts[21] + "\nAnswer:", "completion": " yes, of course"},
        {"prompt": "", "completion": " " + texts[22]},
        {"prompt": texts[23], "completion": ""},  # dropped
        {"prompt": long_text, "completion": " never scored"},  # prompt fills the context
        {"prompt": texts[24], "completion": " \u00e9t\u00e9 \u2014 caf\u00e9 \U0001F600",
         "id": 7},
    ]
    # Prompts of about 252 tokens leave room for only part of the longer candidates.
    cut = "\n\n".join(texts[40:80])
    enc = encode_all([cut + "\nTopic 0:"])[0]
    while len(enc) > 252:
        cut = cut[:int(len(cut) * 252 / len(enc)) - 1]
        enc = encode_all([cut + "\nTopic 0:"])[0]
    choices = [" food", " love and marriage", " sports, games and other pastimes",
               " science"]
    mc = []
    for i, t in enumerate(texts[30:36]):
        mc.append({"prompt": t + "\nTopic:", "completion": choices[i % 4]})
    for i in range(2):
        mc.append({"prompt": cut + f"\nTopic {i}:", "completion": choices[i + 1]})
    files = []
    for name, recs in (("mixed", mixed), ("choices", mc)):
        path = os.path.join(tmp, name + ".jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
        files.append((name, path))
    return files


def main():
    start = time.time()
    ref = Reference()
    tmp = tempfile.mkdtemp(prefix="sw_eval_ref_")
    try:
        compare(ref, "task-test", os.path.join(DATA, "task-test.jsonl"), 8)
        compare(ref, "topic-test", os.path.join(DATA, "topic-test.jsonl"), 5)
        for name, path in synthetic_files(tmp):
            compare(ref, name, path, 3)
    finally:
        shutil.rmtree(tmp)
    print(f"eval_reference: {time.time() - start:.1f} s, "
          f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

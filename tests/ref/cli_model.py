#!/usr/bin/python3
"""Drives the real swarmctl binary through every `model` verb.

Checks help texts, init -> inspect against the parameter formula, convert to
F16 against NumPy's own float16 rounding (and F16 -> F32 -> F16 byte
identity), tokenize round trips, eval and generate sanity and determinism,
and that errors exit with the documented code and name the offending input.
Exits non-zero on any failure.
"""
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

BUILD = os.environ.get("SW_BUILD_ROOT", "build")
SOURCE = os.environ.get("SW_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.environ.get("SW_DATA_DIR", os.path.join(SOURCE, "data"))
SWARMCTL = os.path.join(BUILD, "cli", "swarmctl")
FIXTURE_MODEL = os.environ.get("SW_MODEL_DIR", os.path.join(SOURCE, "models", "tiny-gpt2-fortunes"))
TOPIC_TEST = os.path.join(DATA, "topic-test.jsonl")
TASK_TEST = os.path.join(DATA, "task-test.jsonl")

passed = 0
failed = 0
TMP = "/nonexistent"


def label(args):
    """The command as typed, with the long fixture and temporary paths shortened."""
    text = " ".join(a if a and " " not in a else repr(a) for a in args)
    text = text.replace(FIXTURE_MODEL, "$MODEL").replace(DATA, "$DATA").replace(TMP, "$TMP")
    return text if len(text) <= 100 else text[:60] + " ... " + text[-35:]


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok    {what}")
    else:
        failed += 1
        print(f"FAIL  {what}")
    return cond


def run(*args, stdin=b""):
    p = subprocess.run([SWARMCTL, *args], input=stdin, capture_output=True, timeout=120)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def run_ok(*args, stdin=b""):
    rc, out, err = run(*args, stdin=stdin)
    if not check(rc == 0, f"swarmctl {label(args)}: exit 0"):
        print(err)
    return out


def expect_error(args, code, names, stdin=b""):
    """The command fails with `code`, and stderr names each of `names`."""
    rc, out, err = run(*args, stdin=stdin)
    what = label(args)
    check(rc == code, f"{what}: exit {rc} == {code}")
    check(err.startswith("swarmctl: "), f"{what}: stderr starts with 'swarmctl: '")
    for n in names:
        check(n in err, f"{what}: stderr names {label([n])}")
    check(out == b"", f"{what}: nothing on stdout")
    if rc != code or any(n not in err for n in names):
        print("  stderr:", err.strip())


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    header.pop("__metadata__", None)
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        dt = {"F32": np.float32, "F16": np.float16}[info["dtype"]]
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[base + a:base + b], dtype=dt).reshape(info["shape"])
    return out


def param_formula(L, C, T, V, tied=True):
    return V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C + (0 if tied else V * C)


def inspect_json(d):
    out = run_ok("model", "inspect", d, "--json")
    try:
        return json.loads(out)
    except ValueError:
        check(False, f"inspect {d} --json prints JSON")
        return {}


def test_help():
    check(run_ok("--help").startswith(b"Usage"), "swarmctl --help prints usage")
    top = run_ok("model", "--help")
    check(top.startswith(b"Usage"), "swarmctl model --help prints usage")
    for verb in ["init", "inspect", "tokenize", "eval", "generate", "convert"]:
        check(verb.encode() in top, f"model --help lists {verb}")
        for flag in ["--help", "-h"]:
            rc, out, err = run("model", verb, flag)
            check(rc == 0 and out.startswith(b"Usage: swarmctl model " + verb.encode()) and
                  err == "", f"model {verb} {flag}: exit 0, usage on stdout")
    check(run_ok("--version").startswith(b"swarmctl "), "swarmctl --version")


def test_init_inspect_convert(tmp):
    L, H, C, T, V = 2, 2, 32, 48, 50257
    m1 = os.path.join(tmp, "new", "m1")   # parent does not exist yet
    arch = ["--layers", str(L), "--heads", str(H), "--embd", str(C), "--ctx", str(T),
            "--vocab", str(V)]
    run_ok("model", "init", m1, *arch, "--seed", "5", "--tokenizer", FIXTURE_MODEL)
    j = inspect_json(m1)
    for key, want in [("layers", L), ("heads", H), ("embd", C), ("ctx", T), ("vocab", V),
                      ("tied", True)]:
        check(j.get(key) == want, f"inspect: {key} {j.get(key)} == {want}")
    want_params = param_formula(L, C, T, V)
    check(j.get("params") == want_params, f"inspect: params {j.get('params')} == formula "
          f"{want_params}")
    numel = sum(int(np.prod(t["shape"])) for t in j.get("tensors", []))
    check(numel == want_params, f"inspect: tensor shapes add up to {numel} == {want_params}")
    check(len(j.get("tensors", [])) == 4 + 12 * L, "inspect: 4 + 12 L tensors")
    check(all(t["dtype"] == "F32" for t in j.get("tensors", [])), "inspect: init wrote F32")
    check(set(j.get("tokenizer", {}).get("files", [])) == {"vocab.json", "merges.txt"},
          "inspect: tokenizer files copied by init --tokenizer")
    check(re.fullmatch(r"[0-9a-f]{64}", j.get("digest", "")) is not None, "inspect: 64-hex digest")
    human = run_ok("model", "inspect", m1).decode()
    check(j["digest"] in human and "wte.weight" in human, "inspect (text) shows digest, tensors")

    # The same seed gives the same model, another seed another.
    m1b = os.path.join(tmp, "m1b")
    m1c = os.path.join(tmp, "m1c")
    run_ok("model", "init", m1b, *arch, "--seed", "5")
    run_ok("model", "init", m1c, *arch, "--seed", "6")
    check(inspect_json(m1b).get("digest") == j["digest"], "init: same seed, same digest")
    check(inspect_json(m1c).get("digest") != j["digest"], "init: other seed, other digest")
    w = read_safetensors(os.path.join(m1, "model.safetensors"))
    std = float(np.std(w["wte.weight"]))
    check(abs(std - 0.02) < 0.002, f"init: wte std {std:.4f} ~ 0.02")
    check(np.all(w["h.0.ln_1.weight"] == 1) and np.all(w["h.1.mlp.c_fc.bias"] == 0),
          "init: unit layer-norm gains, zero biases")

    # Refusals.
    expect_error(["model", "init", m1b, *arch], 1, [os.path.join(m1b, "model.safetensors"),
                                                    "--force"])
    run_ok("model", "init", m1b, *arch, "--seed", "9", "--force")
    expect_error(["model", "init", os.path.join(tmp, "small"), "--layers", "1", "--heads", "1",
                  "--embd", "8", "--ctx", "8", "--vocab", "1000", "--tokenizer", FIXTURE_MODEL],
                 1, [FIXTURE_MODEL, "50257", "1000"])
    check(not os.path.exists(os.path.join(tmp, "small")), "init: nothing written when refused")
    expect_error(["model", "init", os.path.join(tmp, "bad"), "--layers", "1", "--heads", "3",
                  "--embd", "32", "--ctx", "8", "--vocab", "10"], 2, ["--heads", "--embd"])
    expect_error(["model", "init", os.path.join(tmp, "bad"), "--layers", "1", "--heads", "1",
                  "--embd", "8", "--ctx", "8"], 2, ["--vocab"])
    expect_error(["model", "init", os.path.join(tmp, "bad"), *arch, "--dtype", "bf16"], 2,
                 ["--dtype", "bf16"])

    # convert to F16: the stored values are NumPy's own round-to-nearest-even of the F32 weights.
    with open(os.path.join(m1, "README.md"), "w") as f:
        f.write("a test model\n")
    with open(os.path.join(m1, "LICENSE"), "w") as f:
        f.write("MIT\n")
    with open(os.path.join(m1, "notes.txt"), "w") as f:
        f.write("not copied\n")
    h1 = os.path.join(tmp, "h1")
    out = run_ok("model", "convert", m1, h1, "--dtype", "f16").decode()
    jh = inspect_json(h1)
    for key in ["layers", "heads", "embd", "ctx", "vocab", "tied", "params"]:
        check(jh.get(key) == j.get(key), f"convert f16: {key} unchanged")
    check(all(t["dtype"] == "F16" for t in jh.get("tensors", [])), "convert f16: tensors are F16")
    check(jh.get("digest") in out, "convert prints the digest inspect reports")
    check(jh.get("digest") != j["digest"], "convert f16: rounding changes the digest")
    wh = read_safetensors(os.path.join(h1, "model.safetensors"))
    same = all(np.array_equal(wh[n].view(np.uint16), w[n].astype(np.float16).view(np.uint16))
               for n in w)
    check(same and set(wh) == set(w), "convert f16: every value == numpy float16 rounding")
    for name in ["vocab.json", "merges.txt", "README.md", "LICENSE"]:
        check(os.path.isfile(os.path.join(h1, name)), f"convert copies {name}")
    check(not os.path.exists(os.path.join(h1, "notes.txt")), "convert leaves other files")

    # F16 -> F32 is exact (same digest), and back to F16 is byte-identical.
    f2 = os.path.join(tmp, "f2")
    h2 = os.path.join(tmp, "h2")
    run_ok("model", "convert", h1, f2)
    check(inspect_json(f2).get("digest") == jh.get("digest"), "convert f16 -> f32: same digest")
    run_ok("model", "convert", f2, h2, "--dtype", "f16")
    with open(os.path.join(h1, "model.safetensors"), "rb") as a, \
            open(os.path.join(h2, "model.safetensors"), "rb") as b:
        check(a.read() == b.read(), "convert f16 -> f32 -> f16: byte-identical safetensors")
    expect_error(["model", "convert", m1, h2], 1, [os.path.join(h2, "model.safetensors")])
    expect_error(["model", "convert", m1, os.path.join(tmp, "x"), "--dtype", "f8"], 2,
                 ["--dtype", "f8"])
    expect_error(["model", "convert", m1], 2, ["SRC_DIR OUT_DIR"])

    # The fixture (F32, as trained) converts losslessly to F32.
    fx = os.path.join(tmp, "fixture-f32")
    run_ok("model", "convert", FIXTURE_MODEL, fx)
    check(inspect_json(fx).get("digest") == inspect_json(FIXTURE_MODEL).get("digest"),
          "convert fixture -> f32: digest unchanged")
    return m1


def test_tokenize(tmp):
    texts = [
        "x",
        "",
        "Hello world",
        "emoji 🙂👍🏽 family 👨‍👩‍👧 flags 🇫🇷!",
        "日本語のテキスト，中文，한국어",
        "runs   of\t\tspaces \n\n\n  and\r\nCRLF   ",
        "  leading and trailing  ",
        "<|endoftext|> is text here",
        "it's we'll I'M 12345 3.14 $$$ -- «quotes»",
    ]
    for t in texts:
        ids = run_ok("model", "tokenize", "--model", FIXTURE_MODEL, stdin=t.encode())
        check(ids.endswith(b"\n") and ids.count(b"\n") == 1, f"tokenize {t[:20]!r}: one line")
        back = run_ok("model", "tokenize", "--model", FIXTURE_MODEL, "--decode", stdin=ids)
        check(back == t.encode(), f"tokenize round trip {t[:24]!r}")
    # GPT-2's well-known ids for "Hello world".
    ids = run_ok("model", "tokenize", "--model", FIXTURE_MODEL, stdin=b"Hello world")
    check(ids == b"15496 995\n", f"tokenize 'Hello world' == 15496 995 ({ids!r})")
    expect_error(["model", "tokenize", "--model", FIXTURE_MODEL, "--decode"], 1, ["99999999"],
                 stdin=b"15496 995\n99999999\n")
    expect_error(["model", "tokenize", "--model", FIXTURE_MODEL, "--decode"], 1, ["'12abc'"],
                 stdin=b"1 12abc")
    expect_error(["model", "tokenize", "--model", FIXTURE_MODEL, "--decode"], 1, ["'-1'"],
                 stdin=b"-1")
    expect_error(["model", "tokenize", "--model", os.path.join(tmp, "none")], 1,
                 [os.path.join(tmp, "none")])
    expect_error(["model", "tokenize"], 2, ["--model"])
    expect_error(["model", "tokenize", "--model", FIXTURE_MODEL], 1, ["stdin", "limit"],
                 stdin=b"a" * (64 * 1024 * 1024 + 1))


def test_eval(tmp):
    t0 = time.time()
    out = run_ok("model", "eval", "--model", FIXTURE_MODEL, "--data", TOPIC_TEST, "--json")
    try:
        j = json.loads(out)
    except ValueError:
        check(False, "eval --json prints JSON")
        return
    print(f"      eval topic-test: {time.time() - t0:.2f} s, {j}")
    for key in ["loss", "tokens", "records", "perplexity", "accuracy", "seconds"]:
        check(key in j, f"eval --json has {key}")
    with open(TOPIC_TEST) as f:
        n_lines = sum(1 for line in f if line.strip())
    loss = j.get("loss", float("nan"))
    # Completion tokens of an unseen prompt format may score worse than uniform: only sane
    # bounds here (helper D's eval_reference checks the value against NumPy).
    check(math.isfinite(loss) and 0 < loss < 30, f"eval: loss {loss} in (0, 30)")
    check(abs(j.get("perplexity", 0) - math.exp(loss)) <= 1e-9 * math.exp(loss),
          "eval: perplexity == exp(loss)")
    check(0.0 <= j.get("accuracy", -1) <= 1.0, f"eval: accuracy {j.get('accuracy')} in [0, 1]")
    check(j.get("records") == n_lines, f"eval: records {j.get('records')} == {n_lines} lines")
    check(j.get("choices") == 4, "eval: 4 topics to choose from")
    check(j.get("tokens", 0) >= n_lines, "eval: at least one scored token per record")
    human = run_ok("model", "eval", "--model", FIXTURE_MODEL, "--data", TOPIC_TEST,
                   "--batch", "3", "--threads", "1").decode()
    m = re.search(r"^loss\s+([0-9.]+)", human, re.M)
    check(m is not None and abs(float(m.group(1)) - loss) < 1e-4,
          "eval (text, batch 3, 1 thread): same loss")
    jt = json.loads(run_ok("model", "eval", "--model", FIXTURE_MODEL, "--data", TASK_TEST,
                           "--json"))
    check("accuracy" not in jt and 0 < jt.get("loss", 0) < math.log(50257),
          f"eval text data: no accuracy, loss {jt.get('loss')}")

    bad = os.path.join(tmp, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"text": "fine"}\n{"text": "broken\n{"text": "fine"}\n')
    expect_error(["model", "eval", "--model", FIXTURE_MODEL, "--data", bad], 1, [bad + ":2"])
    expect_error(["model", "eval", "--model", FIXTURE_MODEL, "--data",
                  os.path.join(tmp, "missing.jsonl")], 1, [os.path.join(tmp, "missing.jsonl")])
    expect_error(["model", "eval", "--model", FIXTURE_MODEL], 2, ["--data"])
    expect_error(["model", "eval", "--model", FIXTURE_MODEL, "--data", TOPIC_TEST, "--batch",
                  "0"], 2, ["--batch", "0"])


def numpy_greedy(prompt_ids, n, eos=50256):
    """Greedy continuation with an independent float64 NumPy GPT-2 forward of the fixture."""
    with open(os.path.join(FIXTURE_MODEL, "config.json")) as f:
        cfg = json.load(f)
    W = {k.removeprefix("transformer."): v.astype(np.float64)
         for k, v in read_safetensors(os.path.join(FIXTURE_MODEL, "model.safetensors")).items()}
    L, H, C, T = cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["n_positions"]
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    head = W.get("lm_head.weight", W["wte.weight"])

    def ln(x, p):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(v + eps) * W[p + ".weight"] + W[p + ".bias"]

    def next_logits(ids):
        ids = ids[-T:]
        t = len(ids)
        x = W["wte.weight"][ids] + W["wpe.weight"][:t]               # (t, C)
        mask = np.triu(np.full((t, t), -np.inf), 1)
        for l in range(L):
            p = f"h.{l}."
            qkv = ln(x, p + "ln_1") @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]
            q, k, v = (a.reshape(t, H, C // H).transpose(1, 0, 2) for a in np.split(qkv, 3, -1))
            att = q @ k.transpose(0, 2, 1) / np.sqrt(C // H) + mask  # (H, t, t)
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            y = (att @ v).transpose(1, 0, 2).reshape(t, C)
            x = x + y @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
            h = ln(x, p + "ln_2") @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"]
            h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))
            x = x + h @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
        return head @ ln(x[-1], "ln_f")

    ids, out = list(prompt_ids), []
    for _ in range(n):
        nxt = int(np.argmax(next_logits(ids)))
        if nxt == eos:
            break
        ids.append(nxt)
        out.append(nxt)
    return out


def check_greedy_against_numpy(prompt, n):
    ids = run_ok("model", "tokenize", "--model", FIXTURE_MODEL, stdin=prompt.encode()).split()
    want = numpy_greedy([int(i) for i in ids], n)
    want_text = run_ok("model", "tokenize", "--model", FIXTURE_MODEL, "--decode",
                       stdin=" ".join(map(str, want)).encode())
    got = run_ok("model", "generate", "--model", FIXTURE_MODEL, "--prompt", prompt, "-n", str(n),
                 "--temperature", "0")
    check(got == want_text + b"\n", f"generate greedy == NumPy greedy ({len(ids)}-token prompt, "
          f"{len(want)} tokens: {want_text[:40]!r})")


def generated_count(err):
    m = re.search(r"generated (\d+)", err)
    return int(m.group(1)) if m else -1


def test_generate():
    g = ["model", "generate", "--model", FIXTURE_MODEL, "--prompt", "The meaning of life is"]
    rc, a, err_a = run(*g, "--temperature", "0", "-n", "12", "--stats")
    _, b, _ = run(*g, "--temperature", "0", "-n", "12", "--threads", "1")
    check(rc == 0 and a == b and len(a) > 1, f"generate greedy is deterministic: {a!r}")
    check(a.endswith(b"\n"), "generate ends with a newline")
    n = generated_count(err_a)
    check(0 < n <= 12, f"generate -n 12: {n} tokens")
    print("      " + err_a.strip())
    rc, out, err = run(*g, "--temperature", "0", "-n", "3", "--stats")
    check(rc == 0 and generated_count(err) <= 3 and a.startswith(out[:-1]),
          f"generate -n 3: a prefix of the 12-token text ({out!r})")
    rc, out, err = run(*g, "-n", "0", "--stats")
    check(rc == 0 and out == b"\n" and generated_count(err) == 0, "generate -n 0: nothing")
    s1 = run_ok(*g, "--temperature", "1", "--seed", "3", "-n", "20")
    s2 = run_ok(*g, "--temperature", "1", "--seed", "3", "-n", "20")
    s3 = run_ok(*g, "--temperature", "1", "--seed", "4", "-n", "20")
    check(s1 == s2, "generate: same seed, same text")
    check(s1 != s3, "generate: other seed, other text")
    d1 = run_ok(*g, "-n", "20")
    check(d1 == run_ok(*g, "-n", "20", "--seed", "0", "--temperature", "0.8", "--top-k", "40"),
          "generate defaults are temperature 0.8, top-k 40, seed 0")
    # A prompt longer than the context (256 tokens) is cut to its last 256 tokens.
    rc, out, err = run("model", "generate", "--model", FIXTURE_MODEL, "--prompt",
                       " ".join(["word"] * 600), "-n", "3", "--temperature", "0", "--stats")
    check(rc == 0 and "prompt 600 tokens" in err, f"generate: 600-token prompt accepted ({err})")
    check_greedy_against_numpy("The meaning of life is", 12)
    # 300 tokens: the window slides over the context's 256 positions.
    check_greedy_against_numpy("Time flies like an arrow; fruit flies like a banana. " * 25, 4)
    rc, out, err = run("model", "generate", "--model", FIXTURE_MODEL, "--prompt", "", "-n", "3")
    check(rc == 0 and len(out) >= 1, "generate: empty prompt starts from <|endoftext|>")
    expect_error([*g, "-n", "abc"], 2, ["-n", "'abc'"])
    expect_error([*g, "-n", "-5"], 2, ["-n", "-5"])
    expect_error([*g, "--temperature", "nan"], 2, ["--temperature", "nan"])
    expect_error([*g, "--seed", "-1"], 2, ["--seed", "-1"])
    expect_error([*g, "--threads", "1x"], 2, ["--threads", "1x"])
    expect_error(["model", "generate", "--model", FIXTURE_MODEL], 2, ["--prompt"])
    expect_error([*g, "-n"], 2, ["-n", "missing value"])


def test_errors(tmp, m1):
    missing = os.path.join(tmp, "no-such-model")
    expect_error(["model", "inspect", missing], 1, [missing])
    expect_error(["model", "generate", "--model", missing, "--prompt", "x"], 1, [missing])

    trunc = os.path.join(tmp, "trunc")
    shutil.copytree(m1, trunc)
    st = os.path.join(trunc, "model.safetensors")
    size = os.path.getsize(st)
    with open(st, "r+b") as f:
        f.truncate(size // 2)
    expect_error(["model", "inspect", trunc], 1, [st])
    expect_error(["model", "convert", trunc, os.path.join(tmp, "conv")], 1, [st])

    badcfg = os.path.join(tmp, "badcfg")
    shutil.copytree(m1, badcfg)
    cfg = os.path.join(badcfg, "config.json")
    with open(cfg, "w") as f:
        f.write('{"n_layer": 2, "n_head": ')
    expect_error(["model", "inspect", badcfg], 1, [cfg])
    with open(cfg, "w") as f:
        f.write('{"n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 48, '
                '"vocab_size": "many"}')
    expect_error(["model", "inspect", badcfg], 1, [cfg, "vocab_size"])

    expect_error(["model", "frobnicate"], 2, ["frobnicate"])
    expect_error(["frobnicate"], 2, ["frobnicate"])
    expect_error(["model", "inspect", m1, "--bogus"], 2, ["--bogus"])
    expect_error(["model", "inspect", m1, "--json=yes"], 2, ["--json"])
    expect_error(["model", "inspect", m1, "extra"], 2, ["extra"])
    expect_error(["model", "inspect"], 2, ["DIR"])
    rc, out, err = run()
    check(rc == 2 and "Usage" in err, "swarmctl with no command: usage on stderr, exit 2")


def main():
    if not os.access(SWARMCTL, os.X_OK):
        print(f"{SWARMCTL}: not built")
        return 1
    t0 = time.time()
    global TMP
    tmp = TMP = tempfile.mkdtemp(prefix="sw_cli_model_")
    try:
        test_help()
        m1 = test_init_inspect_convert(tmp)
        test_tokenize(tmp)
        test_eval(tmp)
        test_generate()
        test_errors(tmp, m1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"cli_model: {time.time() - t0:.1f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

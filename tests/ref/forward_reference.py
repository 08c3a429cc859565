"""forward_reference: swarmtune's GPT-2 forward, loss, loader, writer and digest
against the independent NumPy float64 model in np_gpt2.py.

For random models of several shapes (written by np_gpt2's own safetensors
writer as F32, F16 and BF16, with and without the "transformer." prefix, tied
and untied heads, with Hugging Face's attention-mask buffers) and for the
pretrained fixture, runs `gpt2_dump` on a batch of sequences of different
lengths and checks:

  logits:  |ours - ref| <= 1e-4 * max(|ref|, mean |ref| over that row's V logits)
  nll:     |ours - ref| <= 1e-4 * max(1, |ref|)

It also checks sw_gpt2_digest against hashlib.blake2b over the layout in
docs/model.md, and reads what sw_gpt2_save writes (F32 and F16) back with
np_gpt2's parser.  Exits non-zero on any mismatch.
"""

import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import np_gpt2  # noqa: E402

BUILD = os.environ.get("SW_BUILD_ROOT", "build")
SOURCE = os.environ.get("SW_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
BUNDLED_MODEL = os.environ.get("SW_MODEL_DIR", os.path.join(SOURCE, "models", "tiny-gpt2-fortunes"))
DUMP = os.path.join(BUILD, "tests", "gpt2_dump")
TOL = 1e-4

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def run_dump(model_dir, seqs, workdir):
    tok_path = os.path.join(workdir, "tokens.txt")
    out_path = os.path.join(workdir, "dump.bin")
    with open(tok_path, "w") as f:
        for s in seqs:
            f.write(" ".join(str(int(t)) for t in s) + "\n")
    subprocess.run([DUMP, model_dir, tok_path, out_path], check=True)
    raw = open(out_path, "rb").read()
    assert raw[:8] == b"SWGPT2D1", "bad dump magic"
    B, T, V = struct.unpack("<3I", raw[8:20])
    lengths = np.frombuffer(raw, "<u4", B, 20).astype(int)
    pos = 20 + 4 * B
    n = int(lengths.sum())
    logits = np.frombuffer(raw, "<f4", n * V, pos).reshape(n, V)
    pos += 4 * n * V
    nll = np.frombuffer(raw, "<f4", n, pos)
    pos += 4 * n
    total, count = struct.unpack("<dq", raw[pos:pos + 16])
    assert pos + 16 == len(raw), "dump size"
    assert list(lengths) == [len(s) for s in seqs] and T == max(lengths)
    out, o = [], 0
    for L in lengths:
        out.append((logits[o:o + L], nll[o:o + L]))
        o += L
    return out, total, count


def compare(label, cfg, params, seqs, model_dir, workdir):
    got, total, count = run_dump(model_dir, seqs, workdir)
    worst_l = (0.0, None)
    worst_n = (0.0, None)
    ref_total = 0.0
    for b, (s, (lg, nl)) in enumerate(zip(seqs, got)):
        ref = np_gpt2.forward(cfg, params, s)
        ref_nll = np_gpt2.nll(ref, s)
        ref_total += ref_nll.sum()
        scale = np.maximum(np.abs(ref), np.abs(ref).mean(axis=1, keepdims=True))
        r = np.abs(lg - ref) / scale
        i = np.unravel_index(np.argmax(r), r.shape)
        if r[i] >= worst_l[0]:
            worst_l = (r[i], (b, i[0], i[1], lg[i], ref[i]))
        rn = np.abs(nl - ref_nll) / np.maximum(1.0, np.abs(ref_nll))
        j = int(np.argmax(rn))
        if rn[j] >= worst_n[0]:
            worst_n = (rn[j], (b, j, nl[j], ref_nll[j]))
    e, (b, t, v, o, r) = worst_l
    check(e <= TOL, f"{label}: logits, worst relative error {e:.2e} at seq {b} pos {t} "
          f"token {v} (ours {o:.6f}, ref {r:.6f})")
    e, (b, t, o, r) = worst_n
    check(e <= TOL, f"{label}: nll, worst relative error {e:.2e} at seq {b} pos {t} "
          f"(ours {o:.6f}, ref {r:.6f})")
    want_count = sum(len(s) - 1 for s in seqs)
    check(count == want_count and abs(total - ref_total) <= TOL * max(1.0, abs(ref_total)),
          f"{label}: nll sum {total:.6f} over {count} tokens (ref {ref_total:.6f} over "
          f"{want_count})")


def digest_check(label, cfg, params, model_dir):
    out = subprocess.run([DUMP, "--digest", model_dir], check=True, capture_output=True,
                         text=True).stdout.strip()
    ref = np_gpt2.digest(cfg, params).hex()
    check(out == ref, f"{label}: digest {out} (hashlib {ref})")


def save_check(label, cfg, params, model_dir, workdir):
    for dt in ("F32", "F16"):
        out_dir = os.path.join(workdir, "saved-" + dt)
        os.mkdir(out_dir)
        subprocess.run([DUMP, "--save", model_dir, out_dir, dt.lower()], check=True)
        tensors, dtypes, meta = np_gpt2.read_safetensors(os.path.join(out_dir,
                                                                      "model.safetensors"))
        names = [n for n, _ in np_gpt2.canonical(cfg)]
        same_values = all(np.array_equal(tensors[n], np_gpt2.round_to(params[n], dt))
                          for n in names)
        check(list(tensors) == names and set(dtypes.values()) == {dt} and same_values
              and np_gpt2.load_config(out_dir) == cfg,
              f"{label}: sw_gpt2_save {dt}: canonical names in order, values as numpy rounds "
              f"them, same config (metadata {meta})")


def sequences(rng, V, P, lengths):
    return [rng.integers(0, V, size=L) for L in lengths]


def main():
    if not os.path.exists(DUMP):
        print(f"FAIL gpt2_dump not found at {DUMP}")
        return 1
    rng = np.random.default_rng(20240601)
    specs = [
        # label, L, NH, C, V, P, eps, tied, dtype, prefix, mask buffers
        ("tiny-f32", 2, 2, 16, 97, 32, 1e-5, True, "F32", "", False),
        ("prefixed-f16", 3, 4, 32, 211, 64, 1e-5, True, "F16", "transformer.", True),
        ("untied-bf16", 1, 1, 8, 50, 16, 1e-3, False, "BF16", "", False),
        ("wide-untied-prefixed-f32", 2, 8, 64, 300, 96, 1e-5, False, "F32", "transformer.", True),
        ("deep-f32", 5, 3, 48, 129, 40, 1e-6, True, "F32", "", False),
    ]
    tmp = tempfile.mkdtemp(prefix="sw_forward_ref_")
    try:
        for label, L, NH, C, V, P, eps, tied, dt, prefix, buffers in specs:
            cfg = {"n_layer": L, "n_head": NH, "n_embd": C, "n_positions": P,
                   "vocab_size": V, "layer_norm_epsilon": eps, "tie_word_embeddings": tied}
            params = np_gpt2.random_params(cfg, rng)
            extra = []
            if buffers:  # what older Hugging Face checkpoints carry; must be ignored
                for layer in range(L):
                    extra.append((f"{prefix}h.{layer}.attn.bias",
                                  np.tril(np.ones((1, 1, P, P), dtype=np.float32))))
                    extra.append((f"{prefix}h.{layer}.attn.masked_bias",
                                  np.array(-1e4, dtype=np.float32)))
            if tied and dt == "F32":  # Hugging Face saves a tied head too; it is ignored
                extra.append(("lm_head.weight", np.zeros((V, C), dtype=np.float32)))
            model_dir = os.path.join(tmp, label)
            os.mkdir(model_dir)
            np_gpt2.save_model(model_dir, cfg, params, dt, prefix, extra)
            # the reference uses exactly what the file holds
            cfg_r, params_r = np_gpt2.load_model(model_dir)
            assert cfg_r == cfg
            if dt != "F32":
                same = all(np.array_equal(params_r[n], np_gpt2.round_to(params[n], dt))
                           for n in params)
                check(same, f"{label}: np_gpt2 writer/reader round trip through {dt}")
            lengths = [P, 1, max(2, P // 3), 2, max(3, (2 * P) // 3)]
            seqs = sequences(rng, V, P, lengths)
            work = os.path.join(tmp, label + "-work")
            os.mkdir(work)
            compare(label, cfg_r, params_r, seqs, model_dir, work)
            digest_check(label, cfg_r, params_r, model_dir)
            if label in ("tiny-f32", "untied-bf16"):
                save_check(label, cfg_r, params_r, model_dir, work)

        fixture = BUNDLED_MODEL
        cfg, params = np_gpt2.load_model(fixture)
        # real text through the real vocabulary would be nicer, but the tokenizer
        # is another module; random ids plus a repeated phrase exercise attention
        phrase = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]
        seqs = [np.array(phrase * 3), np.array(phrase[:4]),
                rng.integers(0, cfg["vocab_size"], size=17), np.array([50256])]
        work = os.path.join(tmp, "fixture-work")
        os.mkdir(work)
        compare("fixture tiny-gpt2-fortunes", cfg, params, seqs, fixture, work)
        digest_check("fixture tiny-gpt2-fortunes", cfg, params, fixture)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failed" if failures else "all reference checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Regenerates the seed corpora in corpus/safetensors and corpus/config.

Written with the standard library only (json + struct), independently of
swarmtune's writer, so the seeds also show that files laid out the way the
Python tooling lays them out are accepted.  Deterministic: rerunning it
rewrites identical files.  Usage: /usr/bin/python3 tests/fuzz/make_seeds.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def st_file(tensors, metadata=None, pad=True, extra=b""):
    """tensors: list of (name, dtype, shape, raw bytes); contiguous offsets."""
    header, data, off = {}, b"", 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data + extra


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


def f16(*v):
    return struct.pack("<%de" % len(v), *v)


def bf16(*v):
    return b"".join(struct.pack("<f", x)[2:] for x in v)  # truncation is exact for these


def write(sub, name, data):
    d = os.path.join(HERE, "corpus", sub)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def main():
    pt = {"format": "pt"}
    write("safetensors", "valid_f32", st_file(
        [("wte.weight", "F32", [3, 2], f32(1, 2, 3, 4, 5, 6)), ("ln_f.bias", "F32", [2], f32(-1, 0.5))],
        pt))
    write("safetensors", "valid_f16", st_file(
        [("a", "F16", [2, 2], f16(1, -2, 65504, 6e-8)), ("s", "F16", [], f16(0.25))], pt))
    write("safetensors", "valid_bf16_mixed", st_file(
        [("b", "BF16", [1, 3], bf16(1, -2, 0.5)), ("e", "F32", [0, 4], b""),
         ("c", "F32", [1], f32(3.5))], {"format": "pt", "note": "seed"}))
    write("safetensors", "valid_empty", st_file([], None))
    write("safetensors", "valid_unpadded", st_file([("x", "F32", [1], f32(7))], None, pad=False))
    write("safetensors", "bad_dtype_f64", st_file([("d", "F64", [1], struct.pack("<d", 1.0))]))
    write("safetensors", "bad_trailing", st_file([("x", "F32", [1], f32(7))], pt, extra=b"\0\0\0\0"))
    full = st_file([("x", "F32", [2], f32(1, 2))], pt)
    write("safetensors", "bad_truncated", full[:-3])
    hole = json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}).encode()
    write("safetensors", "bad_hole", struct.pack("<Q", len(hole)) + hole + f32(0, 1))
    over = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                       "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode()
    write("safetensors", "bad_overlap", struct.pack("<Q", len(over)) + over + f32(0, 1, 2))
    write("safetensors", "bad_header_len", struct.pack("<Q", 1 << 40) + b"{}")

    with open(os.path.join(HERE, "..", "..", "models", "tiny-gpt2-fortunes", "config.json"), "rb") as f:
        write("config", "fixture.json", f.read())
    write("config", "minimal.json",
          '{"n_embd":8,"n_layer":1,"n_head":2,"n_positions":16,"vocab_size":10}')
    write("config", "n_ctx_untied.json", json.dumps(
        {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_ctx": 128, "vocab_size": 300,
         "tie_word_embeddings": False, "layer_norm_epsilon": 1e-6,
         "activation_function": "gelu_pytorch_tanh", "n_inner": None}, indent=1))
    write("config", "gpt2_small.json", json.dumps(
        {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 768,
         "n_layer": 12, "n_head": 12, "n_positions": 1024, "n_ctx": 1024, "vocab_size": 50257,
         "layer_norm_epsilon": 1e-05, "activation_function": "gelu_new", "resid_pdrop": 0.1,
         "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}}}))
    write("config", "bad_missing.json", '{"n_embd":8,"n_layer":1,"n_head":2,"vocab_size":10}')
    write("config", "bad_activation.json",
          '{"n_embd":8,"n_layer":1,"n_head":2,"n_positions":16,"vocab_size":10,'
          '"activation_function":"relu"}')
    write("config", "bad_heads.json",
          '{"n_embd":10,"n_layer":1,"n_head":3,"n_positions":16,"vocab_size":10}')
    write("config", "bad_json.json", '{"n_embd":8,')


if __name__ == "__main__":
    main()

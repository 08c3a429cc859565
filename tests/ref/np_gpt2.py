"""np_gpt2: an independent NumPy GPT-2 (float64) and safetensors reader/writer.

Reference code for swarmtune's checks: it shares nothing with the C code (its
own safetensors parser and writer, its own forward pass in float64) so that
agreement means something.  Import it from another script in tests/ref with

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import np_gpt2

API (arrays are NumPy; "params" is a dict canonical name -> float32 array):

  read_safetensors(path) -> (tensors, dtypes, metadata)
      tensors: name -> float32 array (F16 and BF16 widened exactly; other
      dtypes returned as stored); dtypes: name -> "F32"/"F16"/...;
      metadata: the "__metadata__" dict or None.
  write_safetensors(path, items, dtype="F32", metadata={"format": "pt"})
      items: list of (name, array) written in that order; dtype F32, F16 or
      BF16 (round to nearest even).  Returns nothing.
  round_to(array, dtype) -> float32 array holding the values a file of that
      dtype stores (identity for F32).
  canonical(cfg) -> list of (name, shape) in swarmtune's canonical order.
  load_config(model_dir) -> cfg dict with n_layer, n_head, n_embd,
      n_positions, vocab_size, layer_norm_epsilon, tie_word_embeddings.
  load_model(model_dir) -> (cfg, params): the loader's rules ("transformer."
      prefix stripped, attn.bias / attn.masked_bias dropped, lm_head.weight
      ignored when tied); raises ValueError on a missing/unknown tensor.
  save_model(model_dir, cfg, params, dtype="F32", prefix="", extra=())
      writes config.json and model.safetensors (canonical order, each name
      with the prefix, then the extra (name, array) items).
  random_params(cfg, rng, scale=1.0) -> params with weights large enough to
      exercise every part of the network (not GPT-2's 0.02 init).
  forward(cfg, params, tokens) -> logits (T, V) float64 for one sequence.
  nll(logits, tokens) -> (T,) float64: nll[t] = -log softmax(logits[t-1])[tokens[t]],
      nll[0] = 0.
  digest(cfg, params) -> 32 bytes, sw_gpt2_digest as docs/model.md defines it.
  fixed_point(x) -> float32 array: x on the grid of its fixed-point master
      (docs/engine.md), what a node that never wrote the tensor exports.
"""

import hashlib
import json
import os
import struct

import numpy as np

PREFIX = "transformer."
LAYER_SUFFIXES = [
    "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
    "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
]

# ---------------------------------------------------------------- safetensors

_NP_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1",
}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: shorter than 8 bytes")
    (hlen,) = struct.unpack("<Q", raw[:8])
    if 8 + hlen > len(raw):
        raise ValueError(f"{path}: header runs past the end")
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    data = raw[8 + hlen:]
    metadata = header.pop("__metadata__", None)
    tensors, dtypes = {}, {}
    for name, info in header.items():
        dt, shape = info["dtype"], tuple(info["shape"])
        start, end = info["data_offsets"]
        buf = data[start:end]
        if dt == "BF16":
            bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        elif dt in _NP_DTYPES:
            arr = np.frombuffer(buf, dtype=_NP_DTYPES[dt])
            if dt == "F16":
                arr = arr.astype(np.float32)
        else:
            raise ValueError(f"{path}: tensor {name}: dtype {dt} not handled")
        count = int(np.prod(shape)) if shape else 1
        if arr.size != count:
            raise ValueError(f"{path}: tensor {name}: {arr.size} values for shape {shape}")
        tensors[name] = arr.reshape(shape)
        dtypes[name] = dt
    return tensors, dtypes, metadata


def _bf16_bits(a):
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype("<u2")


def round_to(a, dtype):
    a = np.asarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.copy()
    if dtype == "F16":
        return a.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        return (_bf16_bits(a).astype(np.uint32) << 16).view(np.float32).reshape(a.shape)
    raise ValueError(dtype)


def write_safetensors(path, items, dtype="F32", metadata=None):
    if metadata is None:
        metadata = {"format": "pt"}
    header = {"__metadata__": metadata} if metadata else {}
    blobs, offset = [], 0
    for name, arr in items:
        arr = np.asarray(arr)
        if dtype == "F32":
            blob = arr.astype("<f4").tobytes()
        elif dtype == "F16":
            blob = arr.astype("<f2").tobytes()
        elif dtype == "BF16":
            blob = _bf16_bits(arr).tobytes()
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


# ---------------------------------------------------------------- the model

def canonical(cfg):
    C, V, P = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
    shapes = {
        "ln_1.weight": (C,), "ln_1.bias": (C,),
        "attn.c_attn.weight": (C, 3 * C), "attn.c_attn.bias": (3 * C,),
        "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
        "ln_2.weight": (C,), "ln_2.bias": (C,),
        "mlp.c_fc.weight": (C, 4 * C), "mlp.c_fc.bias": (4 * C,),
        "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,),
    }
    out = [("wte.weight", (V, C)), ("wpe.weight", (P, C))]
    for layer in range(cfg["n_layer"]):
        out += [(f"h.{layer}.{s}", shapes[s]) for s in LAYER_SUFFIXES]
    out += [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (V, C)))
    return out


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        j = json.load(f)
    return {
        "n_layer": int(j["n_layer"]),
        "n_head": int(j["n_head"]),
        "n_embd": int(j["n_embd"]),
        "n_positions": int(j.get("n_positions", j.get("n_ctx"))),
        "vocab_size": int(j["vocab_size"]),
        "layer_norm_epsilon": float(j.get("layer_norm_epsilon", 1e-5)),
        "tie_word_embeddings": bool(j.get("tie_word_embeddings", True)),
    }


def load_model(model_dir):
    cfg = load_config(model_dir)
    tensors, _, _ = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    want = dict(canonical(cfg))
    params = {}
    for name, arr in tensors.items():
        base = name[len(PREFIX):] if name.startswith(PREFIX) else name
        if base.endswith(".attn.bias") or base.endswith(".attn.masked_bias"):
            continue
        if base == "lm_head.weight" and cfg["tie_word_embeddings"]:
            continue
        if base not in want:
            raise ValueError(f"unknown tensor {name}")
        if tuple(arr.shape) != tuple(want[base]):
            raise ValueError(f"tensor {name}: shape {arr.shape}, expected {want[base]}")
        params[base] = np.asarray(arr, dtype=np.float32)
    missing = [n for n in want if n not in params]
    if missing:
        raise ValueError(f"missing tensor {missing[0]}")
    return cfg, params


def save_model(model_dir, cfg, params, dtype="F32", prefix="", extra=()):
    config = {
        "model_type": "gpt2",
        "n_layer": cfg["n_layer"], "n_head": cfg["n_head"], "n_embd": cfg["n_embd"],
        "n_positions": cfg["n_positions"], "n_ctx": cfg["n_positions"],
        "vocab_size": cfg["vocab_size"],
        "layer_norm_epsilon": cfg["layer_norm_epsilon"],
        "activation_function": "gelu_new",
        "tie_word_embeddings": cfg["tie_word_embeddings"],
    }
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    items = [(prefix + name, params[name]) for name, _ in canonical(cfg)]
    items += list(extra)
    write_safetensors(os.path.join(model_dir, "model.safetensors"), items, dtype)


def random_params(cfg, rng, scale=1.0):
    C = cfg["n_embd"]
    params = {}
    for name, shape in canonical(cfg):
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
            a = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name.endswith("bias"):
            a = 0.1 * rng.standard_normal(shape)
        elif name in ("wte.weight", "wpe.weight", "lm_head.weight"):
            a = 0.3 * scale * rng.standard_normal(shape)
        else:  # linear weights (in, out): unit-scale outputs for unit inputs
            a = 1.5 * scale * rng.standard_normal(shape) / np.sqrt(shape[0])
        params[name] = a.astype(np.float32)
    return params


def _layernorm(x, w, b, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def forward(cfg, params, tokens):
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    C, NH = cfg["n_embd"], cfg["n_head"]
    hs = C // NH
    eps = float(np.float32(cfg["layer_norm_epsilon"]))
    tokens = np.asarray(tokens, dtype=np.int64)
    T = len(tokens)
    x = p["wte.weight"][tokens] + p["wpe.weight"][:T]
    mask = np.triu(np.ones((T, T), dtype=bool), k=1)
    for layer in range(cfg["n_layer"]):
        g = lambda s: p[f"h.{layer}.{s}"]  # noqa: E731
        h = _layernorm(x, g("ln_1.weight"), g("ln_1.bias"), eps)
        qkv = h @ g("attn.c_attn.weight") + g("attn.c_attn.bias")
        q, k, v = (qkv[:, i * C:(i + 1) * C].reshape(T, NH, hs).transpose(1, 0, 2)
                   for i in range(3))
        att = q @ k.transpose(0, 2, 1) / np.sqrt(hs)
        att = np.where(mask, -np.inf, att)
        att = np.exp(att - att.max(axis=-1, keepdims=True))
        att /= att.sum(axis=-1, keepdims=True)
        y = (att @ v).transpose(1, 0, 2).reshape(T, C)
        x = x + y @ g("attn.c_proj.weight") + g("attn.c_proj.bias")
        h = _layernorm(x, g("ln_2.weight"), g("ln_2.bias"), eps)
        f = _gelu_new(h @ g("mlp.c_fc.weight") + g("mlp.c_fc.bias"))
        x = x + f @ g("mlp.c_proj.weight") + g("mlp.c_proj.bias")
    x = _layernorm(x, p["ln_f.weight"], p["ln_f.bias"], eps)
    head = p["wte.weight"] if cfg["tie_word_embeddings"] else p["lm_head.weight"]
    return x @ head.T


def nll(logits, tokens):
    logits = np.asarray(logits, dtype=np.float64)
    m = logits.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))[:, 0]
    out = np.zeros(len(tokens))
    for t in range(1, len(tokens)):
        out[t] = lse[t - 1] - logits[t - 1, tokens[t]]
    return out


def digest(cfg, params):
    h = hashlib.blake2b(digest_size=32)
    h.update(b"swarmtune-gpt2-v1")
    eps_bits = np.float32(cfg["layer_norm_epsilon"]).tobytes()
    h.update(struct.pack("<6I", cfg["n_layer"], cfg["n_head"], cfg["n_embd"],
                         cfg["n_positions"], cfg["vocab_size"],
                         1 if cfg["tie_word_embeddings"] else 0))
    h.update(eps_bits)
    names = canonical(cfg)
    h.update(struct.pack("<I", len(names)))
    for name, shape in names:
        h.update(struct.pack("<I", len(name)) + name.encode())
        h.update(struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape))
        h.update(np.ascontiguousarray(params[name], dtype="<f4").tobytes())
    return h.digest()


def fixed_point(x):
    """x on the grid of its fixed-point master (docs/engine.md): exponent e with
    8 * max(max|x|, 1) < 2^(31 - e), values rounded to nearest, ties to even.
    Compare by value: a master holds -0 as 0."""
    _, ex = np.frexp(max(float(np.max(np.abs(x))), 1.0))
    e = 31 - 3 - int(ex)
    return (np.rint(x.astype(np.float64) * 2.0 ** e) / 2.0 ** e).astype(np.float32)

"""Pieces the benchmark drivers share: running one measured configuration in
its own process, and the random GPT-2-small-shaped model they compare on."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

# What each benchmark needs beyond the test suite's packages, and the one line
# that says how to get it (deploy/install-deps.sh bench installs all of them).
_NEEDS = {
    "torch": "PyTorch (Debian's python3-torch)",
    "numpy": "NumPy (Debian's python3-numpy)",
    "google.protobuf": "Python protobuf (Debian's python3-protobuf)",
}
_TOOLS = {
    "nngcat": "nngcat (Debian's nng-utils)",
    "protoc": "protoc (Debian's protobuf-compiler)",
}


def _importable(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a dotted name whose parent package is missing
        return False


def require(who, modules=(), tools=()):
    """Exits with one line naming the missing package, before any measuring."""
    missing = [_NEEDS.get(m, m) for m in modules if not _importable(m)]
    missing += [_TOOLS.get(t, t) for t in tools if shutil.which(t) is None]
    if missing:
        sys.exit(f"{who}: needs {', '.join(missing)}: run `sh deploy/install-deps.sh bench`")


def run_json(cmd, who, env=None):
    """Runs cmd; its last stdout line is one JSON object of figures."""
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{who}: {' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_124m(build):
    """A random 124M GPT-2 (`swarmctl model init`), made once per build tree."""
    path = os.path.join(build, "bench-models", "gpt2-124m-random")
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        subprocess.run([os.path.join(build, "cli", "swarmctl"), "model", "init", path,
                        "--layers", "12", "--heads", "12", "--embd", "768", "--ctx", "1024",
                        "--vocab", "50257", "--seed", "1", "--force"], check=True)
    return path

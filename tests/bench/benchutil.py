"""Pieces the benchmark drivers share: running one measured configuration in
its own process, and the random GPT-2-small-shaped model they compare on."""
import json
import os
import subprocess
import sys


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

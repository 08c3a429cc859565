"""Shared helpers for the node guarantee tests (node_*.py).

Starts real `swarmd --config FILE` processes in temporary state directories,
waits for them with bounded timeouts, kills them (SIGKILL on purpose, or every
child still alive when a test fails or is interrupted), exports their models
with `swarmctl model export` and scores them with `swarmctl model eval --json`.

Every wait is bounded and every child is registered, so a test that fails,
times out or is itself killed by `meson test` (SIGTERM) leaves no daemon behind.

Waits may name the processes they depend on (`alive=`): when one of those has
exited, the wait ends at once with `Exited` (naming it, with its exit status
and last log lines) instead of running to its deadline.  `run_test(main)`
turns that into one FAIL and the summary line.  Deadlines are generous (the
suite must pass while a second copy of it runs on the same two cores); they
bound a failure, they do not pace a passing test.
"""
import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("SW_BUILD_ROOT", "build")
SOURCE = os.environ.get("SW_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
SWARMD = os.path.join(BUILD, "daemon", "swarmd")
SWARMCTL = os.path.join(BUILD, "cli", "swarmctl")
LEDGER_DUMP = os.path.join(BUILD, "tests", "ledger_dump")
# The bundled model and data sets, inside the repository (never beside it).
FIXTURE_MODEL = os.environ.get("SW_MODEL_DIR", os.path.join(SOURCE, "models", "tiny-gpt2-fortunes"))
DATA = os.environ.get("SW_DATA_DIR", os.path.join(SOURCE, "data"))

passed = 0
failed = 0
_children = []
_tmpdirs = []
last_export_stderr = ""


def check(cond, what, detail=None):
    """Counts and prints one assertion; detail is printed under a failure."""
    global passed, failed
    if cond:
        passed += 1
        print(f"ok    {what}", flush=True)
    else:
        failed += 1
        print(f"FAIL  {what}", flush=True)
        if detail:
            for line in str(detail).rstrip().splitlines()[-25:]:
                print(f"      {line}")
    return cond


def kill_children():
    for p in _children:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
    _children.clear()


def _cleanup():
    kill_children()
    if os.environ.get("SW_KEEP_TMP"):
        for d in _tmpdirs:
            print(f"kept {d}")
        return
    for d in _tmpdirs:
        shutil.rmtree(d, ignore_errors=True)


def _on_signal(signum, frame):
    _cleanup()
    sys.exit(128 + signum)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def tmpdir(prefix):
    """A temporary directory removed at exit (kept when SW_KEEP_TMP is set)."""
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


def require_binaries(*paths):
    missing = [p for p in (SWARMD, SWARMCTL) + paths if not os.access(p, os.X_OK)]
    for p in missing:
        print(f"{p}: not built")
    return not missing


class Exited(Exception):
    """A process a wait depended on has exited.

    who: its name; rc: its exit status; log: its last log lines."""

    def __init__(self, who, rc, log):
        self.who, self.rc, self.log = who, rc, log
        how = (f"was killed by signal {-rc}" if isinstance(rc, int) and rc < 0 else
               f"exited with status {rc}" if isinstance(rc, int) else rc)
        self.what = f"{who} {how} while the test waited on it"
        super().__init__(f"{self.what}; its last log lines:\n{log}")


def run_test(main):
    """`sys.exit(nu.run_test(main))`: main()'s exit code, or 1 with one FAIL
    (naming the process and showing its last log lines) when a wait found a
    process it depended on gone."""
    try:
        return main()
    except Exited as e:
        check(False, e.what, e.log)
        print(f"{passed} passed, {failed} failed")
        return 1


def finish(name, t0):
    print(f"{name}: {time.time() - t0:.1f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or passed == 0 else 0


# [node] addresses on port 0: the kernel picks, so tests (and two suites run
# side by side) never clash; swarmd's defaults are fixed ports.
EPHEMERAL_ADDRS = {"listen": "tcp://127.0.0.1:0", "sync": "tcp://127.0.0.1:0"}


def default_config(state_dir, **train):
    """A config for a short solo run on the fixture model and topic data.

    Sections are dicts of key -> value, written in order.  Keyword arguments
    override [train] keys.
    """
    cfg = {
        "node": {
            "state_dir": state_dir,
            "progress_ms": 1000,
            **EPHEMERAL_ADDRS,
        },
        "model": {"path": FIXTURE_MODEL},
        "data": {"train": os.path.join(DATA, "topic-train.jsonl")},
        "train": {
            "max_steps": 20,
            "batch_size": 8,
            "seq_len": 64,
            "lr": 1e-4,
            "eps": 1e-3,
            "seed": 1,
            "threads": 1,
        },
    }
    cfg["train"].update(train)
    return cfg


def write_identity(path, name):
    """A fixed identity key file (docs/state.md layout: "SWIDKEY1", Ed25519
    seed, public key) derived from `name`, so a test's origin id, and with it
    every perturbation, is the same on every run."""
    import nacl.signing
    seed = hashlib.blake2b(b"swarmtune test identity: " + name.encode(), digest_size=32).digest()
    pk = bytes(nacl.signing.SigningKey(seed).verify_key)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(b"SWIDKEY1" + seed + pk)
    return path, pk.hex()


def write_config(path, cfg):
    node = cfg.get("node", {})
    missing = [k for k in ("listen", "sync") if k not in node]
    if node and missing:
        raise ValueError(f"{path}: [node] {', '.join(missing)} not set (use EPHEMERAL_ADDRS)")
    with open(path, "w") as f:
        f.write("# written by tests/ref/nodeutil.py\n")
        for section, keys in cfg.items():
            f.write(f"\n[{section}]\n")
            for k, v in keys.items():
                if isinstance(v, float):
                    v = repr(v)
                f.write(f"{k} = {v}\n")
    return path


class Node:
    """One swarmd process tree rooted at `root` (config, log, state dir)."""

    def __init__(self, root, cfg, name=None):
        self.root = root
        self.name = name or os.path.basename(root.rstrip("/"))
        os.makedirs(root, exist_ok=True)
        self.cfg = cfg
        self.state_dir = cfg["node"]["state_dir"]
        self.config = write_config(os.path.join(root, "swarmd.ini"), cfg)
        self.log = os.path.join(root, "swarmd.log")
        self.proc = None
        self.starts = 0
        self.log_offset = 0  # where the current start's lines begin in the log
        self.start_offset = 0  # where the current start's output begins in the log
        self.until_done = True
        self.rebinds = 0

    def start(self, until_done=True):
        assert self.proc is None or self.proc.poll() is not None
        self.until_done = until_done
        args = [SWARMD, "--config", self.config] + (["--until-done"] if until_done else [])
        logf = open(self.log, "ab")
        self.start_offset = logf.tell()
        logf.write(f"### start {self.starts}: {' '.join(args)}\n".encode())
        logf.flush()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        logf.close()
        _children.append(self.proc)
        self.starts += 1
        self.started_at = time.monotonic()
        return self.proc

    def wait(self, timeout):
        """Exit code, or None (and the process SIGKILLed) after timeout seconds."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None
        self._forget()
        return rc

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait(timeout=30)
            self._forget()

    def _forget(self):
        if self.proc in _children:
            _children.remove(self.proc)

    def run(self, timeout=120):
        """Runs to completion with --until-done; returns (rc, seconds)."""
        t0 = time.monotonic()
        self.start(until_done=True)
        rc = self.wait(timeout)
        return rc, time.monotonic() - t0

    def log_text(self, last=None):
        try:
            with open(self.log, "r", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-last:] if last else lines)

    def exited(self):
        """The exit status of the current start once it has ended (None while
        it runs; "was never started" before the first start)."""
        if self.proc is None:
            return "was never started"
        return self.proc.poll()

    def rebind(self):
        """After a start that failed because a port free_port() had picked was
        taken in the meantime (the time-of-check race): new ports for the
        [node] addresses with a fixed port, the config rewritten, started
        again.  At most 3 times per node; False when this was not the cause."""
        if self.proc is None or self.proc.poll() in (None, 0) or self.rebinds >= 3:
            return False
        try:
            with open(self.log, "r", errors="replace") as f:
                f.seek(self.start_offset)
                mine = f.read()
        except OSError:
            return False
        if "address in use" not in mine:
            return False
        node = self.cfg["node"]
        changed = []
        for key in ("listen", "sync", "metrics"):
            v = node.get(key, "")
            m = re.fullmatch(r"(tcp://)?127\.0\.0\.1:([1-9][0-9]*)", str(v))
            if m:
                node[key] = f"{m.group(1) or ''}127.0.0.1:{free_port()}"
                changed.append(f"{key} {v} -> {node[key]}")
        if not changed:
            return False
        self._forget()
        self.rebinds += 1
        write_config(self.config, self.cfg)
        print(f"note  {self.name}: a port was taken between free_port() and the bind "
              f"({'; '.join(changed)}): started again", flush=True)
        self.start(self.until_done)
        return True


def _who(x):
    """(name, exit status or None while running, last log lines) of a Node or Popen."""
    if isinstance(x, Node):
        return x.name, x.exited(), x.log_text(20)
    return " ".join(map(str, x.args))[:80] if hasattr(x, "args") else repr(x), x.poll(), ""


def check_alive(alive):
    """Raises Exited for the first of `alive` (Nodes or Popen objects) whose
    process has ended; a Node that lost a port race is restarted instead."""
    for x in alive:
        who, rc, log = _who(x)
        if rc is None:
            continue
        if isinstance(x, Node) and x.rebind():
            continue
        raise Exited(who, rc, log)


def swarmctl(*args, timeout=300):
    p = subprocess.run([SWARMCTL, *args], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def export(state_dir, out, dtype="f32"):
    """`swarmctl model export`; returns the output dir, or None (and a FAIL)."""
    global last_export_stderr
    rc, _, err = swarmctl("model", "export", "--state-dir", state_dir, "--out", out,
                          "--dtype", dtype)
    last_export_stderr = err
    if not check(rc == 0, f"model export {os.path.basename(state_dir.rstrip('/'))} "
                 f"-> {os.path.basename(out)}: exit 0", err):
        return None
    return out


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_bytes(d):
    """SHA-256 of the export's model.safetensors (None when absent)."""
    p = os.path.join(d, "model.safetensors")
    return file_sha256(p) if os.path.exists(p) else None


def model_digest(d):
    """The model digest `swarmctl model inspect --json` reports (weights, not bytes)."""
    rc, out, err = swarmctl("model", "inspect", d, "--json")
    if rc != 0:
        check(False, f"model inspect {d}", err)
        return None
    return json.loads(out).get("digest")


def same_export(a, b):
    """Every file of export a equals the same file of export b, byte for byte."""
    fa = sorted(os.listdir(a))
    fb = sorted(os.listdir(b))
    if fa != fb:
        return False, f"files differ: {fa} vs {fb}"
    for name in fa:
        if file_sha256(os.path.join(a, name)) != file_sha256(os.path.join(b, name)):
            return False, f"{name} differs"
    return True, f"{len(fa)} files equal"


def evaluate(model_dir, data, threads=1):
    """`swarmctl model eval --json`: the parsed object, or None (and a FAIL)."""
    rc, out, err = swarmctl("model", "eval", "--model", model_dir, "--data", data, "--json",
                            "--threads", str(threads))
    if not check(rc == 0, f"model eval {os.path.basename(data)}: exit 0", err):
        return None
    return json.loads(out)


def ledger_dump(state_dir):
    """Records of the ledger as dicts (tests/tools/ledger_dump, one JSON per line)."""
    p = subprocess.run([LEDGER_DUMP, state_dir], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=120)
    if not check(p.returncode == 0, f"ledger_dump {os.path.basename(state_dir)}: exit 0",
                 p.stderr.decode("utf-8", "replace")):
        return None
    return [json.loads(line) for line in p.stdout.decode().splitlines() if line.strip()]


def copy_state(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return dst


def free_port():
    """A TCP port free on 127.0.0.1 right now (the kernel's pick).  Someone
    else may take it before the daemon binds it: a Node whose start fails
    that way is given new ports by the waits that watch it (Node.rebind)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_port():
    """(socket, port): a TCP port on 127.0.0.1 that refuses every connection
    for as long as the socket stays open (bound, never listening, so nobody
    else can bind it either).  Close the socket when done."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def swarm_config(state_dir, bootstrap="", data=None, **train):
    """default_config plus the [node] keys of a loopback swarm member."""
    cfg = default_config(state_dir, **train)
    pub, sync = free_port(), free_port()
    cfg["node"].update({
        "listen": f"tcp://127.0.0.1:{pub}",
        "sync": f"tcp://127.0.0.1:{sync}",
        "bootstrap": bootstrap,
        "heartbeat_ms": 200,
        "batch_max_ms": 300,
    })
    if data:
        cfg["data"]["train"] = data
    return cfg


def validations(log_text):
    """The key=value fields of each `msg=validation` line of a swarmd log, in order."""
    return [dict(re.findall(r"(\w+)=(\S+)", line)) for line in log_text.splitlines()
            if " msg=validation " in line]


def sync_addr(cfg):
    return cfg["node"]["sync"]


def status(state_dir, timeout=10):
    """`swarmctl status --json` of the node in state_dir, or None."""
    try:
        rc, out, _ = swarmctl("status", "--json", "--state-dir", state_dir, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if rc != 0:
        return None
    try:
        return json.loads(out)
    except ValueError:
        return None


def shard(src, n, out_dir):
    """Splits a JSONL file into n shards (record i to shard i % n)."""
    with open(src) as f:
        lines = [l for l in f if l.strip()]
    paths = []
    for k in range(n):
        p = os.path.join(out_dir, f"shard{k}.jsonl")
        with open(p, "w") as f:
            f.writelines(lines[k::n])
        paths.append(p)
    return paths


def wait_until(pred, timeout, every=0.25, alive=()):
    """Polls pred() until it returns a truthy value (returned) or timeout
    seconds pass (None).  alive: the Nodes (or Popen objects) that must keep
    running meanwhile; when one has exited, pred() gets one last look (the
    process may have made it true on its way out) and then Exited is raised
    at once, naming it with its last log lines."""
    t_end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        try:
            check_alive(alive)
        except Exited:
            v = pred()
            if v:
                return v
            raise
        if time.monotonic() >= t_end:
            return None
        time.sleep(every)


def converged(state_dirs):
    """The status of every node when all report one version vector and one
    digest for it, else None."""
    sts = [status(d) for d in state_dirs]
    if any(s is None for s in sts):
        return None
    vvs = [s["model"]["version_vector"] for s in sts]
    if any(v != vvs[0] for v in vvs):
        return None
    if any(s["model"]["digest_version_vector"] != vvs[0] for s in sts):
        return None
    # no update held beyond the contiguous prefixes (they are not in the vv)
    if any(s["ledger"]["updates"] != sum(vvs[0].values()) for s in sts):
        return None
    return sts


def stop_all(nodes, timeout=60):
    """SIGTERM to every node at once, then a check that each exits 0."""
    for n in nodes:
        n.proc.terminate()
    for n in nodes:
        check(n.wait(timeout) == 0, f"{n.name} stops with exit 0 on SIGTERM", n.log_text(5))


def pair_converged(root, a_cfg, b_cfg, what, timeout=240):
    """Starts a founder (a_cfg) and, half a second later, a joiner (b_cfg) in
    root/a and root/b, both serving past their last step; waits until both are done
    and converged (a check named `what`).  Returns (a, b, statuses or None)."""
    a = Node(os.path.join(root, "a"), a_cfg)
    a.start(until_done=False)
    b = Node(os.path.join(root, "b"), b_cfg)
    time.sleep(0.5)
    b.start(until_done=False)
    sts = wait_done_converged([a, b], timeout=timeout)
    check(sts is not None, what, a.log_text(15) + "\n" + b.log_text(15))
    return a, b, sts


def wait_done_converged(nodes, timeout=240):
    """The statuses of nodes once every one is done (max_steps) and they
    have converged (converged()); None after timeout, or at once when one
    of them dies."""
    dirs = [n.state_dir for n in nodes]

    def done():
        sts = converged(dirs)
        return sts if sts and all(x["node"]["state"] == "done" for x in sts) else None
    return wait_until(done, timeout, every=0.5, alive=nodes)

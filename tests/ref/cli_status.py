#!/usr/bin/python3
"""Drives `swarmctl status` and `swarmctl peers` against fake daemons.

The fake daemon is Debian's `nngcat` (nng-utils) as an nng REP socket on an
IPC path, answering every request with one fixed reply: a realistic status
object (built here, independently of the C code), text that is not JSON, an
{"error": ...} object, an object without "peers", or nothing at all (the
timeout).  Checks that --json round-trips the object, that the human output
has its sections, short ids and one table row per peer, that every failure
exits 1 naming the control socket, that --state-dir resolves to
DIR/control.sock, and that usage errors exit 2.  Exits non-zero on any
failure.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("SW_BUILD_ROOT", "build")
SWARMCTL = os.path.join(BUILD, "cli", "swarmctl")
NNGCAT = shutil.which("nngcat") or "/usr/bin/nngcat"
NO_DAEMON = ("no daemon at {}: is swarmd running? (see `systemctl status swarmd`, "
             "or pass --control PATH / --state-dir DIR)")

passed = 0
failed = 0
_fakes = []


def check(cond, what, detail=None):
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


def run(*args, timeout=20):
    p = subprocess.run([SWARMCTL, *args], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def hexid(name):
    return hashlib.sha256(name.encode()).hexdigest()


def status_object():
    """A status as the daemon documents it: three peers in different states."""
    me, run_id = hexid("node-a"), hexid("run-1")
    b, c, d = hexid("node-b"), hexid("node-c"), hexid("node-d")
    return {
        "node": {"id": me, "state": "training", "step": 1234, "max_steps": 5000,
                 "run_id": run_id, "version": "0.1.0", "uptime_s": 3723.4,
                 "pub_addr": "tcp://10.0.0.1:7701", "sync_addr": "tcp://10.0.0.1:7702"},
        "model": {"digest": hexid("digest"), "digest_updates": 3690,
                  "version_vector": {me: 1234, b: 1230, c: 1226}},
        "train": {"loss": 3.451234, "steps_per_s": 2.3125, "scale": 0.0009765625,
                  "saturations": 0},
        "ledger": {"updates": 3690, "checkpoint_updates": 3000},
        "peers": [
            {"id": b, "state": "alive", "node_state": "training", "step": 1230,
             "last_seen_ms": 1234, "addr": "tcp://10.0.0.2:7701",
             "sync_addr": "tcp://10.0.0.2:7702", "ledger_updates": 3688,
             "digest": hexid("digest-b"), "lagging": False, "banned": False},
            {"id": c, "state": "suspect", "node_state": "paused", "step": 1226,
             "last_seen_ms": 192500, "addr": "tcp://10.0.0.3:7701",
             "sync_addr": "tcp://10.0.0.3:7702", "ledger_updates": 3600, "digest": None,
             "lagging": True, "banned": False},
            # A hostile peer: an address with a terminal escape sequence.
            {"id": d, "state": "joining", "node_state": "unknown", "step": 0,
             "last_seen_ms": None, "addr": "tcp://10.0.0.4:7701\u001b[2J",
             "sync_addr": "tcp://10.0.0.4:7702", "ledger_updates": 0, "digest": None,
             "lagging": False, "banned": True},
        ],
        "net": {"bytes_out": 123456789, "bytes_in": 98765432, "updates_out": 1234,
                "updates_in": 2456, "msgs_out": 400, "msgs_in": 812,
                "dropped": {"bad_signature": 3, "replay": 0, "wrong_run": 7}},
    }


class FakeDaemon:
    """nngcat answering every request on ipc://path with `data` (None: never answering)."""

    def __init__(self, path, data):
        self.path = path
        args = [NNGCAT, "--rep", "--listen", "ipc://" + path]
        if data is not None:
            args += ["--data", data]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        _fakes.append(self)
        deadline = time.time() + 10
        while not os.path.exists(path) and self.proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # nng binds, then listens: leave it the moment between
        if self.proc.poll() is not None or not os.path.exists(path):
            raise RuntimeError(f"nngcat did not start listening on {path}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test stopped it
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stderr:
            self.proc.stderr.close()


def stop_all():
    for f in _fakes:
        f.stop()
    _fakes.clear()


def expect_fail(args, code, names, what):
    rc, out, err = run(*args)
    ok = check(rc == code, f"{what}: exit {rc} == {code}", err)
    check(err.startswith("swarmctl: "), f"{what}: stderr starts with 'swarmctl: '", err)
    for n in names:
        ok &= check(n in err, f"{what}: stderr names {n!r}", err)
    check(out == "", f"{what}: nothing on stdout", out)
    return err


def test_no_daemon(tmp):
    missing = os.path.join(tmp, "nothing.sock")
    rc, out, err = run("status", "--control", missing)
    check(rc == 1, f"no daemon: exit {rc} == 1", err)
    check(err == "swarmctl: " + NO_DAEMON.format(missing) + "\n",
          "no daemon: the exact message naming the path", err)
    check(out == "", "no daemon: nothing on stdout", out)
    sd = os.path.join(tmp, "nodir")
    expect_fail(["peers", "--state-dir", sd], 1, [NO_DAEMON.format(sd + "/control.sock")],
                "peers --state-dir (no daemon)")


def test_status(tmp):
    obj = status_object()
    st = os.path.join(tmp, "st")
    os.mkdir(st)
    sock = os.path.join(st, "control.sock")
    fake = FakeDaemon(sock, json.dumps(obj, indent=1))  # the client re-serialises compactly

    rc, out, err = run("status", "--json", "--control", sock)
    check(rc == 0, "status --json: exit 0", err)
    check(out.endswith("\n") and out.count("\n") == 1, "status --json: one line", out[:200])
    try:
        got = json.loads(out)
    except ValueError as e:
        got = e
    check(got == obj, "status --json: the daemon's object round-trips", out[:400])
    # key order is the daemon's
    check(list(got) == list(obj) if isinstance(got, dict) else False,
          "status --json: sections keep the daemon's order")

    for sd in (st, st + "/"):
        rc, out2, err = run("status", "--json", "--state-dir", sd)
        check(rc == 0 and out2 == out, f"status --state-dir {sd[len(tmp):]!r} == --control DIR/"
              "control.sock", err)

    rc, text, err = run("status", "--control", sock)
    check(rc == 0, "status: exit 0", err)
    lines = text.splitlines()
    for sec in ("# Node", "# Model", "# Ledger", "# Net", "# Peers"):
        check(sec in lines, f"status: section {sec}", text)
    node, model, train, net = obj["node"], obj["model"], obj["train"], obj["net"]
    expected = [
        "id:" + node["id"][:12],
        "state:training",
        "run:" + node["run_id"][:12],
        f"step:{node['step']}/{node['max_steps']}",
        f"loss:{train['loss']:.4f}",
        f"steps_per_s:{train['steps_per_s']:.2f}",
        "uptime:1h02m03s",  # 3723.4 s
        "digest:" + model["digest"][:12],
        f"digest_updates:{model['digest_updates']}",
        f"updates:{obj['ledger']['updates']}",
        f"checkpoint_updates:{obj['ledger']['checkpoint_updates']}",
        f"bytes_in:{net['bytes_in']}",
        f"bytes_out:{net['bytes_out']}",
        f"updates_in:{net['updates_in']}",
        f"updates_out:{net['updates_out']}",
        f"dropped:{sum(net['dropped'].values())}",
        "dropped_bad_signature:3",
        "dropped_wrong_run:7",
        f"origins:{len(model['version_vector'])}",
    ]
    for e in expected:
        check(e in lines, f"status: line {e!r}", text)
    check("dropped_replay:0" not in text and not any(l.startswith("dropped_replay") for l in lines),
          "status: a zero drop reason is not shown", text)
    for full in [node["id"], node["run_id"]] + [p["id"] for p in obj["peers"]]:
        check(full not in text, f"status: full id {full[:12]}... shown only in short form")
    check("\x1b" not in text, "status: a peer's escape sequence does not reach the terminal")

    def table_checks(text, what):
        lines = text.splitlines()
        hdr = [l for l in lines if l.startswith("ID ")]
        check(len(hdr) == 1 and all(h in hdr[0] for h in ("STATE", "STEP", "LAST SEEN", "ADDRESS")),
              f"{what}: one table header", text)
        seen = {"1234": "1.2s ago", "192500": "3m12s ago", "None": "never"}
        for p in obj["peers"]:
            row = [l for l in lines if l.startswith(p["id"][:12] + " ")]
            if not check(len(row) == 1, f"{what}: one row for peer {p['id'][:12]}", text):
                continue
            cols = row[0].split()
            want = [p["id"][:12], p["state"], p["node_state"], str(p["step"]),
                    str(p["ledger_updates"])]
            check(cols[:5] == want, f"{what}: peer {p['id'][:12]} row starts {want}", row[0])
            ago = seen[str(p["last_seen_ms"])]
            check(ago in row[0], f"{what}: peer {p['id'][:12]} last seen {ago!r}", row[0])
            check(p["addr"][:19] in row[0], f"{what}: peer {p['id'][:12]} address", row[0])
            flags = [f for f in ("lagging", "banned") if p[f]]
            check(all(f in cols for f in flags) and
                  not any(f in row[0] for f in ("lagging", "banned") if not p[f]),
                  f"{what}: peer {p['id'][:12]} flags {flags}", row[0])

    table_checks(text, "status")

    rc, out, err = run("peers", "--json", "--control", sock)
    check(rc == 0, "peers --json: exit 0", err)
    try:
        got = json.loads(out)
    except ValueError as e:
        got = e
    check(got == obj["peers"] and out.count("\n") == 1,
          "peers --json: the daemon's peers array, one line", out[:400])
    rc, text, err = run("peers", "--control", sock)
    check(rc == 0, "peers: exit 0", err)
    check("# Node" not in text and "id:" not in text, "peers: the table only", text)
    check(len(text.splitlines()) == 1 + len(obj["peers"]), "peers: header + one line per peer",
          text)
    table_checks(text, "peers")
    fake.stop()

    # The socket file is left behind by the killed nngcat: still "no daemon".
    check(os.path.exists(sock), "a stale socket file stays after the fake is killed")
    expect_fail(["status", "--state-dir", st], 1, [NO_DAEMON.format(sock)],
                "status on a stale socket file")
    os.unlink(sock)

    # No peers yet: an empty table, said so.
    obj["peers"] = []
    fake = FakeDaemon(sock, json.dumps(obj))
    rc, text, err = run("peers", "--state-dir", st)
    check(rc == 0 and text == "(no peers)\n", "peers with none: '(no peers)'", text + err)
    fake.stop()
    os.unlink(sock)


def test_bad_replies(tmp):
    cases = [
        ("not json", "this is not JSON", ["invalid status", "not JSON"]),
        ("not an object", "[1, 2, 3]", ["invalid status", "not a JSON object"]),
        ("no peers", json.dumps({"node": status_object()["node"]}),
         ["invalid status", '"peers"']),
        ("no node", json.dumps({"peers": []}), ["invalid status", '"node"']),
        ("peers not a list", json.dumps({"node": {}, "peers": {}}),
         ["invalid status", '"peers" is not an array']),
        ("a peer not an object", json.dumps({"node": {}, "peers": [1]}),
         ["invalid status", "peers[0]"]),
        ("daemon error", json.dumps({"error": "unknown command: status"}),
         ["unknown command: status"]),
    ]
    for i, (what, data, names) in enumerate(cases):
        sock = os.path.join(tmp, f"bad{i}.sock")
        fake = FakeDaemon(sock, data)
        for verb in ("status", "peers"):
            expect_fail([verb, "--control", sock], 1, [sock + ": "] + names,
                        f"{verb} with a reply that is {what}")
        rc, out, err = run("status", "--json", "--control", sock)
        check(rc == 1 and out == "", f"status --json with a reply that is {what}: exit 1", err)
        fake.stop()

    # A daemon that never answers: bounded by --timeout-ms.
    sock = os.path.join(tmp, "mute.sock")
    fake = FakeDaemon(sock, None)
    t0 = time.time()
    expect_fail(["status", "--control", sock, "--timeout-ms", "300"], 1,
                [sock + ": ", "within 300 ms"], "status to a daemon that never answers")
    dt = time.time() - t0
    check(dt < 5, f"the timeout is honoured ({dt:.2f} s for 300 ms)")
    fake.stop()

    # A stopped daemon accepts the connection (the kernel does) but never
    # completes nng's handshake, which nng itself would wait 10 s for.
    sock = os.path.join(tmp, "stopped.sock")
    fake = FakeDaemon(sock, json.dumps(status_object()))
    fake.proc.send_signal(signal.SIGSTOP)
    t0 = time.time()
    expect_fail(["status", "--control", sock, "--timeout-ms", "300"], 1,
                [sock + ": ", "within 300 ms"], "status to a stopped daemon")
    dt = time.time() - t0
    check(dt < 5, f"the timeout is honoured while connecting ({dt:.2f} s for 300 ms)")
    fake.stop()


def test_permission(tmp):
    """A 0600 socket of another user: refused by the kernel, said so (needs root to set up)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        print("note  not root (or no setpriv): the permission check is not run")
        return
    os.chmod(tmp, 0o755)
    exe = os.path.join(tmp, "swarmctl")
    shutil.copy(SWARMCTL, exe)
    os.chmod(exe, 0o755)
    sock = os.path.join(tmp, "private.sock")
    fake = FakeDaemon(sock, json.dumps(status_object()))
    os.chmod(sock, 0o600)
    p = subprocess.run([setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", exe,
                        "status", "--control", sock], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=20)
    err = p.stderr.decode("utf-8", "replace")
    check(p.returncode == 1 and f"{sock}: permission denied" in err,
          "status as another user on a 0600 socket: exit 1, 'permission denied' naming it", err)
    fake.stop()


def test_usage(tmp):
    sock = os.path.join(tmp, "x.sock")
    cases = [
        (["status", "--control", sock, "--state-dir", tmp], ["--control"]),
        (["status", "--timeout-ms", "0"], ["--timeout-ms"]),
        (["status", "--timeout-ms", "5s"], ["--timeout-ms"]),
        (["peers", "--bogus"], ["--bogus"]),
        (["status", "extra"], ["extra"]),
        (["status", "--control", ""], ["--control"]),
        (["peers", "--state-dir"], ["--state-dir"]),
        (["status", "--control", "/" + "a" * 200], ["--control", "unix socket"]),
        (["status", "--json=yes"], ["--json"]),
    ]
    for args, names in cases:
        err = expect_fail(args, 2, names, "swarmctl " + " ".join(a[:30] for a in args))
        check("--help" in err, f"swarmctl {' '.join(a[:30] for a in args)}: points at --help", err)
    for verb in ("status", "peers"):
        rc, out, err = run(verb, "--help")
        check(rc == 0 and out.startswith(f"Usage: swarmctl {verb}") and "--state-dir" in out,
              f"{verb} --help: usage on stdout, exit 0", out + err)
    rc, out, err = run("--help")
    check(rc == 0 and "  status " in out and "  peers " in out,
          "swarmctl --help lists status and peers", out)


def main():
    for p in (SWARMCTL, NNGCAT):
        if not os.access(p, os.X_OK):
            print(f"{p}: not found")
            return 1
    t0 = time.time()
    # Unix socket paths are short (108 bytes): keep the temp dir near the root.
    tmp = tempfile.mkdtemp(prefix="sw_st_", dir="/tmp")
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    try:
        test_no_daemon(tmp)
        test_status(tmp)
        test_bad_replies(tmp)
        test_permission(tmp)
        test_usage(tmp)
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"cli_status: {time.time() - t0:.1f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
